#!/usr/bin/env bash
# N extra Docker engines on this machine, each standing in for another host, so that several
# executants can each have "their own" engine. They never touch the host's engine (its
# socket, data, containers and containerd namespace stay as they are).
#
#   scripts/docker-engines.sh start N     # starts engines 1..N (reuses the running ones)
#   scripts/docker-engines.sh status [N]  # each engine's state
#   scripts/docker-engines.sh stop [N]    # stops every engine started here (their containers die)
#
# `start` prints each engine's DOCKER_HOST on stdout, one a line (progress goes to stderr):
#   unix:///run/docker-engine-1.sock
# so `DOCKER_HOST=$(scripts/docker-engines.sh start 2 | sed -n 1p) executant ...` works.
#
# Engine K runs `dockerd`, in a network namespace of its own (see start_engine: with
# --bridge=none, dockerd deletes the interface docker0 of its namespace), with --config-file holding {} (dockerd refuses flags that
# /etc/docker/daemon.json also sets), its own --data-root ($DIR/K/data), --exec-root
# (/run/docker-engine-K), --pidfile (/run/docker-engine-K.pid), socket
# -H unix:///run/docker-engine-K.sock, --bridge=none, --iptables=false, and its own
# --containerd-namespace / --containerd-plugins-namespace (engine-K, engine-K-plugins) for the
# containerd it starts under its exec root. DIR is ${DOCKER_ENGINES_DIR:-/var/lib/docker-engines};
# its log is $DIR/K/dockerd.log. The storage driver is the host engine's (DOCKER_ENGINES_STORAGE_DRIVER
# overrides it). Task containers need no network (network mode none), hence no bridge.
# Images: DOCKER_ENGINES_IMAGES (default: taskplatform/worker:latest debian:bookworm-slim) are
# copied from the host's engine with `docker save | docker -H ... load` when missing or not
# the host's version.
# `stop` keeps each data root (the images stay for the next start); remove $DIR to drop them.
# Needs root.
set -euo pipefail

usage() {
  echo "usage: $0 start N | status [N] | stop [N]    (N: number of engines, 1-9)" >&2
  exit 2
}
log() { printf '[docker-engines] %s\n' "$*" >&2; }
die() { printf '[docker-engines] error: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || usage
action=$1
n=${2:-}
case "$action" in
  start) [ -n "$n" ] || usage ;;
  stop | status) ;;
  *) usage ;;
esac
case "$n" in '' | [1-9]) ;; *) usage ;; esac

command -v dockerd >/dev/null || die "dockerd is not installed (apt-get install docker.io)"
if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
  die "needs unshare (util-linux) and ip (iproute2)"
fi
[ "$(id -u)" = 0 ] || die "needs root (dockerd)"

dir=${DOCKER_ENGINES_DIR:-/var/lib/docker-engines}
images=${DOCKER_ENGINES_IMAGES:-taskplatform/worker:latest debian:bookworm-slim}
wait_secs=${DOCKER_ENGINES_WAIT:-60}

sock() { echo "/run/docker-engine-$1.sock"; }
host_of() { echo "unix://$(sock "$1")"; }
pidfile() { echo "/run/docker-engine-$1.pid"; }
engine() {
  local k=$1
  shift
  timeout 120 docker -H "$(host_of "$k")" "$@"
}

# dockerd's pid, if its pid file names a live process.
engine_pid() {
  local pid
  pid=$(cat "$(pidfile "$1")" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}
up() { engine_pid "$1" >/dev/null && engine "$1" version >/dev/null 2>&1; }

known_engines() {
  local d
  for d in "$dir"/[0-9]; do
    [ -d "$d" ] && echo "${d##*/}"
  done
}

start_engine() {
  local k=$1 driver
  if up "$k"; then
    log "engine $k already running ($(host_of "$k"))"
    return
  fi
  # A dockerd left from a failed start (not answering): stop it first.
  stop_engine "$k"
  driver=${DOCKER_ENGINES_STORAGE_DRIVER:-$(docker info -f '{{.Driver}}' 2>/dev/null || true)}
  mkdir -p "$dir/$k/data"
  echo '{}' >"$dir/$k/daemon.json"
  local args=(
    --config-file "$dir/$k/daemon.json"
    --data-root "$dir/$k/data"
    --exec-root "/run/docker-engine-$k"
    --pidfile "$(pidfile "$k")"
    -H "$(host_of "$k")"
    --bridge=none
    --iptables=false
    --containerd-namespace "engine-$k"
    --containerd-plugins-namespace "engine-$k-plugins"
  )
  [ -z "$driver" ] || args+=(--storage-driver "$driver")
  # Its own network namespace (unshare --net, loopback up): dockerd started with
  # --bridge=none deletes any interface named docker0 in its namespace at start (moby's
  # removeDefaultBridgeInterface), which in the host's namespace is the host engine's default
  # bridge. The socket is a file, so the host reaches the engine all the same; task
  # containers use network mode none. setsid: the daemon outlives this script and ignores
  # the terminal's Ctrl-C. `exec` keeps one pid: the pid file's.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid unshare --net -- sh -c 'ip link set lo up && exec dockerd "$@"' dockerd "${args[@]}" \
    >>"$dir/$k/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq "$wait_secs"); do
    up "$k" && break
    sleep 1
  done
  up "$k" || die "engine $k did not answer on $(sock "$k") within ${wait_secs} s; see $dir/$k/dockerd.log"
  log "engine $k up ($(host_of "$k"), storage driver ${driver:-default})"
}

stop_engine() {
  local k=$1 pid
  if pid=$(engine_pid "$k"); then
    # dockerd stops its containers and its containerd on SIGTERM.
    kill "$pid"
    for _ in $(seq "$wait_secs"); do
      engine_pid "$k" >/dev/null || break
      sleep 1
    done
    if engine_pid "$k" >/dev/null; then die "engine $k (pid $pid) did not stop within ${wait_secs} s"; fi
    log "engine $k stopped"
  fi
  # Shims of containers left by a dockerd that died (SIGKILL, a crash): its containerd died
  # with it, and the next one would not know them. Each is found by the address of this
  # engine's containerd in its arguments; its children (the container's init) die first.
  local shim
  for shim in $(pgrep -f -- "-address /run/docker-engine-$k/containerd/containerd.sock" || true); do
    pkill -KILL -P "$shim" 2>/dev/null || true
    kill -KILL "$shim" 2>/dev/null || true
    log "engine $k: killed the shim $shim left by a dockerd that died, and its container"
  done
  rm -f "$(sock "$k")"
  # Its exec root holds only sockets and state of the stopped daemon, unless something is
  # still mounted there (then it is left alone).
  if ! grep -q " /run/docker-engine-$k/" /proc/mounts; then rm -rf "/run/docker-engine-$k"; fi
}

# Copies the images engine K lacks, or holds in another version than the host's engine (an
# engine's data root outlives a rebuild of the worker image), out of the host's engine,
# through one tar file.
load_images() {
  local k=$1 img missing=() tar want have
  for img in $images; do
    want=$(docker image inspect -f '{{.Id}}' "$img" 2>/dev/null) \
      || die "image $img is not on the host's engine (scripts/services.sh builds the platform's)"
    have=$(engine "$k" image inspect -f '{{.Id}}' "$img" 2>/dev/null || true)
    [ "$want" = "$have" ] || missing+=("$img")
  done
  [ ${#missing[@]} = 0 ] && return
  tar="$dir/images.tar"
  if [ ! -s "$tar" ]; then # saved once per `start`, for every engine that lacks an image
    for img in $images; do
      docker image inspect "$img" >/dev/null 2>&1 || die "image $img is not on the host's engine (scripts/services.sh builds the platform's)"
    done
    # shellcheck disable=SC2086 # one word per image
    docker save -o "$tar.tmp" $images || die "docker save $images failed"
    mv "$tar.tmp" "$tar"
  fi
  engine "$k" load -q -i "$tar" >/dev/null || die "loading the images into engine $k failed"
  log "engine $k: loaded ${missing[*]}"
}

case "$action" in
  start)
    mkdir -p "$dir"
    began=$(date +%s)
    for k in $(seq "$n"); do start_engine "$k"; done
    rm -f "$dir/images.tar" # saved fresh at each start: the host's images change
    for k in $(seq "$n"); do load_images "$k"; done
    rm -f "$dir/images.tar"
    log "$n engines ready after $(($(date +%s) - began)) s"
    for k in $(seq "$n"); do host_of "$k"; done
    ;;
  status)
    engines=$(if [ -n "$n" ]; then seq "$n"; else known_engines; fi)
    [ -n "$engines" ] || { echo "no engine under $dir"; exit 3; }
    down=0
    for k in $engines; do
      if up "$k"; then
        echo "engine $k running $(host_of "$k") pid $(engine_pid "$k") containers $(engine "$k" ps -q | wc -l) images $(engine "$k" images -q | wc -l)"
      else
        echo "engine $k stopped"
        down=1
      fi
    done
    [ "$down" = 0 ] || exit 3
    ;;
  stop)
    for k in $( (known_engines; [ -z "$n" ] || seq "$n") | sort -u); do stop_engine "$k"; done
    ;;
esac
