#!/usr/bin/env bash
# The test command: starts the services the tests need (installing what is missing), then
# checks formatting and lints, runs every test against the real RabbitMQ and Docker, validates
# the Kubernetes manifests offline (scripts/validate-manifests.sh), and
# finally runs the compose and Swarm stacks end to end (scripts/compose-e2e.sh,
# scripts/swarm-e2e.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CI_REQUIRE_SERVICES=1
# One clean build: incremental caches would only take disk (2.4 GB of a 7.7 GB target once,
# and a CI run stopped on a full disk).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
disk() { echo "== disk: $(df -h --output=avail "${CARGO_TARGET_DIR:-$root/target}" 2>/dev/null | tail -1 | tr -d ' ') free for the build, $(df -h --output=avail /var/lib/docker 2>/dev/null | tail -1 | tr -d ' ') for Docker"; }
mkdir -p "${CARGO_TARGET_DIR:-$root/target}"
disk
scripts/services.sh
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== cargo build (the fault-injection suite drives the binaries)"
cargo build --workspace --all-features
echo "== cargo test"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --workspace --all-features 2>&1 | tee "$results"
disk
echo "== Kubernetes manifests, validated offline (scripts/validate-manifests.sh)"
scripts/validate-manifests.sh
echo "== compose stack end to end (scripts/compose-e2e.sh)"
BUILD_PROFILE=debug scripts/compose-e2e.sh
echo "== Swarm stack end to end (scripts/swarm-e2e.sh)"
BUILD_PROFILE=debug scripts/swarm-e2e.sh
# One closing line for the whole run (cargo's last line is the doc-tests', often 0 tests);
# the manifests' validation and the two stacks' end-to-end runs count as one test each.
count() { grep -oE "test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed" "$results" | awk -v f="$1" '{s += $f} END {print s + 0}'; }
echo "tests: $(( $(count 4) + 3 )) passed, $(count 6) failed"
