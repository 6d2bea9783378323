//! Redundant runs (`--replicas N`): each task runs on N different executants and its
//! outcome counts only when N of them agree, in the spirit of BOINC's validation quorum.
//!
//! - The first run of each task is published as without replicas; each further run is
//!   published when an answer comes and the task is still undecided, with the
//!   `x-avoid-executant` header naming every executant that already answered it.
//! - One vote per executant: its first run of the task. A run without an executant (a task
//!   the broker dead-lettered) is a vote of its own. Two votes agree by [`agree`] (the same
//!   output, or both failed).
//! - An outcome counts when N votes agree (the first of them is the counted outcome). When
//!   the first N votes disagree, the task gets one more vote; if no outcome then has N
//!   votes, the task fails ("the replicas disagree"). A task that got [`max_runs`] runs
//!   without N + 1 different executants answering (fewer executants than that, say) fails
//!   too, with that reason: `resume --retry-failed` runs it again once more executants run.
//! - Every run received is recorded, counted or not, in `tracking/P/replicas/NNNNNN.jsonl`
//!   (numbered in the sequence of `results/` and `retries/`); `results/` holds only the
//!   counted outcomes, so its readers (`verify`, `status`, broker-api) are unchanged.

use std::collections::BTreeMap;

use tasks::layout::{self, TRACKING};
use tasks::{Task, TaskResult};

use crate::verify::{agree, describe};
use crate::workspace::Workspace;

/// The most replicas a project may ask for.
pub const MAX_REPLICAS: u32 = 5;

/// The most runs a task of an `n`-replica project gets before it fails: three times the
/// votes it may need (a run on an executant that already answered is no vote).
pub fn max_runs(n: u32) -> usize {
    3 * (n as usize + 1)
}

/// Where a task of a replicated project stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `n` votes agree: this outcome counts.
    Counted(TaskResult),
    /// No outcome can count: the task fails with this outcome.
    Failed(TaskResult),
    /// Another run is needed, on an executant other than these.
    Needs(Vec<String>),
}

/// The verdict on `runs` (every run received for one task, in order) for `n` replicas.
pub fn verdict(task: &Task, n: u32, runs: &[TaskResult]) -> Verdict {
    let n = n as usize;
    let votes = votes(runs);
    for vote in &votes {
        if votes
            .iter()
            .filter(|v| agree(&v.outcome, &vote.outcome))
            .count()
            >= n
        {
            return Verdict::Counted((*vote).clone());
        }
    }
    if votes.len() > n {
        let said: Vec<String> = votes.iter().map(|v| said_by(v)).collect();
        let reason = format!(
            "the replicas disagree (--replicas {n}, no outcome given by {n}): {}",
            said.join("; ")
        );
        return Verdict::Failed(TaskResult::failed(task, reason));
    }
    if runs.len() >= max_runs(n as u32) {
        let reason = format!(
            "only {} different executants answered in {} runs (--replicas {n} needs {n}, one more when they disagree): start more executants, then `commanditaire resume {} --retry-failed`",
            votes.len(),
            runs.len(),
            task.project
        );
        return Verdict::Failed(TaskResult::failed(task, reason));
    }
    Verdict::Needs(votes.iter().filter_map(|v| executant(v)).collect())
}

/// One vote per executant (its first run), in order; runs without an executant each vote.
fn votes(runs: &[TaskResult]) -> Vec<&TaskResult> {
    let mut seen: Vec<&str> = Vec::new();
    let mut votes = Vec::new();
    for run in runs {
        match executant(run) {
            Some(name) if seen.contains(&name.as_str()) => {}
            Some(_) => {
                seen.push(run.provenance.as_ref().map_or("", |p| p.executant.as_str()));
                votes.push(run);
            }
            None => votes.push(run),
        }
    }
    votes
}

fn executant(run: &TaskResult) -> Option<String> {
    run.provenance.as_ref().map(|p| p.executant.clone())
}

fn said_by(run: &TaskResult) -> String {
    let who = executant(run).unwrap_or_else(|| "the broker".into());
    format!("{} by {who}", describe(&run.outcome))
}

/// What offering a run to a [`Quorum`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// The very same run was already recorded (a delivery seen again): ignored.
    Again,
    /// Recorded; the task was already decided, so the run does not count.
    Late,
    /// Recorded; the task is still undecided.
    Undecided,
    /// Recorded, and it decided the task: this outcome (result or failure) counts.
    Decided(TaskResult),
}

/// The runs of a replicated project's tasks, and the runs still to publish.
#[derive(Debug, Clone)]
pub struct Quorum {
    n: u32,
    runs: BTreeMap<u32, Vec<TaskResult>>,
    decided: BTreeMap<u32, bool>,
    /// Runs received and not yet committed.
    unrecorded: Vec<TaskResult>,
    /// Runs to publish: task index and the executants to avoid.
    wanted: BTreeMap<u32, Vec<String>>,
    /// Runs published by this client and not answered yet, by task.
    in_flight: BTreeMap<u32, u32>,
}

impl Quorum {
    /// No run yet, `n` replicas per task.
    pub fn new(n: u32) -> Quorum {
        Quorum {
            n,
            runs: BTreeMap::new(),
            decided: BTreeMap::new(),
            unrecorded: Vec::new(),
            wanted: BTreeMap::new(),
            in_flight: BTreeMap::new(),
        }
    }

    /// The number of replicas.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// Replays project `id`'s recorded runs and retry records in their numbering: the state
    /// a killed client had committed.
    pub fn load(ws: &Workspace, project: &tasks::Project, n: u32) -> Quorum {
        let mut quorum = Quorum::new(n);
        let id = &project.id;
        let mut files: Vec<(String, bool)> = Vec::new();
        for (folder, retry) in [
            (layout::replicas_folder(id), false),
            (layout::retries_folder(id), true),
        ] {
            for entry in ws.list_at_head(TRACKING, &folder) {
                files.push((format!("{folder}/{entry}"), retry));
            }
        }
        files.sort_by(|a, b| file_name(&a.0).cmp(file_name(&b.0)));
        for (path, retry) in files {
            let Some(bytes) = ws.read_at_head(TRACKING, &path) else {
                continue;
            };
            if retry {
                let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                for index in record["retry"].as_array().into_iter().flatten() {
                    if let Some(index) = index.as_u64() {
                        quorum.forget(index as u32);
                    }
                }
                continue;
            }
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(run) = TaskResult::from_json(line) {
                    if let Some(task) = project.tasks.get(run.index as usize) {
                        quorum.replay(&task, run);
                    }
                }
            }
        }
        quorum
    }

    fn replay(&mut self, task: &Task, run: TaskResult) {
        let index = run.index;
        let runs = self.runs.entry(index).or_default();
        if runs.contains(&run) {
            return;
        }
        runs.push(run);
        if !self.decided.get(&index).copied().unwrap_or(false) {
            let decided = !matches!(verdict(task, self.n, runs), Verdict::Needs(_));
            self.decided.insert(index, decided);
        }
    }

    /// The outcome that counts for each task its recorded runs decide.
    pub fn decided(&self, project: &tasks::Project) -> Vec<TaskResult> {
        self.runs
            .iter()
            .filter_map(
                |(index, runs)| match verdict(&task_of(project, *index), self.n, runs) {
                    Verdict::Counted(r) | Verdict::Failed(r) => Some(r),
                    Verdict::Needs(_) => None,
                },
            )
            .collect()
    }

    /// Offers a run of `task` received from the results queue.
    pub fn offer(&mut self, task: &Task, run: TaskResult) -> Offer {
        let index = run.index;
        let runs = self.runs.entry(index).or_default();
        if runs.contains(&run) {
            return Offer::Again;
        }
        runs.push(run.clone());
        self.unrecorded.push(run);
        if let Some(n) = self.in_flight.get_mut(&index) {
            *n = n.saturating_sub(1);
        }
        if self.decided.get(&index).copied().unwrap_or(false) {
            return Offer::Late;
        }
        match verdict(task, self.n, runs) {
            Verdict::Counted(r) | Verdict::Failed(r) => {
                self.decided.insert(index, true);
                self.wanted.remove(&index);
                Offer::Decided(r)
            }
            Verdict::Needs(avoid) => {
                if self.in_flight.get(&index).copied().unwrap_or(0) == 0 {
                    self.wanted.insert(index, avoid);
                }
                Offer::Undecided
            }
        }
    }

    /// Forgets task `index`'s runs (a retry record voided its failure): it starts over.
    pub fn forget(&mut self, index: u32) {
        self.runs.remove(&index);
        self.decided.remove(&index);
        self.wanted.remove(&index);
        self.in_flight.remove(&index);
    }

    /// Asks for one more run of every undecided task among `remaining` (their runs were
    /// lost, or an earlier client died before publishing them); returns how many.
    pub fn want_again(&mut self, remaining: &tasks::Tasks) -> usize {
        for task in remaining {
            let runs = self.runs.get(&task.index).map_or(&[][..], |r| r.as_slice());
            let avoid = match verdict(&task, self.n, runs) {
                Verdict::Needs(avoid) => avoid,
                _ => continue,
            };
            self.in_flight.remove(&task.index);
            self.wanted.insert(task.index, avoid);
        }
        self.wanted.len()
    }

    /// The runs to publish now (task index, executants to avoid); counted as in flight.
    pub fn take_wanted(&mut self) -> Vec<(u32, Vec<String>)> {
        let wanted: Vec<_> = std::mem::take(&mut self.wanted).into_iter().collect();
        for (index, _) in &wanted {
            *self.in_flight.entry(*index).or_default() += 1;
        }
        wanted
    }

    /// Puts back runs whose publishing failed.
    pub fn put_back(&mut self, runs: Vec<(u32, Vec<String>)>) {
        for (index, avoid) in runs {
            if let Some(n) = self.in_flight.get_mut(&index) {
                *n = n.saturating_sub(1);
            }
            self.wanted.insert(index, avoid);
        }
    }

    /// Runs received and not committed yet.
    pub fn unrecorded(&self) -> usize {
        self.unrecorded.len()
    }

    /// The runs received and not committed yet, as the lines of a replicas batch (taken:
    /// [`Quorum::restore`] puts them back if the commit fails).
    pub fn take_unrecorded(&mut self) -> Vec<TaskResult> {
        std::mem::take(&mut self.unrecorded)
    }

    /// Puts runs back that could not be committed.
    pub fn restore(&mut self, mut runs: Vec<TaskResult>) {
        runs.append(&mut self.unrecorded);
        self.unrecorded = runs;
    }

    /// Every task whose votes disagreed, with each run and what counted: what `result.json`
    /// and `status P --json` report under `replicas`.
    pub fn report(&self, project: &tasks::Project) -> serde_json::Value {
        let mut disagreements = Vec::new();
        for (index, runs) in &self.runs {
            let votes = votes(runs);
            let Some(first) = votes.first() else { continue };
            if votes.iter().all(|v| agree(&v.outcome, &first.outcome)) {
                continue;
            }
            let counted = match verdict(&task_of(project, *index), self.n, runs) {
                Verdict::Counted(r) => Some(describe(&r.outcome)),
                _ => None,
            };
            let runs: Vec<serde_json::Value> = runs.iter().map(run_json).collect();
            disagreements.push(serde_json::json!({
                "index": index,
                "counted": counted,
                "runs": runs,
            }));
        }
        let runs: usize = self.runs.values().map(Vec::len).sum();
        serde_json::json!({
            "n": self.n,
            "runs": runs,
            "disagreements": disagreements,
        })
    }
}

/// One run as the report shows it: its outcome and where it ran.
fn run_json(run: &TaskResult) -> serde_json::Value {
    let p = run.provenance.as_deref();
    serde_json::json!({
        "outcome": describe(&run.outcome),
        "output": match &run.outcome { tasks::Outcome::Ok { output } => serde_json::to_value(output).ok(), _ => None },
        "executant": p.map(|p| p.executant.clone()),
        "image": p.and_then(|p| p.image.clone()),
        "image_digest": p.and_then(|p| p.image_digest.clone()),
        "engine_id": p.and_then(|p| p.engine_id.clone()),
    })
}

/// The number of replicas project `id` was recorded with (`config/P/config.json`; 1 when
/// it names none).
pub fn replicas_of(ws: &Workspace, id: &str) -> u32 {
    ws.read_at_head(layout::CONFIG, &layout::config(id))
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|config| config["replicas"].as_u64())
        .map_or(1, |n| n.clamp(1, MAX_REPLICAS as u64) as u32)
}

/// What `status P --json` shows of a replicated project's runs (`None`: not replicated).
pub fn report(ws: &Workspace, project: &tasks::Project) -> Option<serde_json::Value> {
    let n = replicas_of(ws, &project.id);
    (n > 1).then(|| Quorum::load(ws, project, n).report(project))
}

/// Publishes one run of each task in `runs` (task, executants to avoid) to the work queue of
/// `priority` on the
/// confirm channel `channel`, with its trace context, and waits for the confirms.
pub async fn publish(
    channel: &lapin::Channel,
    trace: &tasks::trace::TraceId,
    priority: tasks::Priority,
    runs: &[(&Task, &[String])],
) -> Result<(), tasks::amqp::BrokerError> {
    use tasks::amqp;
    for (task, avoid) in runs {
        let props = if avoid.is_empty() {
            amqp::task_properties(task)
        } else {
            amqp::task_properties_avoiding(task, &avoid.join(","))
        };
        let props = amqp::with_traceparent(
            props,
            &tasks::trace::TraceParent::of_task(trace, task.index),
        );
        let queue = amqp::todo_queue(priority);
        amqp::publish_with_properties(channel, "", queue, &task.to_json(), props).await?;
    }
    Ok(())
}

/// Task `index` of `project`: one the quorum holds runs of (only runs of the project's
/// tasks are kept).
fn task_of(project: &tasks::Project, index: u32) -> Task {
    project
        .tasks
        .get(index as usize)
        .expect("a run of a task of the project")
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasks::provenance::Provenance;
    use tasks::{Outcome, TaskOutput};

    fn task() -> Task {
        tasks::split::nqueens_project("p", 8, 1)
            .unwrap()
            .tasks
            .get(0)
            .unwrap()
    }

    fn run(executant: &str, solutions: u64) -> TaskResult {
        let mut r = TaskResult::ok(&task(), TaskOutput::Nqueens { solutions });
        r.provenance = Some(Box::new(Provenance {
            executant: executant.into(),
            attempt: 1,
            ..Provenance::default()
        }));
        r
    }

    #[test]
    fn two_agreeing_executants_decide() {
        let t = task();
        assert_eq!(
            verdict(&t, 2, &[run("a", 4)]),
            Verdict::Needs(vec!["a".into()])
        );
        assert_eq!(
            verdict(&t, 2, &[run("a", 4), run("b", 4)]),
            Verdict::Counted(run("a", 4))
        );
    }

    #[test]
    fn a_disagreement_gets_one_more_run_and_the_majority_counts() {
        let t = task();
        let split = [run("liar", 5), run("b", 4)];
        assert_eq!(
            verdict(&t, 2, &split),
            Verdict::Needs(vec!["liar".into(), "b".into()])
        );
        let three = [run("liar", 5), run("b", 4), run("c", 4)];
        assert_eq!(verdict(&t, 2, &three), Verdict::Counted(run("b", 4)));
        let all_differ = [run("liar", 5), run("b", 4), run("c", 6)];
        match verdict(&t, 2, &all_differ) {
            Verdict::Failed(r) => match r.outcome {
                Outcome::Failed { reason } => assert!(reason.contains("disagree"), "{reason}"),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_executant_answering_twice_votes_once_and_runs_are_bounded() {
        let t = task();
        // The liar twice is one vote: the task still needs a third executant.
        let runs = [run("liar", 5), run("b", 4), run("liar", 5)];
        assert_eq!(
            verdict(&t, 2, &runs),
            Verdict::Needs(vec!["liar".into(), "b".into()])
        );
        // One executant only: after max_runs(2) runs the task fails, saying why.
        let alone: Vec<_> = (0..max_runs(2)).map(|_| run("a", 4)).collect();
        let alone: Vec<_> = alone
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.duration_ms = i as u64;
                r
            })
            .collect();
        match verdict(&t, 2, &alone) {
            Verdict::Failed(r) => match r.outcome {
                Outcome::Failed { reason } => {
                    assert!(reason.contains("only 1 different executants"), "{reason}")
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_quorum_wants_the_next_run_once_and_counts_once() {
        let t = task();
        let mut q = Quorum::new(2);
        assert_eq!(q.offer(&t, run("a", 4)), Offer::Undecided);
        assert_eq!(q.take_wanted(), vec![(t.index, vec!["a".to_string()])]);
        assert_eq!(q.offer(&t, run("a", 4)), Offer::Again);
        assert!(q.take_wanted().is_empty());
        assert_eq!(q.offer(&t, run("b", 4)), Offer::Decided(run("a", 4)));
        assert_eq!(q.offer(&t, run("c", 4)), Offer::Late);
        assert_eq!(q.unrecorded(), 3);
    }
}
