#!/usr/bin/env bash
# The test command: starts the services the tests need (installing what is missing), then
# checks formatting and lints, runs every test against the real RabbitMQ and Docker, and
# finally runs the compose stack end to end (scripts/compose-e2e.sh).
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
echo "== compose stack end to end (scripts/compose-e2e.sh)"
BUILD_PROFILE=debug scripts/compose-e2e.sh
