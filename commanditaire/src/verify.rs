//! `verify P`: checks a finished project's record in git, offline, then runs a sample of
//! its tasks again through the platform and compares their outcomes.
//!
//! Offline, every mismatch is named by task index where one is concerned:
//! - every task has exactly one counted outcome, and no recorded line names a task the
//!   project does not have;
//! - each counted outcome carries its task's digest and a provenance naming a tasks commit
//!   that exists and holds that very task;
//! - no batch of results or retry record was changed or removed after the commit that
//!   added it (the client only ever adds them): each changed line is reported by index;
//! - `result.json` equals the reassembly of the tracking record.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tasks::layout::{self, RESULTS, TASKS, TRACKING};
use tasks::{Outcome, Task, TaskResult};

use crate::history::History;
use crate::tracking::LoadError;
use crate::workspace::Workspace;

/// The number of tasks `verify` runs again when `--sample` is not given.
pub const DEFAULT_SAMPLE: usize = 3;

/// One disagreement between the record and what it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The task concerned, when one is.
    pub index: Option<u32>,
    /// What is wrong.
    pub what: String,
}

impl Mismatch {
    fn task(index: u32, what: impl Into<String>) -> Mismatch {
        Mismatch {
            index: Some(index),
            what: what.into(),
        }
    }

    fn project(what: impl Into<String>) -> Mismatch {
        Mismatch {
            index: None,
            what: what.into(),
        }
    }
}

/// A task run again, and how its new outcome compares.
#[derive(Debug, Clone, Serialize)]
pub struct Rerun {
    /// The task's index.
    pub index: u32,
    /// The executant of the counted outcome.
    pub first_executant: Option<String>,
    /// The executant of the new run.
    pub again_executant: Option<String>,
    /// Whether the two outcomes agree.
    pub agree: bool,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The project.
    pub project: String,
    /// Its number of tasks.
    pub tasks: usize,
    /// The tasks run again.
    pub reruns: Vec<Rerun>,
    /// Every mismatch, offline ones first.
    pub mismatches: Vec<Mismatch>,
}

/// Why `verify` could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The project could not be read back.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The project has not finished: there is nothing final to verify.
    #[error("project {0} has not finished: `commanditaire resume {0}` first")]
    NotFinished(String),
    /// A repository could not be read with git.
    #[error("reading the {repo} repository")]
    Git {
        /// The repository.
        repo: &'static str,
        /// What git said.
        #[source]
        source: git2::Error,
    },
    /// The sampled tasks could not be run again.
    #[error(transparent)]
    Broker(#[from] tasks::amqp::BrokerError),
    /// Another client holds the project.
    #[error(transparent)]
    Locked(#[from] crate::project_lock::LockError),
    /// The sampled tasks' outcomes did not all come back in time.
    #[error("{missing} sampled tasks had no outcome after {waited:?}: is an executant running?")]
    Timeout {
        /// How many had none.
        missing: usize,
        /// How long verify waited.
        waited: Duration,
    },
}

/// The offline checks of project `id`'s record. Errs if it cannot be read or has not
/// finished; mismatches are in the answer.
pub fn check_record(ws: &Workspace, id: &str) -> Result<(History, Vec<Mismatch>), VerifyError> {
    let history = History::read(ws, id)?;
    let progress = crate::tracking::progress(ws, Some(id))?;
    if !progress.iter().any(|p| p.complete) {
        return Err(VerifyError::NotFinished(id.to_string()));
    }
    let mut found = Vec::new();
    outcomes(ws, &history, &mut found)?;
    edits(ws, id, &mut found)?;
    result_file(ws, &history, &mut found);
    found.sort_by_key(|m| (m.index.is_none(), m.index));
    Ok((history, found))
}

/// One counted outcome per task, each with its task's digest and a tasks commit holding it.
fn outcomes(
    ws: &Workspace,
    history: &History,
    found: &mut Vec<Mismatch>,
) -> Result<(), VerifyError> {
    let project = history.project();
    let repo = open(ws, TASKS)?;
    let mut at_commit: HashMap<String, Option<Vec<Task>>> = HashMap::new();
    for stray in &history.strays {
        found.push(Mismatch::task(
            stray.index,
            format!(
                "a recorded outcome names no task of the project ({}/{})",
                stray.project, stray.index
            ),
        ));
    }
    for task in &project.tasks {
        let Some(outcome) = history.counted.get(&task.index) else {
            found.push(Mismatch::task(task.index, "no counted outcome"));
            continue;
        };
        let digest = task.digest();
        // A task the broker dead-lettered fails without any executant having answered: there
        // is no digest (when its body was unreadable) nor provenance to check.
        if outcome.provenance.is_none() && matches!(outcome.outcome, Outcome::Failed { .. }) {
            continue;
        }
        match &outcome.digest {
            Some(d) if *d == digest => {}
            Some(d) => found.push(Mismatch::task(
                task.index,
                format!("the outcome's digest {d} is not its task's ({digest})"),
            )),
            None => found.push(Mismatch::task(
                task.index,
                "the outcome carries no task digest",
            )),
        }
        let Some(commit) = outcome
            .provenance
            .as_ref()
            .and_then(|p| p.tasks_commit.clone())
        else {
            found.push(Mismatch::task(
                task.index,
                "the outcome names no tasks commit",
            ));
            continue;
        };
        let tasks = at_commit
            .entry(commit.clone())
            .or_insert_with(|| tasks_at(&repo, &commit, &project.id));
        match tasks {
            None => found.push(Mismatch::task(
                task.index,
                format!(
                    "tasks commit {commit} does not exist or holds no tasks of {}",
                    project.id
                ),
            )),
            Some(tasks) if tasks.get(task.index as usize).map(Task::digest) != Some(digest) => {
                found.push(Mismatch::task(
                    task.index,
                    format!("tasks commit {commit} does not hold this task"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The project's tasks as recorded at `commit`, if it exists and has them.
fn tasks_at(repo: &git2::Repository, commit: &str, id: &str) -> Option<Vec<Task>> {
    let oid = git2::Oid::from_str(commit).ok()?;
    let tree = repo.find_commit(oid).ok()?.tree().ok()?;
    let entry = tree.get_path(Path::new(&layout::task_list(id))).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    blob.content()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Task::from_json(l).ok())
        .collect()
}

/// Batches and retry records are only ever added: any later change or removal is reported,
/// a changed batch line by its task index.
fn edits(ws: &Workspace, id: &str, found: &mut Vec<Mismatch>) -> Result<(), VerifyError> {
    let repo = open(ws, TRACKING)?;
    let git = |source| VerifyError::Git {
        repo: TRACKING,
        source,
    };
    let mut walk = repo.revwalk().map_err(git)?;
    walk.push_head().map_err(git)?;
    let folders = [
        layout::results_folder(id) + "/",
        layout::retries_folder(id) + "/",
    ];
    for oid in walk {
        let commit = repo.find_commit(oid.map_err(git)?).map_err(git)?;
        let Ok(parent) = commit.parent(0) else {
            continue;
        };
        let (old, new) = (parent.tree().map_err(git)?, commit.tree().map_err(git)?);
        let mut options = git2::DiffOptions::new();
        for folder in &folders {
            options.pathspec(folder);
        }
        let diff = repo
            .diff_tree_to_tree(Some(&old), Some(&new), Some(&mut options))
            .map_err(git)?;
        for delta in diff.deltas() {
            if delta.status() == git2::Delta::Added {
                continue;
            }
            let path = delta
                .old_file()
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let short = &commit.id().to_string()[..12];
            let before = lines(&repo, delta.old_file().id());
            let after = lines(&repo, delta.new_file().id());
            let changed: Vec<u32> = before
                .iter()
                .filter(|(index, line)| after.get(index) != Some(line))
                .chain(
                    after
                        .iter()
                        .filter(|(index, _)| !before.contains_key(index)),
                )
                .map(|(index, _)| *index)
                .collect();
            if changed.is_empty() {
                found.push(Mismatch::project(format!(
                    "{path} was changed after it was recorded (commit {short})"
                )));
            }
            for index in changed {
                found.push(Mismatch::task(
                    index,
                    format!(
                        "its outcome in {path} was changed after it was recorded (commit {short})"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A batch's lines by task index (the first line of each index).
fn lines(repo: &git2::Repository, blob: git2::Oid) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let Ok(blob) = repo.find_blob(blob) else {
        return out;
    };
    for line in blob
        .content()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        if let Ok(result) = TaskResult::from_json(line) {
            out.entry(result.index)
                .or_insert_with(|| String::from_utf8_lossy(line).into_owned());
        }
    }
    out
}

/// `result.json` equals the reassembly of the tracking record.
fn result_file(ws: &Workspace, history: &History, found: &mut Vec<Mismatch>) {
    let id = &history.project().id;
    let expected = history.reassembly.result();
    let Some(bytes) = ws.read_at_head(RESULTS, &layout::result(id)) else {
        found.push(Mismatch::project(format!(
            "{} is missing",
            layout::result(id)
        )));
        return;
    };
    let recorded: Result<tasks::ProjectResult, _> = serde_json::from_slice(&bytes);
    let Ok(recorded) = recorded else {
        found.push(Mismatch::project(format!(
            "{} is not a result",
            layout::result(id)
        )));
        return;
    };
    if recorded == expected {
        return;
    }
    if recorded.solutions != expected.solutions {
        found.push(Mismatch::project(format!(
            "result.json says {:?} solutions, the tracking record reassembles to {:?}",
            recorded.solutions, expected.solutions
        )));
    }
    for (i, (a, b)) in recorded.outputs.iter().zip(&expected.outputs).enumerate() {
        if a != b {
            found.push(Mismatch::task(
                i as u32,
                "its output in result.json is not the tracking record's",
            ));
        }
    }
    if recorded.failed != expected.failed
        || recorded.missing != expected.missing
        || recorded.complete != expected.complete
        || recorded.outputs.len() != expected.outputs.len()
    {
        found.push(Mismatch::project(
            "result.json's failed, missing or complete fields are not the tracking record's",
        ));
    }
}

fn open(ws: &Workspace, repo: &'static str) -> Result<git2::Repository, VerifyError> {
    git2::Repository::open(ws.repo_path(repo)).map_err(|source| VerifyError::Git { repo, source })
}

/// `k` distinct task indexes out of `tasks`, chosen by `seed` (the same seed, the same
/// sample): a splitmix64 stream, so no dependency decides what a seed means.
pub fn sample(tasks: usize, k: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // A partial Fisher-Yates shuffle of the indexes.
    let mut indexes: Vec<u32> = (0..tasks as u32).collect();
    let k = k.min(tasks);
    for i in 0..k {
        let j = i + (next() % (tasks - i) as u64) as usize;
        indexes.swap(i, j);
    }
    let mut chosen = indexes[..k].to_vec();
    chosen.sort_unstable();
    chosen
}

/// Runs `indexes` of the project again through the platform (each asking for another
/// executant than its counted outcome's), on the work queue of the project's `priority`,
/// and returns each one's first new outcome. The results queue is consumed exclusively and
/// every message acked at once: nothing is recorded. Waits up to the longest task timeout
/// plus two minutes.
pub async fn rerun(
    url: &str,
    history: &History,
    indexes: &[u32],
    priority: tasks::Priority,
) -> Result<BTreeMap<u32, TaskResult>, VerifyError> {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeleteOptions};
    use tasks::amqp;

    let project = history.project();
    let nodes = amqp::Nodes::parse(url);
    let conn = nodes
        .connect_with_backoff(
            "commanditaire verify",
            Some(crate::broker::CONNECT_PATIENCE),
        )
        .await?
        .connection;
    let channel = amqp::confirm_channel(&conn).await?;
    amqp::declare_todo(&channel).await?;
    // The same queue type the project's follower declared (quorum on a cluster).
    let queue = amqp::declare_results(&channel, &project.id, &nodes).await?;
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            exclusive,
            Default::default(),
        )
        .await
        .map_err(amqp::op("consume results"))?;
    let mut longest = Duration::ZERO;
    for &index in indexes {
        let task = &project
            .tasks
            .get(index as usize)
            .expect("a sampled task of the project");
        let first = history
            .counted
            .get(&index)
            .and_then(|r| r.provenance.as_ref())
            .map(|p| p.executant.clone());
        let props = match &first {
            Some(name) => amqp::task_properties_avoiding(task, name),
            None => amqp::task_properties(task),
        };
        let queue = amqp::todo_queue(priority);
        amqp::publish_with_properties(&channel, "", queue, &task.to_json(), props).await?;
        let timeout = task
            .timeout_secs
            .map_or(crate::follow::ASSUMED_TASK_TIMEOUT, Duration::from_secs);
        longest = longest.max(timeout);
    }
    let waited = longest + Duration::from_secs(120);
    let mut again = BTreeMap::new();
    let collect = async {
        while again.len() < indexes.len() {
            let Some(Ok(delivery)) = consumer.next().await else {
                break;
            };
            let incoming = crate::inbox::classify(project, &delivery.data, &delivery.properties);
            let _ = delivery.ack(BasicAckOptions::default()).await;
            for (incoming, _) in incoming {
                if let crate::inbox::Incoming::Result(r) | crate::inbox::Incoming::DeadLettered(r) =
                    incoming
                {
                    if indexes.contains(&r.index) {
                        again.entry(r.index).or_insert(r);
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(waited, collect).await;
    let _ = channel
        .queue_delete(
            queue.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await;
    let _ = conn.close(200, "verified".into()).await;
    if again.len() < indexes.len() {
        return Err(VerifyError::Timeout {
            missing: indexes.len() - again.len(),
            waited,
        });
    }
    Ok(again)
}

/// Verifies project `id` of the workspace at `root`: the offline checks, then `sample`
/// tasks chosen by `seed` run again through the broker at `url` and compared. Holds the
/// project's lock meanwhile (no `resume` runs while it is checked).
pub async fn verify(
    root: &Path,
    url: &str,
    id: &str,
    sample_size: usize,
    seed: u64,
) -> Result<Verification, VerifyError> {
    let ws = Workspace::open_or_init(root).map_err(LoadError::from)?;
    let _lock = crate::project_lock::ProjectLock::acquire(ws.root(), id)?;
    let (history, mut mismatches) = check_record(&ws, id)?;
    let indexes = sample(history.project().tasks.len(), sample_size, seed);
    let mut reruns = Vec::new();
    if !indexes.is_empty() {
        let priority = crate::priority::project_priority(&ws, id);
        let again = rerun(url, &history, &indexes, priority).await?;
        for index in indexes {
            let first = history.counted.get(&index);
            let new = &again[&index];
            let agree = first.is_some_and(|f| agree(&f.outcome, &new.outcome));
            if !agree {
                mismatches.push(Mismatch::task(
                    index,
                    format!(
                        "run again, it gave {}; the record says {}",
                        describe(&new.outcome),
                        first.map_or("nothing".into(), |f| describe(&f.outcome))
                    ),
                ));
            }
            reruns.push(Rerun {
                index,
                first_executant: first
                    .and_then(|f| f.provenance.as_ref())
                    .map(|p| p.executant.clone()),
                again_executant: new.provenance.as_ref().map(|p| p.executant.clone()),
                agree,
            });
        }
    }
    mismatches.sort_by_key(|m| (m.index.is_none(), m.index));
    Ok(Verification {
        project: id.to_string(),
        tasks: history.project().tasks.len(),
        reruns,
        mismatches,
    })
}

/// An outcome in a few words (a count, the start of an output, a failure and its reason).
pub(crate) fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok {
            output: tasks::TaskOutput::Nqueens { solutions },
        } => format!("{solutions} completions"),
        Outcome::Ok {
            output: tasks::TaskOutput::Exec { stdout },
        } => format!("output {:?}", stdout.chars().take(60).collect::<String>()),
        Outcome::Failed { reason } => format!("a failure ({reason})"),
    }
}

/// Whether two outcomes of one task agree: the same output, or both failed.
pub fn agree(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Ok { output: x }, Outcome::Ok { output: y }) => x == y,
        (Outcome::Failed { .. }, Outcome::Failed { .. }) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_picks_the_same_distinct_tasks() {
        let a = sample(100, 5, 7);
        assert_eq!(a, sample(100, 5, 7));
        assert_eq!(a.len(), 5);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
        assert_ne!(a, sample(100, 5, 8));
        assert_eq!(sample(3, 10, 1), vec![0, 1, 2]);
        assert!(sample(0, 3, 1).is_empty());
    }
}
