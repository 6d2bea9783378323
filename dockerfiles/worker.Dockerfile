# The worker image: the `worker` binary on Debian bookworm, run as an unprivileged user.
#
# Built from a context holding the host-built binary (Debian bookworm, same glibc):
#   cargo build --release -p worker && scripts/build-image.sh worker
# or by hand:
#   docker build -f dockerfiles/worker.Dockerfile -t taskplatform/worker target/release
FROM debian:bookworm-slim
COPY worker /usr/local/bin/worker
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/worker"]
CMD ["serve"]
