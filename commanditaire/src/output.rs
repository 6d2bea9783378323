//! What the person (stderr) and scripts (stdout, `--json`) see.

use indicatif::{ProgressBar, ProgressStyle};
use tasks::progress::Progress;
use tasks::ProjectResult;

/// A progress bar on standard error (hidden with `--json` or when stderr is not a terminal).
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar for `total` tasks.
    pub fn new(total: u64, json: bool) -> Bar {
        let bar = if json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks ({per_sec}, eta {eta})",
            )
            .expect("valid template"),
        );
        Bar { bar }
    }

    /// Sets the number of tasks.
    pub fn set_total(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl commanditaire::broker::Watcher for Bar {
    fn progress(&self, done: usize) {
        self.bar.set_position(done as u64);
    }

    fn warn(&self, message: &str) {
        self.bar
            .suspend(|| eprintln!("commanditaire: warning: {message}"));
    }
}

/// Prints a finished project's result; `duplicates` results came for tasks that already
/// had one, and were ignored.
pub fn result(result: &ProjectResult, published: usize, duplicates: usize, json: bool) {
    if json {
        let mut value = serde_json::to_value(result).expect("serializable");
        value["published"] = published.into();
        value["duplicate_results"] = duplicates.into();
        if let tasks::ProjectSpec::Nqueens { n, depth } = result.spec {
            value["n"] = n.into();
            value["depth"] = depth.into();
        }
        println!("{value}");
        return;
    }
    for failed in &result.failed {
        eprintln!("task {} failed: {}", failed.index, failed.reason);
    }
    if duplicates > 0 {
        eprintln!(
            "{duplicates} results came again for tasks that already had one (after a fault); each task was counted once"
        );
    }
    match (&result.spec, result.solutions) {
        (tasks::ProjectSpec::Nqueens { n, .. }, Some(solutions)) => {
            eprintln!("project {}: {n}-queens has", result.project);
            println!("{solutions}");
        }
        _ => {
            for output in &result.outputs {
                print!("{}", output.as_deref().unwrap_or("<no output>\n"));
            }
        }
    }
    if !result.complete {
        eprintln!(
            "project {} is not exact: {} failed, {} missing",
            result.project,
            result.failed.len(),
            result.missing.len()
        );
    }
}

/// Prints the progress of the projects.
pub fn status(all: &[Progress], json: bool) {
    if json {
        println!("{}", serde_json::json!({ "projects": all }));
        return;
    }
    if all.is_empty() {
        println!("no project recorded yet");
    }
    for p in all {
        let state = if p.complete { "complete" } else { "running" };
        println!(
            "{:<32} {:>6}/{:<6} {:>5.1}%  {:>4} failed  {state}  (updated {})",
            p.project,
            p.done,
            p.tasks,
            p.fraction() * 100.0,
            p.failed,
            p.updated
        );
    }
}

/// Says the project was published and not followed.
pub fn detached(run: &commanditaire::RunReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "project": run.project, "published": run.published, "detached": true })
        );
    } else {
        println!("{}", run.project);
        eprintln!(
            "{} tasks published; follow with `commanditaire status {p}` and `commanditaire resume {p}`",
            run.published,
            p = run.project
        );
    }
}
