#!/usr/bin/env bash
# Builds one of the platform's images from dockerfiles/NAME.Dockerfile, with a context that
# holds only what the image needs: the host-built release binaries (cargo build --release must
# have run) and the image's own support files from dockerfiles/.
#   scripts/build-image.sh worker|executant|broker-api|rabbitmq
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: build-image.sh worker|executant|broker-api|rabbitmq}
target_dir=${CARGO_TARGET_DIR:-$root/target}
# BUILD_PROFILE=debug takes the debug binaries (the test command has built them already).
profile=${BUILD_PROFILE:-release}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx" "$ctx.log"' EXIT
bins=()
files=()
case "$name" in
  worker) bins=(worker) ;;
  executant) bins=(executant) ;;
  broker-api) bins=(broker-api) ;;
  rabbitmq) files=(rabbitmq-entrypoint.sh) ;;
  *) echo "[services] error: unknown image $name" >&2; exit 2 ;;
esac
for b in ${bins[@]+"${bins[@]}"}; do
  [ -x "$target_dir/$profile/$b" ] \
    || { echo "[services] error: $target_dir/$profile/$b is missing: cargo build --profile $profile -p $b" >&2; exit 1; }
  cp "$target_dir/$profile/$b" "$ctx/"
done
for f in ${files[@]+"${files[@]}"}; do
  cp "$root/dockerfiles/$f" "$ctx/"
done
if ! docker build -q -f "$root/dockerfiles/$name.Dockerfile" -t "taskplatform/$name:latest" "$ctx" >"$ctx.log" 2>&1; then
  cat "$ctx.log" >&2
  echo "[services] error: building taskplatform/$name failed" >&2
  exit 1
fi
echo "[services] built taskplatform/$name:latest" >&2
