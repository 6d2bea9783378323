#!/bin/sh
# The broker image's entrypoint: writes the default user into RabbitMQ's configuration (it is
# created on the first start, when the data folder is empty), then runs the server in the
# foreground as the current user (the image's user: rabbitmq).
#   RABBITMQ_DEFAULT_USER (default guest), RABBITMQ_DEFAULT_PASS (default guest)
set -eu
umask 077
printf 'default_user = %s\ndefault_pass = %s\n' \
  "${RABBITMQ_DEFAULT_USER:-guest}" "${RABBITMQ_DEFAULT_PASS:-guest}" \
  >/etc/rabbitmq/conf.d/50-default-user.conf
# Not /usr/sbin/rabbitmq-server: Debian's wrapper sends the logs to files, not to stdout.
exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
