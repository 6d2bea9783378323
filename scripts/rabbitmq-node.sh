#!/usr/bin/env bash
# An extra RabbitMQ node of its own on this machine, for tests that need broker settings the
# shared node must not have (a low consumer_timeout, say). It never touches another node.
#
#   scripts/rabbitmq-node.sh start NAME PORT [CONF-LINE...]   # fresh node, waits until it is up
#   scripts/rabbitmq-node.sh stop NAME PORT
#
# Each CONF-LINE is one line of its rabbitmq.conf (e.g. 'consumer_timeout = 20000'). The node
# is NAME@<short hostname>, listens for AMQP on 127.0.0.1:PORT (guest/guest, vhost /), uses
# PORT+20000 for Erlang distribution, no plugins, and keeps everything under
# ${RABBITMQ_NODES_DIR:-/tmp/rabbitmq-nodes}/NAME (wiped at each start). Debian's server runs
# as the `rabbitmq` user, so that folder belongs to it. Needs root (or the rabbitmq user).
# RABBITMQ_NODE_ADVANCED_CONFIG, if set, is its advanced.config (Erlang terms), for settings
# rabbitmq.conf lacks: e.g. '[{rabbit, [{channel_tick_interval, 1000}]}].' makes a channel
# check its consumer_timeout every second instead of every minute.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop NAME PORT [CONF-LINE...]" >&2
  exit 2
}
[ $# -ge 3 ] || usage
action=$1 name=$2 port=$3
shift 3
case "$port" in '' | *[!0-9]*) usage ;; esac

base="${RABBITMQ_NODES_DIR:-/tmp/rabbitmq-nodes}/$name"
node="$name@$(hostname -s)"

export RABBITMQ_NODENAME="$node"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$port"
export RABBITMQ_DIST_PORT=$((port + 20000))
export RABBITMQ_MNESIA_BASE="$base/mnesia"
export RABBITMQ_LOG_BASE="$base/log"
export RABBITMQ_PID_FILE="$base/rabbitmq.pid"
export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
export RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
export RABBITMQ_ADVANCED_CONFIG_FILE="$base/advanced.config"
export RABBITMQ_CONF_ENV_FILE="$base/rabbitmq-env.conf"

as_rabbitmq() {
  if [ "$(id -u)" = "$(id -u rabbitmq)" ]; then
    "$@"
  else
    runuser -u rabbitmq -- "$@"
  fi
}

ctl() {
  # rabbitmqctl talks to the node over distribution; the node's cookie is the rabbitmq user's.
  as_rabbitmq env HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmqctl -n "$node" "$@"
}

stop_node() {
  if ctl status >/dev/null 2>&1; then
    ctl stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true
  fi
}

case "$action" in
  start)
    stop_node
    rm -rf "$base"
    mkdir -p "$base/mnesia" "$base/log"
    : >"$base/rabbitmq.conf"
    for line in "$@"; do
      printf '%s\n' "$line" >>"$base/rabbitmq.conf"
    done
    echo '[].' >"$base/enabled_plugins"
    printf '%s\n' "${RABBITMQ_NODE_ADVANCED_CONFIG:-[].}" >"$base/advanced.config"
    : >"$base/rabbitmq-env.conf"
    chown -R rabbitmq:rabbitmq "$base"
    as_rabbitmq env HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server -detached \
      >"$base/log/startup.out" 2>&1
    if ! ctl wait --timeout 60 "$RABBITMQ_PID_FILE" >/dev/null 2>&1; then
      echo "$0: node $node did not start; see $base/log" >&2
      exit 1
    fi
    echo "$node amqp://guest:guest@127.0.0.1:$port/%2f"
    ;;
  stop)
    stop_node
    ;;
  *) usage ;;
esac
