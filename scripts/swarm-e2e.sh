#!/usr/bin/env bash
# End-to-end test of the Docker Swarm stack (dockerfiles/stack.yaml):
#   1. builds the binaries and the images (offline: from debian:bookworm-slim);
#   2. makes this engine a single-node swarm (unless it is in one already, which it then
#      keeps), creates the stack's secrets with random credentials, `docker stack deploy`s
#      the stack as taskplatform-swarm-ci and waits for RabbitMQ;
#   3. scales the executant service to 3 with `docker service scale`, waits for 3 consumers
#      on `todo`, then counts the 12-queens solutions (must be 14200) with commanditaire
#      run in a container attached to the stack's internal network, and checks that more
#      than one executant ran tasks; checks broker-api's published port and tokens;
#   4. removes the stack, its secrets and volume, and leaves the swarm if it made it:
#      always, and prints the timings.
# Exits non-zero with the reason on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

stack=taskplatform-swarm-ci
log() { printf '[swarm-e2e] %s\n' "$*" >&2; }
die() { printf '[swarm-e2e] FAILED: %s\n' "$*" >&2; exit 1; }

start=$(date +%s)
phase_start=$start
timings=()
phase_done() {
  local now
  now=$(date +%s)
  timings+=("$(printf '%-30s %4ss' "$1" $((now - phase_start)))")
  phase_start=$now
}
if ! command -v curl >/dev/null; then
  log "installing curl"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
fi

# The first free port from $1 on.
free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
random() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

secrets=(amqp_user amqp_password amqp_url api_read_token api_token api_admin_token)
tmp=$(mktemp -d /tmp/swarm-e2e.XXXXXX)
made_swarm=0
cleanup() {
  local rc=$?
  trap - EXIT
  if [ "$rc" != 0 ]; then
    local s
    for s in rabbitmq broker-api executant; do
      log "the last logs of ${stack}_$s:"
      docker service logs --no-task-ids --tail 20 "${stack}_$s" >&2 2>&1 || true
    done
  fi
  # The executants' names, to remove task containers one of them might have left.
  local names
  names=$(docker ps -aq --filter "label=com.docker.swarm.service.name=${stack}_executant" 2>/dev/null || true)
  docker stack rm "$stack" >/dev/null 2>&1 || true
  # `stack rm` returns at once: wait for the containers and networks to go.
  for _ in $(seq 90); do
    [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$stack")" ] \
      && [ -z "$(docker network ls -q --filter "label=com.docker.stack.namespace=$stack")" ] && break
    sleep 1
  done
  local c owner id
  for c in $(docker ps -aq --filter label=taskplatform.executant 2>/dev/null); do
    owner=$(docker inspect -f '{{index .Config.Labels "taskplatform.executant"}}' "$c" 2>/dev/null || true)
    for id in $names; do
      if [[ "$owner" == "${id:0:12}"-* ]]; then docker rm -f "$c" >/dev/null 2>&1 || true; fi
    done
  done
  for s in "${secrets[@]}"; do docker secret rm "taskplatform_$s" >/dev/null 2>&1 || true; done
  docker volume rm "${stack}_rabbitmq-data" >/dev/null 2>&1 || true
  if [ "$made_swarm" = 1 ]; then
    docker swarm leave --force >/dev/null 2>&1 || log "warning: docker swarm leave failed"
    # The bridge swarm made for published ports outlives the swarm.
    docker network rm docker_gwbridge >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  phase_done "teardown (stack rm, leave)"
  printf '[swarm-e2e] timings:\n' >&2
  printf '  %s\n' "${timings[@]}" >&2
  printf '  %-30s %4ss\n' total $(($(date +%s) - start)) >&2
  if [ "$rc" = 0 ]; then log "OK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. binaries and images
scripts/services.sh docker base-image
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

# --- 2. the swarm, the secrets, the stack
case "$(docker info --format '{{.Swarm.LocalNodeState}}')" in
  inactive)
    log "docker swarm init (a single-node swarm, left at the end)"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null || die "docker swarm init failed"
    made_swarm=1
    ;;
  active) log "this engine is in a swarm already: using it, and not leaving it" ;;
  *) die "the engine's swarm state is $(docker info --format '{{.Swarm.LocalNodeState}}')" ;;
esac
docker stack rm "$stack" >/dev/null 2>&1 || true # a previous run's leftovers
for s in "${secrets[@]}"; do docker secret rm "taskplatform_$s" >/dev/null 2>&1 || true; done
amqp_user=taskplatform
amqp_password=$(random 12)
amqp_url="amqp://$amqp_user:$amqp_password@rabbitmq:5672/%2f"
read_token=$(random 24)
user_token=$(random 24)
admin_token=$(random 24)
# Values on stdin, never on a command line (ps shows those).
new_secret() { printf '%s' "$2" | docker secret create "taskplatform_$1" - >/dev/null || die "docker secret create $1"; }
new_secret amqp_user "$amqp_user"
new_secret amqp_password "$amqp_password"
new_secret amqp_url "$amqp_url"
new_secret api_read_token "$read_token"
new_secret api_token "$user_token"
new_secret api_admin_token "$admin_token"
export TASKPLATFORM_SCRIPTS_DIR=$tmp/scripts
mkdir -p "$TASKPLATFORM_SCRIPTS_DIR"
BROKER_API_PORT=$(free_port 8090)
export BROKER_API_PORT EXECUTANT_REPLICAS=1
log "docker stack deploy $stack (broker-api on port $BROKER_API_PORT)"
out=$(docker stack deploy -c dockerfiles/stack.yaml "$stack" 2>&1) || die "stack deploy failed: $out"

# The running container of service $1 (one replica), waiting at most $2 seconds.
service_container() {
  local id
  for _ in $(seq "$2"); do
    id=$(docker ps -q --filter "label=com.docker.swarm.service.name=${stack}_$1" --filter status=running | head -1)
    [ -n "$id" ] && { echo "$id"; return; }
    sleep 1
  done
  die "no running container of ${stack}_$1 after $2 s"
}
rabbitmq_id=$(service_container rabbitmq 120)
for _ in $(seq 120); do
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$rabbitmq_id")" = healthy ] && break
  sleep 1
done
[ "$(docker inspect -f '{{.State.Health.Status}}' "$rabbitmq_id")" = healthy ] \
  || die "rabbitmq not healthy after 120 s"
phase_done "stack deployed, rabbitmq up"

# --- 3. three executants, a project
log "docker service scale ${stack}_executant=3"
docker service scale -d "${stack}_executant=3" >/dev/null || die "docker service scale failed"
consumers=
for _ in $(seq 90); do
  consumers=$(docker exec "$rabbitmq_id" rabbitmqctl -q list_queues name consumers 2>/dev/null \
    | awk '$1 == "todo" { print $2 }')
  [ "$consumers" = 3 ] && break
  sleep 2
done
[ "$consumers" = 3 ] || die "expected 3 consumers on todo, got '$consumers'"
running=$(docker service ls --filter "name=${stack}_executant" --format '{{.Replicas}}')
[ "$running" = 3/3 ] || die "expected 3/3 executant replicas, got $running"
phase_done "scaled to 3 executants"

ws=$tmp/workspace
mkdir -p "$ws"
log "commanditaire nqueens 12 --depth 3 (in a container on ${stack}_broker)"
# The URL carries a password: it goes through the environment, not the command line.
out=$(AMQP_URL=$amqp_url timeout 600 docker run --rm --network "${stack}_broker" -e AMQP_URL \
  -v "$target_dir/$profile/commanditaire:/usr/local/bin/commanditaire:ro" -v "$ws:$ws" \
  --entrypoint /usr/local/bin/commanditaire taskplatform/executant:latest \
  --workspace "$ws" --json nqueens 12 --depth 3) \
  || die "commanditaire nqueens 12 failed (exit $?): $out"
[[ "$out" == *'"complete":true'* && "$out" == *'"solutions":14200,'* ]] \
  || die "nqueens 12: expected 14200 solutions, got: $out"
log "nqueens 12 = 14200"
# Which executants ran tasks: their logs name each task they ran.
busy=0
for id in $(docker ps -q --filter "label=com.docker.swarm.service.name=${stack}_executant"); do
  # Not `grep -q`: it stops reading, and `docker logs` dying of SIGPIPE fails the pipeline.
  done_here=$(docker logs "$id" 2>&1 | grep -c 'task done' || true)
  log "executant ${id:0:12}: $done_here tasks done"
  if [ "$done_here" -gt 0 ]; then busy=$((busy + 1)); fi
done
log "executants that ran tasks: $busy of 3"
[ "$busy" -ge 2 ] || die "the tasks did not spread: $busy executant(s) of 3 ran any"
phase_done "nqueens 12 (3 executants)"

log "broker-api on the published port"
api=http://127.0.0.1:$BROKER_API_PORT
code=
for _ in $(seq 60); do
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$api/readyz" || true)
  [ "$code" = 200 ] && break
  sleep 1
done
[ "$code" = 200 ] || die "broker-api /readyz: $code"
code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$api/api/queues")
[ "$code" = 401 ] || die "broker-api /api/queues without a token should be 401, got $code"
body=$(curl -s -m 10 -H "Authorization: Bearer $read_token" "$api/api/queues")
[[ "$body" == *'"name":"todo"'* ]] || die "broker-api /api/queues with the read token: $body"
phase_done "broker-api"
