#!/usr/bin/env bash
# The test command: starts the services the tests need (installing what is missing), then
# checks formatting and lints, and runs every test against the real RabbitMQ and Docker.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CI_REQUIRE_SERVICES=1
scripts/services.sh
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== cargo build (the fault-injection suite drives the binaries)"
cargo build --workspace
echo "== cargo test"
cargo test --workspace --all-features
