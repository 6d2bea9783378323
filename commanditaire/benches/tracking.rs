//! How the client's recording and tracking cost grows with the number of tasks.
//!
//! `cargo bench -p commanditaire --bench tracking [-- SIZE...]` (default sizes 1,000, 10,000
//! and 100,000; the growth target is `-- 10000 100000 1000000`). Each size runs in a child
//! process (this binary again), so that its peak memory (`VmHWM`) is its own. A child runs
//! the client's real recording code on a project of trivial `exec` tasks whose results it
//! synthesises (computing is not the point): `record_project`, then every result offered to
//! a `Tracker` and committed in batches as the client does, then `finish` (the reassembly,
//! `result.json` and the final commits); then it reloads the project and its progress as
//! `resume` does. Each size runs `TRACKING_BENCH_RUNS` times (default 3); the table shows
//! the best of each measure. `project` is the resident memory once the project is built; a
//! second table gives the peak resident memory of each phase (the peak is reset between
//! phases through `/proc/self/clear_refs`; `peak RSS` is the highest of them).

use std::process::Command;
use std::time::{Duration, Instant};

use commanditaire::tracking::{self, BatchPolicy, Tracker};
use commanditaire::Workspace;
use tasks::model::ExecSpec;
use tasks::{Project, TaskOutput, TaskResult, TaskSpec};

const CHILD_ENV: &str = "TRACKING_BENCH_CHILD";
/// Runs per size unless `TRACKING_BENCH_RUNS` says; the best of each measure is shown (the
/// machine may be busy).
const RUNS: usize = 3;

fn main() {
    if let Ok(n) = std::env::var(CHILD_ENV) {
        child(n.parse().expect("a number of tasks"));
        return;
    }
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace([',', '_'], "").parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000, 100_000];
    }
    let runs: usize = std::env::var("TRACKING_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(RUNS);
    let me = std::env::current_exe().expect("the bench's own path");
    let mut rows: Vec<Row> = Vec::new();
    let mut phases: Vec<(usize, [u64; 5])> = Vec::new();
    println!(
        "{:>8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "tasks",
        "project",
        "peak RSS",
        "RSS/task",
        "record",
        "rec/task",
        "tracking",
        "trk/task",
        "finish",
        "reload",
        "batches"
    );
    for n in sizes {
        let runs: Vec<Row> = (0..runs).map(|_| run_child(&me, n)).collect();
        let best = |f: fn(&Row) -> f64| runs.iter().map(f).fold(f64::INFINITY, f64::min);
        let row = Row {
            tasks: n,
            project_kib: runs.iter().map(|r| r.project_kib).min().unwrap_or_default(),
            peak_kib: runs.iter().map(|r| r.peak_kib).min().unwrap_or_default(),
            record_ms: best(|r| r.record_ms),
            tracking_ms: best(|r| r.tracking_ms),
            finish_ms: best(|r| r.finish_ms),
            reload_ms: best(|r| r.reload_ms),
            batches: runs[0].batches,
            phase_kib: [0; 5],
        };
        let mut phase_kib = [0; 5];
        for (k, peak) in phase_kib.iter_mut().enumerate() {
            *peak = runs
                .iter()
                .map(|r| r.phase_kib[k])
                .min()
                .unwrap_or_default();
        }
        phases.push((n, phase_kib));
        println!(
            "{:>8} {:>6.1} MiB {:>6.1} MiB {:>7.0} B {:>6.0} ms {:>6.1} µs {:>6.0} ms {:>6.1} µs {:>6.0} ms {:>6.0} ms {:>9}",
            row.tasks,
            row.project_kib as f64 / 1024.0,
            row.peak_kib as f64 / 1024.0,
            row.peak_kib as f64 * 1024.0 / row.tasks as f64,
            row.record_ms,
            row.record_ms * 1000.0 / row.tasks as f64,
            row.tracking_ms,
            row.tracking_ms * 1000.0 / row.tasks as f64,
            row.finish_ms,
            row.reload_ms,
            row.batches,
        );
        rows.push(row);
    }
    println!();
    println!("peak RSS by phase");
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "tasks", "build", "record", "tracking", "finish", "reload"
    );
    for (n, kib) in &phases {
        let mib = kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0));
        println!(
            "{:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
            n, mib[0], mib[1], mib[2], mib[3], mib[4]
        );
    }
    if rows.len() > 1 {
        println!();
        println!("ratios between consecutive sizes (linear growth: the same ratio as the tasks)");
        println!(
            "{:>16} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "tasks", "peak RSS", "record", "tracking", "finish", "reload"
        );
        for w in rows.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            println!(
                "{:>16} {:>8.1}x {:>8.1}x {:>8.1}x {:>8.1}x {:>8.1}x",
                format!("{}x", b.tasks as f64 / a.tasks as f64),
                b.peak_kib as f64 / a.peak_kib as f64,
                b.record_ms / a.record_ms,
                b.tracking_ms / a.tracking_ms,
                b.finish_ms / a.finish_ms,
                b.reload_ms / a.reload_ms,
            );
        }
    }
}

fn run_child(me: &std::path::Path, n: usize) -> Row {
    let out = Command::new(me)
        .env(CHILD_ENV, n.to_string())
        .output()
        .expect("running a child");
    assert!(
        out.status.success(),
        "size {n} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a child's JSON line")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    tasks: usize,
    project_kib: u64,
    peak_kib: u64,
    record_ms: f64,
    tracking_ms: f64,
    finish_ms: f64,
    reload_ms: f64,
    batches: usize,
    /// The peak resident memory of each phase: building the project, recording it,
    /// tracking, finishing, reloading.
    phase_kib: [u64; 5],
}

fn child(n: usize) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let ws = Workspace::open_or_init(&dir.path().join("ws")).expect("a workspace");
    let mut phase_kib = [0; 5];
    let mut phase = 0;
    let mut end_phase = || {
        phase_kib[phase] = status_kib("VmHWM:");
        phase += 1;
        reset_peak();
    };
    reset_peak();
    // The specs as the client's generator makes them, one at a time.
    let specs = (0..n).map(|i| {
        TaskSpec::Exec(ExecSpec {
            image: "debian:bookworm-slim".into(),
            command: vec!["echo".into(), format!("bench task {i}")],
            script: None,
        })
    });
    let project = Project::from_specs("bench", specs).expect("a valid project");
    let config = serde_json::json!({ "mode": "bench" });
    let project_kib = status_kib("VmRSS:");
    end_phase();

    let start = Instant::now();
    tracking::record_project(&ws, &project, &config).expect("recording the project");
    let record = start.elapsed();
    end_phase();

    // Batches by count, as under a steady flow of results (the age limit never fires).
    let policy = BatchPolicy {
        max_results: BatchPolicy::default().max_results,
        max_age: Duration::from_secs(3600),
    };
    let start = Instant::now();
    let mut tracker = Tracker::load(&ws, project, policy);
    for i in 0..n {
        let task = tracker.project().tasks.get(i).expect("task i");
        let stdout = format!("bench task {}\n", task.index);
        let result = TaskResult::ok(&task, TaskOutput::Exec { stdout });
        tracker.record(result);
        if tracker.due() {
            tracker.flush().expect("a batch");
        }
    }
    let tracking = start.elapsed();
    end_phase();
    let start = Instant::now();
    let result = tracker.finish().expect("the final commit");
    let finish = start.elapsed();
    assert!(result.complete);
    assert_eq!(result.outputs.len(), n);
    // Exact: every output, in task order.
    for (i, out) in result.outputs.iter().enumerate() {
        assert_eq!(out.as_deref(), Some(format!("bench task {i}\n").as_str()));
    }
    drop((tracker, result));
    end_phase();

    // What `resume` does first: read the project and every committed batch back.
    let start = Instant::now();
    let project = tracking::load_project(&ws, "bench").expect("the recorded project");
    let reloaded = Tracker::load(&ws, project, policy);
    assert!(reloaded.finished());
    let reload = start.elapsed();
    end_phase();

    let row = Row {
        tasks: n,
        project_kib,
        peak_kib: phase_kib.iter().copied().max().unwrap_or_default(),
        record_ms: record.as_secs_f64() * 1000.0,
        tracking_ms: tracking.as_secs_f64() * 1000.0,
        finish_ms: finish.as_secs_f64() * 1000.0,
        reload_ms: reload.as_secs_f64() * 1000.0,
        batches: ws.list_at_head("tracking", "bench/results").len(),
        phase_kib,
    };
    println!("{}", serde_json::to_string(&row).expect("serializable"));
}

/// Resets the peak resident set (`VmHWM`) to the resident set now, so that the next phase's
/// peak is its own.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM (Linux 4.0 or later)");
}

/// A measure of the process's memory in `/proc/self/status`, in KiB: `VmHWM:` (the peak
/// resident set) or `VmRSS:` (the resident set now).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the field in /proc/self/status")
}
