#!/usr/bin/env bash
# What a 3-node RabbitMQ cluster costs, against one node, in one run: trivial-task throughput
# and an N-queens wall time, with 1 and with 3 executants, on each broker; printed as a
# table on stdout (progress on stderr). Not part of the test command.
#
#   scripts/bench-cluster.sh              # N=16
#   BENCH_N=14 scripts/bench-cluster.sh   # a smaller board (a loaded machine)
#
# Trivial tasks: `nqueens 10 --depth 6`, 2,045 tasks of a few microseconds of work each, so
# their rate is the platform's own (publish, deliver, run in a reused container, publish the
# result, track), not the work's. Wall time: the client's whole run (record, publish,
# follow, reassemble), the count checked against the known one.
#
# One node: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f). The cluster: 3 nodes of
# scripts/rabbitmq-cluster.sh named bench-1..3 on 127.0.0.1:5741-5743 (not the tests'),
# started here and stopped at the end; every binary is given the three URLs (so results
# queues are quorum queues there, classic on one node). Executants run as in scripts/run.sh
# (--reuse 256 --concurrency 32). Binaries from BENCH_BIN_DIR (default target/release,
# built if missing). Needs root (the cluster), Docker and the worker image.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { printf '[bench-cluster] %s\n' "$*" >&2; }
die() { printf '[bench-cluster] error: %s\n' "$*" >&2; exit 1; }

n=${BENCH_N:-16}
case "$n" in '' | *[!0-9]*) die "BENCH_N must be a board size (8-17)" ;; esac
[ "$n" -ge 8 ] && [ "$n" -le 17 ] || die "BENCH_N must be a board size (8-17)"
single=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
case "$single" in *,*) die "AMQP_URL must be one node here (the script starts the cluster)" ;; esac
bin=${BENCH_BIN_DIR:-$root/target/release}
if [ ! -x "$bin/executant" ] || [ ! -x "$bin/commanditaire" ]; then
  [ -z "${BENCH_BIN_DIR:-}" ] || die "no executant and commanditaire in $bin"
  log "building the release binaries"
  cargo build --release -q -p executant -p commanditaire
fi
command -v python3 >/dev/null || die "python3 is needed to read the client's JSON"

export RABBITMQ_CLUSTER_NAME=bench RABBITMQ_CLUSTER_PORT_BASE=5740
work=$(mktemp -d /tmp/bench-cluster.XXXXXX)
pids=()
stop_executants() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_executants
  scripts/rabbitmq-cluster.sh stop 3 >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

log "starting the 3-node cluster"
cluster=$(scripts/rabbitmq-cluster.sh start 3)

# Starts $2 executants on broker $1 and waits until each consumes todo.
start_executants() {
  local url=$1 count=$2 i
  for i in $(seq "$count"); do
    AMQP_URL=$url "$bin/executant" --name "bench-$$-$i" --reuse 256 --concurrency 32 \
      >"$work/executant-$i.log" 2>&1 &
    pids+=("$!")
  done
  for i in $(seq "$count"); do
    for _ in $(seq 120); do
      grep -q "consuming todo" "$work/executant-$i.log" && break
      sleep 0.5
    done
    grep -q "consuming todo" "$work/executant-$i.log" || die "executant $i does not consume; see $work/executant-$i.log"
  done
}

# Runs `commanditaire ARGS` on broker $1 in a fresh workspace; prints "seconds tasks solutions".
project() {
  local url=$1 ws start end out
  shift
  ws=$(mktemp -d "$work/ws.XXXXXX")
  start=$(date +%s.%N)
  out=$(AMQP_URL=$url "$bin/commanditaire" --workspace "$ws" --json "$@" 2>"$ws.err") \
    || die "commanditaire $* failed: $(tail -n 3 "$ws.err")"
  end=$(date +%s.%N)
  printf '%s' "$out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
wall = float(sys.argv[2]) - float(sys.argv[1])
print("%.1f %s %s" % (wall, r["tasks"], r["solutions"]))
' "$start" "$end"
}

rows=()
for broker in one-node cluster; do
  url=$single
  [ "$broker" = cluster ] && url=$cluster
  for executants in 1 3; do
    log "$broker, $executants executant(s)"
    start_executants "$url" "$executants"
    read -r t_wall t_tasks _ < <(project "$url" nqueens 10 --depth 6 --id "bench-trivial-$broker-$executants-$$")
    read -r q_wall _ q_solutions < <(project "$url" nqueens "$n" --id "bench-n$n-$broker-$executants-$$")
    stop_executants
    rate=$(python3 -c "print(f'{$t_tasks / $t_wall:.0f}')")
    rows+=("$(printf '%-9s %10s %14s %10s %8s %12s %12s' "$broker" "$executants" "$t_tasks" "$t_wall" "$rate" "$q_wall" "$q_solutions")")
  done
done

printf '%-9s %10s %14s %10s %8s %12s %12s\n' broker executants "trivial tasks" "wall s" "tasks/s" "N=$n wall s" solutions
printf '%s\n' "${rows[@]}"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
