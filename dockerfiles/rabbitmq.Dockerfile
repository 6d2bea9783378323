# The broker image: RabbitMQ from Debian's packages (3.10 on bookworm), with the management
# plugin, listening on all interfaces, run in the foreground as the rabbitmq user.
#
# Built from a context holding rabbitmq-entrypoint.sh (scripts/build-image.sh rabbitmq does it):
#   docker build -f dockerfiles/rabbitmq.Dockerfile -t taskplatform/rabbitmq dockerfiles
#
# Login from other containers: RabbitMQ lets `guest` log in from loopback only by default.
# Here `loopback_users = none` lifts that, and the default user created on the first start
# (empty data folder) is RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS (default guest/guest),
# written to the configuration by the entrypoint. Publish its ports on 127.0.0.1 only, or
# set a real password.
FROM debian:bookworm-slim
# policy-rc.d: the package must not try to start the service while the image is built.
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && rabbitmq-plugins --offline enable rabbitmq_management \
 && printf '%s\n' \
      'listeners.tcp.default = 5672' \
      'management.tcp.port = 15672' \
      'loopback_users = none' \
      'log.console = true' \
      'log.console.level = info' \
      'log.file = false' \
      >/etc/rabbitmq/rabbitmq.conf \
 && mkdir -p /etc/rabbitmq/conf.d \
 && rm -f /var/lib/rabbitmq/.erlang.cookie \
 && chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
COPY rabbitmq-entrypoint.sh /usr/local/bin/rabbitmq-entrypoint
# A fixed node name (not the container's hostname): the data folder is named after it, so the
# volume stays usable when the container is recreated.
ENV RABBITMQ_NODENAME=rabbit@localhost
USER rabbitmq
VOLUME /var/lib/rabbitmq
EXPOSE 5672 15672
# Not `ping`: it answers ~10 s before the AMQP listener accepts connections.
HEALTHCHECK --interval=5s --timeout=10s --start-period=60s --retries=6 \
  CMD ["rabbitmq-diagnostics", "-q", "check_port_connectivity"]
ENTRYPOINT ["/usr/local/bin/rabbitmq-entrypoint"]
