# The executant image: the `executant` daemon on Debian bookworm.
#
# Built from a context holding the host-built binary (Debian bookworm, same glibc):
#   cargo build --release -p executant && scripts/build-image.sh executant
#
# It talks to the Docker engine through the socket mounted at /var/run/docker.sock and runs
# as root to use it (access to that socket is root on the host anyway). Task containers are
# created by the host's engine, so:
#   - the worker image (taskplatform/worker:latest) must exist on the host's engine;
#   - task scripts are bind-mounted by host path: EXECUTANT_SCRIPTS_DIR must be mounted at
#     the same path on the host (dockerfiles/compose.yaml does it).
FROM debian:bookworm-slim
# The same layer as broker-api.Dockerfile's (built once): TLS for amqps:// and https remotes.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*
ENV EXECUTANT_SCRIPTS_DIR=/var/lib/taskplatform/scripts
COPY executant /usr/local/bin/executant
ENTRYPOINT ["/usr/local/bin/executant"]
