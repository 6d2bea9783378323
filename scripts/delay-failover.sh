#!/usr/bin/env bash
# Retry with backoff on a 3-node cluster: tasks waiting in a delay queue when the node
# leading it is SIGKILLed (commanditaire/tests/delay_failover). Not part of `cargo test`
# (a cluster start takes minutes here); run by hand or by CI when wanted. Its cluster is
# `delays-1..3` on 5761-5763, stopped at the end; the shared node on 5672 is not touched.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# `test = false` also keeps the target out of `clippy --all-targets`: linted here.
cargo clippy -p commanditaire --all-features --test delay_failover -- -D warnings
cargo test -p commanditaire --all-features --test delay_failover -- --nocapture "$@"
