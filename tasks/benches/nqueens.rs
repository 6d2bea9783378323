//! The N-queens engine against the classic C solver, on one thread.
//!
//! `cargo bench -p tasks --bench nqueens` times, for N = 14, 15, 16 (add 17 with
//! `-- --max 17` or `NQUEENS_BENCH_MAX=17`):
//!
//! - `all`: [`count_all`], the whole board with mirror and rotation symmetry;
//! - `core`: the core search alone, [`count_completions`] summed over the mirror split of the
//!   first row (the same work as the C solver);
//! - `C`: `benches/somers.c` (Jeff Somers' bitboard algorithm with mirror symmetry), compiled
//!   here with `gcc -O3 -march=native` and run as a subprocess (its own timing of the count).
//!
//! Each is the best of 3 runs (`--runs R` or `NQUEENS_BENCH_RUNS`), taken in turn so that the
//! load of a shared machine spreads over all three. Every count is checked against OEIS
//! A000170; a wrong count fails the bench. The nodes (queens placed) of the core search come
//! from one run of [`count_completions_with_stats`].

use std::path::{Path, PathBuf};
use std::process::{exit, Command};
use std::time::Instant;

use tasks::nqueens::{count_all, count_completions, count_completions_with_stats};
use tasks::split::nqueens_prefixes;

fn main() {
    let (min, max, runs) = options();
    let solver = compile_c();
    println!(
        "N-queens, one thread, best of {runs} runs (C: {})",
        solver.display()
    );
    println!(
        "{:>3} {:>10} {:>9} {:>9} {:>9} {:>7} {:>7} {:>14}",
        "N", "solutions", "all s", "core s", "C s", "C/all", "C/core", "core nodes/s"
    );
    for n in min..=max {
        let expected = oeis(n);
        let (mut all_s, mut core_s, mut c_s) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..runs {
            let (count, secs) = timed(|| count_all(n).unwrap());
            verify("count_all", n, count, expected);
            all_s = all_s.min(secs);

            let (count, secs) = timed(|| core_count(n));
            verify("core search", n, count, expected);
            core_s = core_s.min(secs);

            let (count, secs) = run_c(&solver, n);
            verify("C solver", n, count, expected);
            c_s = c_s.min(secs);
        }
        let stats = core_stats(n);
        verify("core search with stats", n, stats.0, expected);
        println!(
            "{:>3} {:>10} {:>9.3} {:>9.3} {:>9.3} {:>7.2} {:>7.2} {:>14.3e}",
            n,
            expected,
            all_s,
            core_s,
            c_s,
            c_s / all_s,
            c_s / core_s,
            stats.1 as f64 / core_s
        );
    }
    println!("(C/x > 1: x is faster than the C solver; nodes: queens placed by the core search)");
}

/// The board sizes and runs, from the arguments (`--max N`, `--min N`, `--runs R`) or the
/// environment (`NQUEENS_BENCH_MAX`, `NQUEENS_BENCH_MIN`, `NQUEENS_BENCH_RUNS`).
fn options() -> (u8, u8, u32) {
    let env = |name: &str| std::env::var(name).ok();
    let (mut min, mut max, mut runs) = (
        env("NQUEENS_BENCH_MIN"),
        env("NQUEENS_BENCH_MAX"),
        env("NQUEENS_BENCH_RUNS"),
    );
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--min" => min = args.next(),
            "--max" => max = args.next(),
            "--runs" => runs = args.next(),
            "--n17" => max = Some("17".into()),
            // Passed by `cargo bench`, or filters: ignored.
            _ => {}
        }
    }
    let parse = |value: Option<String>, default: u32, name: &str| -> u32 {
        value.map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| fail(&format!("{name}: not a number: {v}")))
        })
    };
    let min = parse(min, 14, "min");
    let max = parse(max, 16, "max");
    let runs = parse(runs, 3, "runs").max(1);
    // Below 12 a count takes microseconds; past 18 the C solver alone takes minutes.
    let (lo, hi) = (12, 18);
    if min < lo || max > hi || min > max {
        fail(&format!("the board sizes must be within {lo}..={hi}"));
    }
    (min as u8, max as u8, runs)
}

fn oeis(n: u8) -> u64 {
    tasks::nqueens::known_count(n).expect("N in OEIS A000170")
}

fn verify(what: &str, n: u8, count: u64, expected: u64) {
    if count != expected {
        fail(&format!(
            "{what}: N = {n} gives {count} solutions, OEIS A000170 says {expected}"
        ));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("nqueens bench: FAILED: {message}");
    exit(1)
}

fn timed(f: impl FnOnce() -> u64) -> (u64, f64) {
    let start = Instant::now();
    let count = std::hint::black_box(f());
    (count, start.elapsed().as_secs_f64())
}

/// The whole board by the core search: the mirror split of the first row (as the C solver).
fn core_count(n: u8) -> u64 {
    nqueens_prefixes(n, 1)
        .map(|(prefix, weight)| weight * count_completions(n, &prefix).unwrap())
        .sum()
}

/// Solutions and nodes of the core search over the same split.
fn core_stats(n: u8) -> (u64, u64) {
    nqueens_prefixes(n, 1).fold((0, 0), |(solutions, nodes), (prefix, weight)| {
        let stats = count_completions_with_stats(n, &prefix).unwrap();
        (
            solutions + weight * stats.solutions,
            nodes + weight * stats.nodes,
        )
    })
}

/// Compiles `benches/somers.c` next to the bench binary (in the target directory).
fn compile_c() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/somers.c");
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir);
    let binary = dir.join("nqueens-somers");
    let status = Command::new("gcc")
        .args(["-O3", "-march=native", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| fail(&format!("running gcc: {e}")));
    if !status.success() {
        fail(&format!("gcc failed on {}: {status}", source.display()));
    }
    binary
}

/// Runs the C solver on `n`: its count and its own timing of the count (which leaves out the
/// start of the process).
fn run_c(solver: &Path, n: u8) -> (u64, f64) {
    let output = Command::new(solver)
        .arg(n.to_string())
        .output()
        .unwrap_or_else(|e| fail(&format!("running {}: {e}", solver.display())));
    if !output.status.success() {
        fail(&format!("{} {n}: {}", solver.display(), output.status));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    let parsed = match fields.as_slice() {
        [m, count, secs] if *m == n.to_string() => count.parse().ok().zip(secs.parse().ok()),
        _ => None,
    };
    parsed.unwrap_or_else(|| fail(&format!("unexpected output of the C solver: {text:?}")))
}
