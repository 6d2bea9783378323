//! A project's record read back from its workspace: the outcome that counts for each task
//! (by the reassembly's own rule: first outcome wins, a retry record voids a failure), and
//! the lines that did not count. `status --json` and `verify` read projects through it.

use std::collections::BTreeMap;

use tasks::reassemble::Recorded;
use tasks::{Project, Reassembly, TaskResult};

use crate::tracking::{self, LoadError, Record};
use crate::workspace::Workspace;

/// A project's tracking record, replayed.
#[derive(Debug, Clone)]
pub struct History {
    /// The counted outcome of each task that has one, by index.
    pub counted: BTreeMap<u32, TaskResult>,
    /// The reassembly the record replays to.
    pub reassembly: Reassembly,
    /// Recorded lines that name no task of the project (another project's, an index out of
    /// range): a record the client never writes.
    pub strays: Vec<TaskResult>,
}

impl History {
    /// Replays project `id`'s tracking record at HEAD.
    pub fn read(ws: &Workspace, id: &str) -> Result<History, LoadError> {
        let project = tracking::load_project(ws, id)?;
        Ok(History::replay(project, tracking::recorded(ws, id)))
    }

    /// Replays `records` for `project`.
    pub fn replay(project: Project, records: Vec<Record>) -> History {
        let mut reassembly = Reassembly::new(project);
        let mut counted = BTreeMap::new();
        let mut strays = Vec::new();
        for record in records {
            match record {
                Record::Retry(indexes) => {
                    for index in indexes {
                        if reassembly.retry(index) {
                            counted.remove(&index);
                        }
                    }
                }
                Record::Batch(results) => {
                    for result in results {
                        match reassembly.record(&result) {
                            Recorded::New => {
                                counted.insert(result.index, result);
                            }
                            Recorded::Duplicate => {}
                            Recorded::Unknown => strays.push(result),
                        }
                    }
                }
            }
        }
        History {
            counted,
            reassembly,
            strays,
        }
    }

    /// The project.
    pub fn project(&self) -> &Project {
        self.reassembly.project()
    }
}

/// The provenance of project `id` as `status P --json` shows it: the tasks commit, the
/// images it ran with, each counted outcome's provenance, and for a replicated project its
/// runs and disagreements (`replicas`).
pub fn provenance(ws: &Workspace, id: &str) -> Result<serde_json::Value, LoadError> {
    let history = History::read(ws, id)?;
    let images = ws
        .read_at_head(tasks::layout::CONFIG, &tasks::layout::images(id))
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .map(|v| v["images"].clone())
        .unwrap_or(serde_json::Value::Null);
    let outcomes: Vec<serde_json::Value> = history
        .counted
        .values()
        .map(|r| {
            serde_json::json!({
                "index": r.index,
                "status": match r.outcome { tasks::Outcome::Ok { .. } => "ok", _ => "failed" },
                "digest": r.digest,
                "provenance": r.provenance,
            })
        })
        .collect();
    let mut shown = serde_json::json!({
        "tasks_commit": tracking::tasks_commit_of(ws, id),
        "images": images,
        "outcomes": outcomes,
    });
    // A replicated project: every run, and the tasks whose replicas disagreed.
    if let Some(replicas) = crate::replicas::report(ws, history.project()) {
        shown["replicas"] = replicas;
    }
    Ok(shown)
}
