#!/usr/bin/env bash
# Starts what the platform needs on this machine, installing what is missing: the Docker
# engine, RabbitMQ (from Debian's packages), the offline base image (debootstrap) and the
# worker image. Idempotent: a second run reuses what the first set up.
#
#   scripts/services.sh [build-deps] [docker] [rabbitmq] [base-image] [worker-image] [chromium]
#   (default: all)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  command -v dockerd >/dev/null || apt_install docker.io
  log "starting dockerd"
  (dockerd >/var/log/dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
  die "the Docker engine did not start (see /var/log/dockerd.log)"
}

ensure_rabbitmq() {
  if command -v rabbitmqctl >/dev/null && timeout 10 rabbitmqctl -q await_startup >/dev/null 2>&1; then
    ensure_retention
    return
  fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  # The management plugin gives the reference HTTP API on :15672 (benchmarks compare with it).
  rabbitmq-plugins --offline enable rabbitmq_management >/dev/null
  log "starting rabbitmq-server"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 90); do
    rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break
    sleep 1
  done
  # The node answers pings before the broker application has finished starting.
  timeout 120 rabbitmqctl -q await_startup >/dev/null 2>&1 \
    || die "RabbitMQ did not start (see /var/log/rabbitmq/)"
  log "rabbitmq is up"
  ensure_retention
}

# Retention on the default vhost (results queues unused 7 days, todo.dead entries 14 days):
# policies, so set again on every start (scripts/rabbitmq-retention.sh).
ensure_retention() {
  "$root/scripts/rabbitmq-retention.sh" >/dev/null
}

# Headless Chromium: broker-api's page test loads the page in a real browser.
ensure_chromium() {
  command -v chromium >/dev/null || apt_install chromium
}

ensure_base_image() {
  if docker image inspect debian:bookworm-slim >/dev/null 2>&1; then return; fi
  command -v debootstrap >/dev/null || apt_install debootstrap
  local dir
  dir=$(mktemp -d /tmp/bookworm-rootfs.XXXXXX)
  log "debootstrap --variant=minbase bookworm (a few minutes)"
  debootstrap --variant=minbase bookworm "$dir" http://deb.debian.org/debian >/tmp/debootstrap.log 2>&1 \
    || die "debootstrap failed (see /tmp/debootstrap.log)"
  # Keep the image small: apt caches and docs are not needed at run time.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
  tar -C "$dir" -c . | docker import - debian:bookworm-slim >/dev/null
  rm -rf "$dir"
  log "imported debian:bookworm-slim"
}

# The worker image: the host-built `worker` binary on the base image.
# C libraries the crates link: OpenSSL for git2's https pushes (libssh2 is built vendored).
ensure_build_deps() {
  dpkg -s libssl-dev pkg-config >/dev/null 2>&1 || apt_install libssl-dev pkg-config
}

ensure_worker_image() {
  ensure_base_image
  log "building the worker binary"
  (cd "$root" && cargo build --release -q -p worker)
  "$root/scripts/build-image.sh" worker
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(build-deps docker rabbitmq base-image worker-image chromium)
for t in "${targets[@]}"; do
  case "$t" in
    build-deps) ensure_build_deps ;;
    docker) ensure_docker ;;
    rabbitmq) ensure_rabbitmq ;;
    base-image) ensure_docker; ensure_base_image ;;
    worker-image) ensure_docker; ensure_worker_image ;;
    chromium) ensure_chromium ;;
    *) die "unknown target $t" ;;
  esac
done
