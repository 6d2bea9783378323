#!/usr/bin/env bash
# Builds one of the platform's images from dockerfiles/NAME.Dockerfile, with a context that
# holds only the host-built release binaries (cargo build --release must have run).
#   scripts/build-image.sh worker|executant|broker-api
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: build-image.sh NAME}
target_dir=${CARGO_TARGET_DIR:-$root/target}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
case "$name" in
  worker) bins=(worker) ;;
  executant) bins=(executant) ;;
  broker-api) bins=(broker-api) ;;
  *) bins=() ;;
esac
for b in "${bins[@]}"; do
  cp "$target_dir/release/$b" "$ctx/"
done
if ! docker build -q -f "$root/dockerfiles/$name.Dockerfile" -t "taskplatform/$name:latest" "$ctx" >"$ctx.log" 2>&1; then
  cat "$ctx.log" >&2
  rm -f "$ctx.log"
  echo "[services] error: building taskplatform/$name failed" >&2
  exit 1
fi
rm -f "$ctx.log"
echo "[services] built taskplatform/$name:latest" >&2
