#!/usr/bin/env bash
# N-queens, side by side in one run (issue 14, item 1):
#   worker  `worker nqueens N`: the engine on a whole board (all 8 symmetries), one thread;
#   local   `commanditaire nqueens N --local`: the platform's own split (the tasks a project
#           publishes), computed in-process on every core, recorded in a fresh workspace;
#   C       tasks/benches/somers_threads.c: the classic bitboard solver (Jeff Somers'
#           algorithm, mirror symmetry), on as many threads as --local uses.
# Each round runs the three in turn, so that the load of a shared machine falls on all of
# them; the best of RUNS rounds is kept, and the machine's load (uptime) is printed before and
# after each board. Every count is checked against OEIS A000170.
#
# Usage: scripts/bench-nqueens.sh [N...]        (default: 17; N from 8 to 20)
# Environment: RUNS (rounds, default 1), SKIP_BUILD=1 (use the release binaries as built),
# CARGO_TARGET_DIR. Needs gcc.
set -euo pipefail
cd "$(dirname "$0")/.."

boards=("$@")
[ ${#boards[@]} -eq 0 ] && boards=(17)
runs=${RUNS:-1}
target=${CARGO_TARGET_DIR:-target}
bin="$target/release"
threads=$(nproc)

# OEIS A000170 (the engine's table, tasks::nqueens::known_count), N = 8 to 20.
known=(92 352 724 2680 14200 73712 365596 2279184 14772512 95815104 666090624 4968057848
    39029188884)
expected() { echo "${known[$(($1 - 8))]}"; }

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --quiet -p worker -p commanditaire
fi
gcc -O3 -march=native -pthread -o "$bin/somers_threads" tasks/benches/somers_threads.c

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Runs a command with its output in $tmp/out; prints its wall-clock time in seconds.
timed() {
    local start end
    start=$(date +%s.%N)
    "$@" >"$tmp/out"
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}
# The first match of a sed expression in the last command's output.
field() { sed -n "$1" "$tmp/out" | head -n1; }

# Keeps the smaller of two times (the first may be empty).
best() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi; }

check() { # name n solutions
    if [ "$3" != "$(expected "$2")" ]; then
        echo "bench-nqueens: $1 counted $3 solutions for N = $2, OEIS says $(expected "$2")" >&2
        exit 1
    fi
}

echo "N-queens side by side: best of $runs round(s), $threads threads for local and C"
echo "$(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%3s %11s %10s %10s %10s %9s %9s %7s\n' N solutions "worker s" "local s" "C s" \
    local/C worker/C tasks
for n in "${boards[@]}"; do
    if [ "$n" -lt 8 ] || [ "$n" -gt 20 ]; then
        echo "bench-nqueens: N must be from 8 to 20" >&2
        exit 2
    fi
    echo "  load before N = $n: $(uptime | sed 's/.*load average/load average/')"
    w='' l='' c='' tasks=''
    for round in $(seq 1 "$runs"); do
        secs=$(timed "$bin/worker" nqueens "$n")
        check worker "$n" "$(field p)"
        w=$(best "$w" "$secs")
        ws="$tmp/ws-$n-$round"
        secs=$(timed "$bin/commanditaire" --workspace "$ws" --json nqueens "$n" --local)
        check local "$n" "$(field 's/.*"solutions":\([0-9]*\).*/\1/p')"
        tasks=$(field 's/.*"tasks":\([0-9]*\).*/\1/p')
        l=$(best "$l" "$secs")
        rm -rf "$ws"
        secs=$(timed "$bin/somers_threads" "$n" "$threads")
        check C "$n" "$(field 's/^[0-9]* \([0-9]*\) .*/\1/p')"
        c=$(best "$c" "$secs")
    done
    printf '%3s %11s %10.2f %10.2f %10.2f %9.2f %9.2f %7s\n' "$n" "$(expected "$n")" "$w" "$l" \
        "$c" "$(echo "$l / $c" | bc -l)" "$(echo "$w / $c" | bc -l)" "$tasks"
    echo "  load after N = $n: $(uptime | sed 's/.*load average/load average/')"
done
echo "(local/C <= 0.55 is issue 14's target; the worker runs on one thread, the others on $threads)"
