# The broker-api image: the HTTP API over the queues, listening on 0.0.0.0:8080, run as an
# unprivileged user. The token comes from BROKER_API_TOKEN (or BROKER_API_TOKEN_FILE); with
# neither, broker-api generates one and prints it once on stderr (`docker logs`).
#
# Built from a context holding the host-built binary (Debian bookworm, same glibc):
#   cargo build --release -p broker-api && scripts/build-image.sh broker-api
FROM debian:bookworm-slim
# The same layer as executant.Dockerfile's (built once): TLS for amqps://.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*
ENV BROKER_API_LISTEN=0.0.0.0:8080
EXPOSE 8080
USER 65534:65534
# No curl in the image: bash's /dev/tcp asks /healthz for its status line.
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=6 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"$status\" = 200 ]"]
COPY broker-api /usr/local/bin/broker-api
ENTRYPOINT ["/usr/local/bin/broker-api"]
