//! Reassembly: combining task results into the project's result.
//!
//! Reassembly is idempotent: a result delivered twice counts once (the first one recorded
//! wins, by task index). A task without a result is reported by index, never guessed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Outcome, Project, ProjectSpec, TaskOutput, TaskResult, TaskSpec};

/// What happened when a result was offered to a [`Reassembly`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The result was the first for its task and was kept.
    New,
    /// A result for this task was already kept; this one was ignored.
    Duplicate,
    /// The result names a task the project does not have.
    Unknown,
}

/// Collects the results of one project's tasks.
#[derive(Debug, Clone)]
pub struct Reassembly {
    project: Project,
    results: BTreeMap<u32, Outcome>,
    /// Running count of failed outcomes, so progress needs no pass over every result.
    failed: usize,
}

/// The reassembled outcome of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectResult {
    /// The project id.
    pub project: String,
    /// What the project asked for.
    pub spec: ProjectSpec,
    /// Number of tasks in the project.
    pub tasks: u32,
    /// True when every task has an outcome and none failed: the result is exact.
    pub complete: bool,
    /// For N-queens projects: the weighted total of the solutions (exact only if `complete`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solutions: Option<u64>,
    /// For command tasks: their standard outputs in task order (`None` where missing or failed).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub outputs: Vec<Option<String>>,
    /// Tasks that failed, with their reasons.
    pub failed: Vec<FailedTask>,
    /// Tasks with no outcome yet.
    pub missing: Vec<u32>,
}

/// A task that failed, by index, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedTask {
    /// The task's index.
    pub index: u32,
    /// Why it failed.
    pub reason: String,
}

impl Reassembly {
    /// Starts the reassembly of `project`, with no result yet.
    pub fn new(project: Project) -> Reassembly {
        Reassembly {
            project,
            results: BTreeMap::new(),
            failed: 0,
        }
    }

    /// The project being reassembled.
    pub fn project(&self) -> &Project {
        &self.project
    }

    /// Offers a result; keeps it unless its task already has one or does not exist.
    pub fn record(&mut self, result: &TaskResult) -> Recorded {
        if result.project != self.project.id || result.index as usize >= self.project.tasks.len() {
            return Recorded::Unknown;
        }
        if self.results.contains_key(&result.index) {
            return Recorded::Duplicate;
        }
        if matches!(result.outcome, Outcome::Failed { .. }) {
            self.failed += 1;
        }
        self.results.insert(result.index, result.outcome.clone());
        Recorded::New
    }

    /// Forgets task `index`'s outcome if it is a failure, so that the task can be run again
    /// and its next outcome counts (`resume --retry-failed`); returns whether it was one.
    pub fn retry(&mut self, index: u32) -> bool {
        if !matches!(self.results.get(&index), Some(Outcome::Failed { .. })) {
            return false;
        }
        self.results.remove(&index);
        self.failed -= 1;
        true
    }

    /// The indexes of the tasks whose outcome is a failure, in order.
    pub fn failed_indexes(&self) -> Vec<u32> {
        self.results
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed { .. }))
            .map(|(i, _)| *i)
            .collect()
    }

    /// Whether task `index` already has an outcome.
    pub fn has(&self, index: u32) -> bool {
        self.results.contains_key(&index)
    }

    /// How many tasks have an outcome.
    pub fn done(&self) -> usize {
        self.results.len()
    }

    /// How many tasks failed, in O(1) (for progress; [`Reassembly::result`] walks every task).
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Whether every task has an outcome (failed or not).
    pub fn finished(&self) -> bool {
        self.results.len() == self.project.tasks.len()
    }

    /// The project's result as it stands.
    pub fn result(&self) -> ProjectResult {
        // An N-queens project always has a total, even with no task (N = 2 or 3 at depth 2).
        let mut solutions = match self.project.spec {
            ProjectSpec::Nqueens { .. } => Some(0u64),
            ProjectSpec::Tasks => None,
        };
        let mut outputs = Vec::new();
        let mut failed = Vec::new();
        let mut missing = Vec::new();
        let mut inconsistent = false;
        let mut overflow = false;
        for task in &self.project.tasks {
            let outcome = self.results.get(&task.index);
            match outcome {
                None => missing.push(task.index),
                Some(Outcome::Failed { reason }) => failed.push(FailedTask {
                    index: task.index,
                    reason: reason.clone(),
                }),
                Some(Outcome::Ok { .. }) => {}
            }
            let output = match outcome {
                Some(Outcome::Ok { output }) => Some(output),
                _ => None,
            };
            match (&task.spec, output) {
                (TaskSpec::Nqueens { weight, .. }, output) => {
                    let total = solutions.get_or_insert(0u64);
                    match output {
                        // Checked: a total that does not fit is an error, never a wrong
                        // number.
                        Some(TaskOutput::Nqueens { solutions: s }) => {
                            match weight.checked_mul(*s).and_then(|w| total.checked_add(w)) {
                                Some(sum) => *total = sum,
                                None => overflow = true,
                            }
                        }
                        Some(_) => inconsistent = true,
                        None => {}
                    }
                }
                (TaskSpec::Exec(_), output) => outputs.push(match output {
                    Some(TaskOutput::Exec { stdout }) => Some(stdout.clone()),
                    Some(_) => {
                        inconsistent = true;
                        None
                    }
                    None => None,
                }),
            }
        }
        if inconsistent {
            failed.push(FailedTask {
                index: u32::MAX,
                reason: "a result's output kind does not match its task's kind".into(),
            });
        }
        if overflow {
            solutions = None;
            failed.push(FailedTask {
                index: u32::MAX,
                reason: "the weighted total of the solutions overflows 64 bits: no exact \
                         result can be given"
                    .into(),
            });
        }
        ProjectResult {
            project: self.project.id.clone(),
            spec: self.project.spec.clone(),
            tasks: self.project.tasks.len() as u32,
            complete: missing.is_empty() && failed.is_empty(),
            solutions,
            outputs,
            failed,
            missing,
        }
    }
}
