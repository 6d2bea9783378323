#!/usr/bin/env bash
# End-to-end test of the compose stack (dockerfiles/compose.yaml), from the host:
#   1. builds the release binaries and the images (offline: from debian:bookworm-slim);
#   2. brings the stack up as project taskplatform-ci (RabbitMQ on 127.0.0.1:5673, or the
#      next free port), waits for RabbitMQ to be healthy;
#   3. counts the 12-queens solutions with the host's commanditaire against the stack's
#      broker (must be 14200), runs an `exec --script` task (code on demand through the
#      executant's scripts folder), checks broker-api (health, token, queues);
#   4. scales to 3 executants, checks 3 run and consume `todo`, runs a project again;
#   5. tears the stack down (`down -v`), always, and prints the timings.
# Exits non-zero with the reason on any failure. Idempotent; fast when the images exist.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

project=taskplatform-ci
log() { printf '[compose-e2e] %s\n' "$*" >&2; }
die() { printf '[compose-e2e] FAILED: %s\n' "$*" >&2; exit 1; }

start=$(date +%s)
phase_start=$start
timings=()
phase_done() {
  local now
  now=$(date +%s)
  timings+=("$(printf '%-28s %4ss' "$1" $((now - phase_start)))")
  phase_start=$now
}

# --- the compose command: v2 plugin, else v1, else Debian's docker-compose package
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  log "installing docker-compose (Debian package)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  compose=(docker-compose)
fi
if ! command -v curl >/dev/null; then
  log "installing curl"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
fi
compose+=(-f "$root/dockerfiles/compose.yaml" -p "$project")

# --- settings of the stack (read by compose.yaml)
# The first free port from $1 on (the host's own RabbitMQ holds 5672/15672).
free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
tmp=$(mktemp -d /tmp/compose-e2e.XXXXXX)
export TASKPLATFORM_SCRIPTS_DIR=$tmp/scripts
export TASKPLATFORM_WORKSPACE=$tmp/workspace
mkdir -p "$TASKPLATFORM_SCRIPTS_DIR" "$TASKPLATFORM_WORKSPACE"
export AMQP_USER=taskplatform
AMQP_PASSWORD=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
BROKER_API_READ_TOKEN=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
BROKER_API_TOKEN=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
BROKER_API_ADMIN_TOKEN=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
export AMQP_PASSWORD BROKER_API_READ_TOKEN BROKER_API_TOKEN BROKER_API_ADMIN_TOKEN
# Short tasks: one worker container serves several tasks of a project.
export EXECUTANT_REUSE=16

executant_names=()
cleanup() {
  local rc=$?
  trap - EXIT
  if [ "$rc" != 0 ]; then
    log "the stack's last logs:"
    "${compose[@]}" logs --no-color --tail 30 >&2 2>&1 || true
  fi
  # Record the executants' names (hostname = short container id) to find their task
  # containers should one of them not have removed its own.
  local id
  for id in $("${compose[@]}" ps -q executant 2>/dev/null); do executant_names+=("${id:0:12}"); done
  "${compose[@]}" down -v --remove-orphans -t 45 >/dev/null 2>&1 \
    || log "warning: compose down failed"
  local c owner
  for c in $(docker ps -aq --filter label=taskplatform.executant 2>/dev/null); do
    owner=$(docker inspect -f '{{index .Config.Labels "taskplatform.executant"}}' "$c" 2>/dev/null || true)
    for id in ${executant_names[@]+"${executant_names[@]}"}; do
      if [[ "$owner" == "$id"-* ]]; then docker rm -f "$c" >/dev/null 2>&1 || true; fi
    done
  done
  rm -rf "$tmp"
  phase_done "teardown (down -v)"
  printf '[compose-e2e] timings:\n' >&2
  printf '  %s\n' "${timings[@]}" >&2
  printf '  %-28s %4ss\n' total $(($(date +%s) - start)) >&2
  if [ "$rc" = 0 ]; then log "OK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. binaries and images
scripts/services.sh docker base-image
# BUILD_PROFILE=debug (the test command) reuses the debug binaries it has just built.
profile=${BUILD_PROFILE:-release}
export BUILD_PROFILE=$profile
target_dir=${CARGO_TARGET_DIR:-$root/target}
log "cargo build --profile $profile (worker executant commanditaire broker-api)"
cargo build --profile "$(if [ "$profile" = debug ]; then echo dev; else echo "$profile"; fi)" -q \
  -p worker -p executant -p commanditaire -p broker-api \
  || die "the $profile build failed"
phase_done "$profile build"
for image in worker executant broker-api rabbitmq; do
  scripts/build-image.sh "$image" || die "building taskplatform/$image failed"
done
phase_done "images"

# --- 2. the stack
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true # a previous run's leftovers
RABBITMQ_PORT=$(free_port 5673)
RABBITMQ_MANAGEMENT_PORT=$(free_port 15673)
BROKER_API_PORT=$(free_port 8080)
export RABBITMQ_PORT RABBITMQ_MANAGEMENT_PORT BROKER_API_PORT
log "compose up (AMQP on 127.0.0.1:$RABBITMQ_PORT, broker-api on 127.0.0.1:$BROKER_API_PORT)"
out=$("${compose[@]}" up -d 2>&1) || die "compose up failed: $out"

# Waits until service $1's container reports healthy (at most $2 seconds).
wait_healthy() {
  local id status
  id=$("${compose[@]}" ps -q "$1")
  [ -n "$id" ] || die "no $1 container"
  for _ in $(seq "$2"); do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$id")
    [ "$status" = healthy ] && return
    [ "$status" = unhealthy ] && die "$1 is unhealthy"
    sleep 1
  done
  die "$1 not healthy after $2 s (status: $status)"
}
wait_healthy rabbitmq 120
phase_done "stack up, rabbitmq healthy"

# --- 3. projects through the stack's broker
amqp_url="amqp://$AMQP_USER:$AMQP_PASSWORD@127.0.0.1:$RABBITMQ_PORT/%2f"
# The URL carries a password: pass it in the environment, not on a command line (ps shows those).
client() { AMQP_URL=$amqp_url timeout 300 "$target_dir/$profile/commanditaire" "$@"; }
log "commanditaire nqueens 12 --depth 2"
out=$(client --workspace "$(mktemp -d "$tmp/ws.XXXXXX")" --json nqueens 12 --depth 2) \
  || die "commanditaire nqueens 12 failed (exit $?): $out"
[[ "$out" == *'"complete":true'* && "$out" == *'"solutions":14200,'* ]] \
  || die "nqueens 12: expected 14200 solutions, got: $out"
log "nqueens 12 = 14200"
phase_done "nqueens 12 (1 executant)"

# Code on demand: the script is committed to the tasks repository (mounted in the executant
# at the same path), fetched at its commit, written to the scripts folder and mounted in
# the task's container by its host path.
# shellcheck disable=SC2016 # $1 is for the script, not for this shell
printf '#!/bin/sh\necho "task $1 ran the script"\n' >"$tmp/script.sh"
log "commanditaire exec --script"
out=$(client --workspace "$TASKPLATFORM_WORKSPACE" --json exec --count 2 --script "$tmp/script.sh" \
  -- sh '{script}' '{index}') || die "commanditaire exec --script failed (exit $?): $out"
[[ "$out" == *'"outputs":["task 0 ran the script\n","task 1 ran the script\n"]'* ]] \
  || die "exec --script: unexpected result: $out"
phase_done "exec --script"

log "broker-api checks"
wait_healthy broker-api 60
api=http://127.0.0.1:$BROKER_API_PORT
# GET $1 with an optional bearer token $2 -> the body, a newline, the status code;
# HTTP_METHOD sends another method.
http_get() {
  local auth=()
  [ -z "${2:-}" ] || auth=(-H "Authorization: Bearer $2")
  curl -s -m 10 -X "${HTTP_METHOD:-GET}" -w '\n%{http_code}' ${auth[@]+"${auth[@]}"} "$1" || true
}
out=$(http_get "$api/readyz")
[ "${out##*$'\n'}" = 200 ] || die "broker-api /readyz: $out"
out=$(http_get "$api/api/queues")
[ "${out##*$'\n'}" = 401 ] || die "broker-api /api/queues without a token should be 401: $out"
out=$(http_get "$api/api/queues" "$BROKER_API_READ_TOKEN")
[[ "${out##*$'\n'}" = 200 && "$out" == *'"name":"todo"'* ]] \
  || die "broker-api /api/queues with the read token: $out"
# Only the admin token may change the platform's queues: the user token gets 403.
out=$(HTTP_METHOD=DELETE http_get "$api/api/queues/todo?force=true" "$BROKER_API_TOKEN")
[ "${out##*$'\n'}" = 403 ] || die "broker-api: the user token deleting todo should be 403: $out"
phase_done "broker-api"

# --- 4. three executants
log "compose up --scale executant=3"
out=$("${compose[@]}" up -d --scale executant=3 2>&1) \
  || die "compose up --scale executant=3 failed: $out"
ids=$("${compose[@]}" ps -q executant)
[ "$(wc -w <<<"$ids")" = 3 ] || die "expected 3 executant containers, got: $ids"
for id in $ids; do
  [ "$(docker inspect -f '{{.State.Running}}' "$id")" = true ] || die "executant $id is not running"
done
rabbitmq_id=$("${compose[@]}" ps -q rabbitmq)
consumers=
for _ in $(seq 30); do
  consumers=$(docker exec "$rabbitmq_id" rabbitmqctl -q list_queues name consumers 2>/dev/null \
    | awk '$1 == "todo" { print $2 }')
  [ "$consumers" = 3 ] && break
  sleep 2
done
[ "$consumers" = 3 ] || die "expected 3 consumers on todo, got '$consumers'"
log "3 executants consume todo"
out=$(client --workspace "$(mktemp -d "$tmp/ws.XXXXXX")" --json nqueens 10 --depth 2) \
  || die "commanditaire nqueens 10 failed (exit $?): $out"
[[ "$out" == *'"complete":true'* && "$out" == *'"solutions":724,'* ]] \
  || die "nqueens 10: expected 724 solutions, got: $out"
phase_done "scale to 3, nqueens 10"
