//! The fault-injection suite: real N-queens projects through the real broker, real
//! executants and real containers while workers, executants, the broker, the client and the
//! disk fail; plus poison messages and hostile tasks.
//!
//! Each scenario returns a [`Row`]: tasks, faults injected, tasks lost, tasks counted twice,
//! wall time, and whatever was left behind. The test (`tests/faults.rs`) runs a small size
//! in CI; `cargo run --release -p faults -- --large` runs at least 2,000 tasks per scenario
//! with at least 10 faults each. Both pin the executants to a container per task and a
//! prefetch of 2 (the timings the scenarios were written for); `--defaults`
//! (`FAULTS_DEFAULTS=1`) runs them with the executants' own defaults instead (reused worker
//! containers, the prefetch sized to the work) on a heavier board ([`Size::ci_defaults`]).

pub mod cluster;
pub mod engines;
pub mod harness;
pub mod scenarios;
mod script;

use std::time::Duration;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Board size.
    pub n: u8,
    /// Split depth (the number of tasks follows).
    pub depth: u8,
    /// Faults to inject where the scenario injects some.
    pub faults: usize,
    /// How long a client may take to finish its project, faults included: past it, the
    /// client is killed and counted as hung.
    pub bound: Duration,
}

impl Size {
    /// The CI size: 424 tasks (N = 10 at depth 4), a few faults per scenario. (With the
    /// whole-board symmetry split, depth 3 makes 122 tasks, too few for faults to land
    /// mid-project.)
    pub fn ci() -> Size {
        Size {
            n: 10,
            depth: 4,
            faults: 3,
            bound: Duration::from_secs(600),
        }
    }

    /// The CI size for executants with their defaults ([`harness::Env::defaults`]): 1,031
    /// tasks (N = 17 at depth 3) of tens of milliseconds each, about 15 s of work on two
    /// cores. With reused workers, the prefetch sized to the work and batched results,
    /// N = 16 at depth 3 finished in 3.3 s on a quiet machine, before a kill could land (CI
    /// failed so), and N = 10 at depth 4 in moments. Here each worker lane holds several
    /// tasks and the prefetch grows to tens of deliveries, so a kill finds them in flight.
    pub fn ci_defaults() -> Size {
        Size {
            n: 17,
            depth: 3,
            ..Size::ci()
        }
    }

    /// The large size with the executants' defaults: N = 18 at depth 3 (several times the
    /// work of [`Size::ci_defaults`]), 10 faults per scenario.
    pub fn large_defaults() -> Size {
        Size {
            n: 18,
            depth: 3,
            ..Size::large()
        }
    }

    /// The large size: 2,045 tasks (N = 10 at depth 6; N = 12 at depth 4 made 2,040 with
    /// the mirror split, 1,290 with the whole-board symmetry split), 10 faults per scenario.
    pub fn large() -> Size {
        Size {
            n: 10,
            depth: 6,
            faults: 10,
            bound: Duration::from_secs(1800),
        }
    }
}

/// One scenario's figures.
#[derive(Debug, Clone)]
pub struct Row {
    /// Scenario name.
    pub scenario: &'static str,
    /// Tasks in the project(s) checked.
    pub tasks: usize,
    /// Faults injected.
    pub faults: usize,
    /// Tasks without an outcome at the end, or whose outcome is wrong.
    pub lost: usize,
    /// Tasks whose outcome was recorded (counted) more than once.
    pub duplicated: usize,
    /// Results the final client received again for a task that already had one, and
    /// ignored: a task run twice after a fault (at-least-once), or a result redelivered
    /// after its ack was lost, counted once. Clients killed before the end take their own
    /// count with them; a task re-run because its first run died produces no duplicate.
    pub dups_ignored: usize,
    /// Clients that did not finish within the size's bound (killed, then counted here).
    pub hung: usize,
    /// Wall time of the scenario.
    pub wall: Duration,
    /// Processes or task containers left behind after the scenario.
    pub leftovers: usize,
    /// What else was checked or seen.
    pub note: String,
    /// Broken promises other than lost or doubled tasks (an uncontained hostile task, a
    /// poison message without its reason, a client that crashed...).
    pub problems: Vec<String>,
}

impl Row {
    /// Whether the scenario kept its promise.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.hung == 0
            && self.leftovers == 0
            && self.problems.is_empty()
    }
}

/// Prints the table, one line per scenario.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<22} {:>6} {:>7} {:>5} {:>11} {:>12} {:>5} {:>9} {:>10}  note",
        "scenario",
        "tasks",
        "faults",
        "lost",
        "duplicated",
        "dups ignored",
        "hung",
        "wall s",
        "leftovers"
    );
    for r in rows {
        println!(
            "{:<22} {:>6} {:>7} {:>5} {:>11} {:>12} {:>5} {:>9.1} {:>10}  {}",
            r.scenario,
            r.tasks,
            r.faults,
            r.lost,
            r.duplicated,
            r.dups_ignored,
            r.hung,
            r.wall.as_secs_f64(),
            r.leftovers,
            r.note
        );
        for p in &r.problems {
            println!("{:<22} PROBLEM: {p}", "");
        }
    }
}
