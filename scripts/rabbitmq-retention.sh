#!/usr/bin/env bash
# Sets the platform's retention on one RabbitMQ vhost, as two policies (idempotent: a second
# run replaces them with the new values):
#   platform-results-expire  on `^results\.`  : a results queue nobody consumes, gets from or
#                                               declares for that long is deleted (`expires`);
#   platform-dead-ttl        on `^todo\.dead$`: a dead-lettered task is kept that long
#                                               (`message-ttl`), then dropped.
# Policies, not queue arguments: they apply to queues that already exist, and a queue
# declared again with different arguments would be refused (PRECONDITION_FAILED).
#
#   scripts/rabbitmq-retention.sh [--vhost V] [--results-expire-ms MS] [--dead-ttl-ms MS]
#
# Defaults: vhost `/`, results queues 7 days unused, dead-lettered tasks 14 days; also from
# RETENTION_VHOST, RESULTS_EXPIRE_MS, DEAD_TTL_MS. Runs `rabbitmqctl` (on the broker's host or
# with its Erlang cookie).
set -euo pipefail

die() { printf 'rabbitmq-retention: error: %s\n' "$*" >&2; exit 2; }

vhost=${RETENTION_VHOST:-/}
results_ms=${RESULTS_EXPIRE_MS:-604800000}
dead_ms=${DEAD_TTL_MS:-1209600000}
while [ $# -gt 0 ]; do
  case "$1" in
    --vhost) vhost=${2:?--vhost needs a value}; shift 2 ;;
    --results-expire-ms) results_ms=${2:?--results-expire-ms needs a value}; shift 2 ;;
    --dead-ttl-ms) dead_ms=${2:?--dead-ttl-ms needs a value}; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
for v in "$results_ms" "$dead_ms"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "a retention must be a whole number of milliseconds, at least 1 (got '$v')"
done

rabbitmqctl -q set_policy -p "$vhost" --apply-to queues \
  platform-results-expire '^results\.' "{\"expires\": $results_ms}"
rabbitmqctl -q set_policy -p "$vhost" --apply-to queues \
  platform-dead-ttl '^todo\.dead$' "{\"message-ttl\": $dead_ms}"
printf 'rabbitmq-retention: vhost %s: results queues expire after %s ms unused, todo.dead keeps entries %s ms\n' \
  "$vhost" "$results_ms" "$dead_ms" >&2
