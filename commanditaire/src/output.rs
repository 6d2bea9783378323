//! What the person (stderr) and scripts (stdout, `--json`) see.

use commanditaire::status::{ProjectStatus, State};
use indicatif::{ProgressBar, ProgressStyle};
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

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl commanditaire::broker::Watcher for Bar {
    fn total(&self, tasks: usize) {
        self.bar.set_length(tasks as u64);
    }

    fn progress(&self, done: usize) {
        self.bar.set_position(done as u64);
    }

    fn warn(&self, message: &str) {
        self.bar
            .suspend(|| eprintln!("commanditaire: warning: {}", printable(message)));
    }
}

/// Says what is about to run (not with `--json`).
pub fn started(project: &tasks::Project, mode: commanditaire::Mode, json: bool) {
    if json {
        return;
    }
    let how = match mode {
        commanditaire::Mode::Local => "computed locally",
        commanditaire::Mode::Broker | commanditaire::Mode::Detached => "through the broker",
    };
    eprintln!(
        "project {}: {} tasks ({how})",
        project.id,
        project.tasks.len()
    );
}

/// Prints what a run came to: its result, or that it was published and not followed.
pub fn report(run: &commanditaire::RunReport, json: bool) {
    match &run.result {
        None => detached(run, json),
        Some(r) => result(r, run, json),
    }
}

/// Prints a finished project's result and what the run saw on the way (results that came
/// again for tasks that already had one, messages dropped from the results queue).
pub fn result(result: &ProjectResult, run: &commanditaire::RunReport, json: bool) {
    let duplicates = run.duplicates;
    if json {
        let mut value = serde_json::to_value(result).expect("serializable");
        value["published"] = run.published.into();
        value["duplicate_results"] = duplicates.into();
        value["junk_results"] = run.junk.into();
        if let Some(replicas) = &run.replicas {
            value["replicas"] = replicas.clone();
        }
        if let tasks::ProjectSpec::Nqueens { n, depth } = result.spec {
            value["n"] = n.into();
            value["depth"] = depth.into();
        }
        println!("{value}");
        return;
    }
    for failed in &result.failed {
        // A reason may carry the task's own stderr: never let it drive the terminal.
        let reason = printable(&failed.reason);
        if failed.index == u32::MAX {
            // Not one task's failure: the reassembly's (an overflow, mismatched kinds).
            eprintln!("project {}: {reason}", result.project);
        } else {
            eprintln!("task {} failed: {reason}", failed.index);
        }
    }
    if run.junk > 0 {
        eprintln!(
            "{} messages on the results queue were not results of this project and were dropped",
            run.junk
        );
    }
    if let Some(replicas) = &run.replicas {
        disagreements(replicas);
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
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
            for output in &result.outputs {
                let output = output.as_deref().unwrap_or("<no output>\n");
                if terminal {
                    print!("{}", printable(output));
                } else {
                    print!("{output}");
                }
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

/// Prints each task whose replicas disagreed: every run, where it ran, and what counted.
fn disagreements(replicas: &serde_json::Value) {
    for d in replicas["disagreements"].as_array().into_iter().flatten() {
        let runs: Vec<String> = d["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{} by {}",
                    r["outcome"].as_str().unwrap_or("?"),
                    r["executant"].as_str().unwrap_or("the broker")
                )
            })
            .collect();
        let counted = d["counted"].as_str().unwrap_or("nothing (the task failed)");
        eprintln!(
            "task {}: the replicas disagreed ({}); counted: {}",
            d["index"],
            printable(&runs.join("; ")),
            printable(counted)
        );
    }
}

/// Prints the progress of the projects, each with its state and what would move it on, and
/// with `--json` the provenance of the one asked for.
pub fn status(all: &[ProjectStatus], provenance: Option<serde_json::Value>, json: bool) {
    if json {
        let mut value = serde_json::json!({ "projects": all });
        if let Some(provenance) = provenance {
            value["provenance"] = provenance;
        }
        println!("{value}");
        return;
    }
    if all.is_empty() {
        println!("no project recorded yet");
    }
    for s in all {
        let p = &s.progress;
        let mut state = s.state.word().to_string();
        if let (State::Stalled, Some(idle)) = (s.state, s.idle_secs) {
            state.push_str(&format!(": no outcome for {}", idle_words(idle)));
        }
        println!(
            "{:<32} {:>6}/{:<6} {:>5.1}%  {:>4} failed  {state}  (updated {})",
            p.project,
            p.done,
            p.tasks,
            p.fraction() * 100.0,
            p.failed,
            p.updated
        );
        if let Some(hint) = &s.hint {
            println!("    {hint}");
        }
    }
}

/// A seed for `verify --sample` when none is given (printed, so the run can be repeated).
pub fn fresh_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}

/// Prints what `verify` found: every mismatch by task index, and the tasks run again.
pub fn verification(found: &commanditaire::verify::Verification, seed: u64, json: bool) {
    if json {
        let mut value = serde_json::to_value(found).expect("serializable");
        value["seed"] = seed.into();
        value["verified"] = found.mismatches.is_empty().into();
        println!("{value}");
        return;
    }
    for rerun in &found.reruns {
        let elsewhere = match (&rerun.first_executant, &rerun.again_executant) {
            (Some(a), Some(b)) if a != b => format!("on {b}, first run on {a}"),
            (_, Some(b)) => format!("on {b}, the executant of the first run (no other took it)"),
            _ => "on an unnamed executant".into(),
        };
        let verdict = if rerun.agree { "agrees" } else { "DISAGREES" };
        eprintln!("task {} run again {elsewhere}: {verdict}", rerun.index);
    }
    for m in &found.mismatches {
        match m.index {
            Some(i) => println!("task {i}: {}", printable(&m.what)),
            None => println!("project: {}", printable(&m.what)),
        }
    }
    if found.mismatches.is_empty() {
        println!(
            "{}: verified ({} tasks, {} run again, seed {seed})",
            found.project,
            found.tasks,
            found.reruns.len()
        );
    } else {
        eprintln!(
            "{}: {} mismatches (seed {seed})",
            found.project,
            found.mismatches.len()
        );
    }
}

/// A duration a person reads at a glance: `42 s`, `25 min`, `3 h 10 min`.
fn idle_words(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// Says what a cancellation found and did.
pub fn cancelled(c: &commanditaire::cancel::Cancelled, json: bool) {
    if json {
        println!("{}", serde_json::to_value(c).expect("serializable"));
        return;
    }
    println!(
        "project {} cancelled: {}/{} tasks done, {} failed, {} not run; {} containers stopped by {} of {} executants in {} ms",
        c.project,
        c.done,
        c.tasks,
        c.failed,
        c.not_run,
        c.containers_stopped,
        c.executants,
        c.executants_expected,
        c.stop_ms
    );
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

/// `text` with its control characters (escape sequences, carriage returns, bells, C1
/// codes) shown as `\u{..}` escapes, so that what a task wrote cannot drive the terminal;
/// line feeds and tabs are kept.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(printable("plain\tline\n"), "plain\tline\n");
        let shown = printable("\x1b[31mred\x1b]0;title\x07\r\u{9b}2J");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.contains("\\u{1b}[31mred"), "{shown:?}");
    }
}
