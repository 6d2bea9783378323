#!/usr/bin/env bash
# The main job: sets up what is missing (RabbitMQ, the offline base image, the worker image),
# starts an executant, counts the N-queens solutions through the broker and sandboxed
# containers, prints the exact count, and stops the executant.
#
#   scripts/run.sh [N] [extra commanditaire flags...]     (default N = 14)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
n=${1:-14}
shift || true

scripts/services.sh docker rabbitmq base-image >&2
echo "[run] building the release binaries" >&2
cargo build --release -q -p worker -p executant -p commanditaire
target_dir=${CARGO_TARGET_DIR:-$root/target}
scripts/build-image.sh worker

log=$(mktemp /tmp/executant.XXXXXX.log)
# Short tasks: let one worker container serve many tasks of the project, and keep enough
# of them in flight (prefetch) for the worker lanes to batch them. N=16 here: 3.1 s this
# way, 5.6 s with --reuse 64 and the default concurrency (2, the cores).
# Task scripts (code on demand) only from this checkout's default workspace, where the
# client commits them (`script.repo` is that workspace's tasks repository).
"$target_dir/release/executant" --reuse 256 --concurrency 32 \
  --allow-script-repo "$root/workspace/tasks" >"$log" 2>&1 &
executant_pid=$!
stop_executant() {
  kill -TERM "$executant_pid" 2>/dev/null || true
  wait "$executant_pid" 2>/dev/null || true
}
trap stop_executant EXIT

echo "[run] executant started (log: $log); running the ${n}-queens project" >&2
"$target_dir/release/commanditaire" nqueens "$n" "$@"
