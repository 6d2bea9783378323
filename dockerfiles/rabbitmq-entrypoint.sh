#!/bin/sh
# The broker image's entrypoint: writes the default user into RabbitMQ's configuration (it is
# created on the first start, when the data folder is empty), then runs the server in the
# foreground as the current user (the image's user: rabbitmq).
#   RABBITMQ_DEFAULT_USER (default guest), RABBITMQ_DEFAULT_PASS (default guest), or
#   RABBITMQ_DEFAULT_USER_FILE, RABBITMQ_DEFAULT_PASS_FILE: files holding them (Docker or
#   Kubernetes secrets), so the password is not in the container's environment.
set -eu
umask 077
# The value of variable $1, or the content of the file named by ${1}_FILE, or $2.
setting() {
  eval "value=\${$1:-}; file=\${$1_FILE:-}"
  if [ -n "$value" ] && [ -n "$file" ]; then
    echo "rabbitmq-entrypoint: set $1 or $1_FILE, not both" >&2
    exit 2
  fi
  if [ -n "$file" ]; then
    [ -r "$file" ] || { echo "rabbitmq-entrypoint: $1_FILE: cannot read $file" >&2; exit 2; }
    value=$(cat "$file")
  fi
  printf '%s' "${value:-$2}"
}
user=$(setting RABBITMQ_DEFAULT_USER guest)
pass=$(setting RABBITMQ_DEFAULT_PASS guest)
printf 'default_user = %s\ndefault_pass = %s\n' "$user" "$pass" \
  >/etc/rabbitmq/conf.d/50-default-user.conf
# Not /usr/sbin/rabbitmq-server: Debian's wrapper sends the logs to files, not to stdout.
exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
