#!/usr/bin/env bash
# The platform against in-process and against the broker's own ceiling, side by side in one
# run (issue 14, items 2 and 3), with an executant started with no flags:
#   local     `commanditaire nqueens N --local`: the project's tasks in-process, every core;
#   platform  `commanditaire nqueens N`: the same board through the broker and worker
#             containers (default split: from the board and the consumers on todo);
#   short     `commanditaire nqueens SHORT_N --depth SHORT_DEPTH` (default N = 13 at depth 5:
#             9,132 tasks of well under a millisecond), tasks per second from start to the
#             result recorded;
#   ceiling   the broker's own: plain lapin publishing with confirms, consuming, acking
#             (`executant/benches/throughput.rs`, BENCH_ONLY=ceiling), as many messages.
# The machine's load (uptime) is printed with each figure; every count is checked against
# OEIS A000170. The executant is the only consumer of todo it expects: run it on a vhost of
# its own (AMQP_URL=amqp://guest:guest@127.0.0.1:5672/VHOST) on a shared broker.
#
# Usage: scripts/bench-platform.sh [N...]        (default: 17; N from 8 to 20)
# Environment: AMQP_URL, SHORT_N, SHORT_DEPTH, SHORT_RUNS (3), SKIP_BUILD=1 (the release binaries as built),
# CARGO_TARGET_DIR, BIN_DIR (the executant and commanditaire to measure, by default the
# release build's: a copy of an earlier build measures before against after).
# Needs the worker image (scripts/build-image.sh worker).
set -euo pipefail
cd "$(dirname "$0")/.."

boards=("$@")
[ ${#boards[@]} -eq 0 ] && boards=(17)
short_n=${SHORT_N:-13}
short_depth=${SHORT_DEPTH:-5}
short_runs=${SHORT_RUNS:-3}
target=${CARGO_TARGET_DIR:-target}
bin=${BIN_DIR:-$target/release}
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

# OEIS A000170, N = 8 to 20.
known=(92 352 724 2680 14200 73712 365596 2279184 14772512 95815104 666090624 4968057848
    39029188884)
expected() { echo "${known[$(($1 - 8))]}"; }

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --quiet -p executant -p commanditaire
fi
cargo bench --quiet -p executant --bench throughput --no-run 2>/dev/null

tmp=$(mktemp -d)
executant_pid=''
cleanup() {
    if [ -n "$executant_pid" ]; then
        kill -TERM "$executant_pid" 2>/dev/null || true
        wait "$executant_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

timed() { # command...: its output in $tmp/out; prints its wall-clock time in seconds
    local start end
    start=$(date +%s.%N)
    "$@" >"$tmp/out"
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}
field() { sed -n "$1" "$tmp/out" | head -n1; }
load() { uptime | sed 's/.*load average: //'; }
check() { # name n solutions
    if [ "$3" != "$(expected "$2")" ]; then
        echo "bench-platform: $1 counted '$3' solutions for N = $2, OEIS says $(expected "$2")" >&2
        exit 1
    fi
}
client() { # workspace args...
    local ws=$1
    shift
    "$bin/commanditaire" --workspace "$ws" --json "$@"
}

# The executant, no flags (its log in $tmp). Its first consumer on todo means it is ready.
"$bin/executant" 2>"$tmp/executant.log" &
executant_pid=$!
for _ in $(seq 1 100); do
    grep -q "consuming todo" "$tmp/executant.log" && break
    sleep 0.2
done
grep -q "consuming todo" "$tmp/executant.log" || {
    cat "$tmp/executant.log" >&2
    echo "bench-platform: the executant did not start consuming" >&2
    exit 1
}

echo "The platform side by side: $(nproc) cores, one executant with no flags"
printf '%-44s %12s %10s  %s\n' measure value "vs" "load (1, 5, 15 min)"
for n in "${boards[@]}"; do
    if [ "$n" -lt 8 ] || [ "$n" -gt 20 ]; then
        echo "bench-platform: N must be from 8 to 20" >&2
        exit 2
    fi
    secs=$(timed client "$tmp/local-$n" nqueens "$n" --local)
    check local "$n" "$(field 's/.*"solutions":\([0-9]*\).*/\1/p')"
    local_secs=$secs
    tasks=$(field 's/.*"tasks":\([0-9]*\).*/\1/p')
    printf '%-44s %10.2f s %10s  %s\n' "nqueens $n --local ($tasks tasks)" "$secs" "" "$(load)"
    secs=$(timed client "$tmp/platform-$n" nqueens "$n")
    check platform "$n" "$(field 's/.*"solutions":\([0-9]*\).*/\1/p')"
    tasks=$(field 's/.*"tasks":\([0-9]*\).*/\1/p')
    printf '%-44s %10.2f s %9.2fx  %s\n' "nqueens $n, platform ($tasks tasks)" "$secs" \
        "$(echo "$secs / $local_secs" | bc -l)" "$(load)"
done

# A 2-second project varies by a third from run to run on this machine: the short project
# and the ceiling are measured in turn SHORT_RUNS times, and the medians compared.
rates=()
ceilings=()
for run in $(seq 1 "$short_runs"); do
    secs=$(timed client "$tmp/short-$run" nqueens "$short_n" --depth "$short_depth")
    check short "$short_n" "$(field 's/.*"solutions":\([0-9]*\).*/\1/p')"
    short_tasks=$(field 's/.*"tasks":\([0-9]*\).*/\1/p')
    rate=$(echo "$short_tasks / $secs" | bc -l)
    short_load=$(load)
    BENCH_ONLY=ceiling BENCH_TASKS=$short_tasks cargo bench --quiet -p executant \
        --bench throughput >"$tmp/out" 2>/dev/null
    ceiling=$(field 's/^broker ceiling: \([0-9]*\) .*/\1/p')
    rates+=("$rate")
    ceilings+=("$ceiling")
    printf '%-44s %8.0f /s %9.0f%%  %s\n' \
        "nqueens $short_n --depth $short_depth ($short_tasks tasks), run $run" "$rate" \
        "$(echo "100 * $rate / $ceiling" | bc -l)" "$short_load"
    printf '%-44s %8.0f /s %10s  %s\n' "broker ceiling (lapin, $short_tasks messages), run $run" \
        "$ceiling" "" "$(load)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
rate=$(median "${rates[@]}")
ceiling=$(median "${ceilings[@]}")
printf '%-44s %8.0f /s %9.0f%%  %s\n' "short tasks, median of $short_runs" "$rate" \
    "$(echo "100 * $rate / $ceiling" | bc -l)" "ceiling median $ceiling /s"
echo "(targets: platform at most 1.15x local; short tasks at least 3,800/s and 50% of the ceiling)"
grep -o "prefetch resized prefetch=[0-9]*" "$tmp/executant.log" | sort | uniq -c | sed "s/^/executant: /" || true
