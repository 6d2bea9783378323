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
///
/// Compact by design (a project may have a million tasks): one [`Slot`] of 16 bytes per
/// task, the standard outputs of command tasks one after the other in one string, and the
/// reasons of failed tasks (few) by index. A duplicate is refused before anything is stored,
/// so nothing is ever stored twice.
#[derive(Debug, Clone)]
pub struct Reassembly {
    project: Project,
    slots: Vec<Slot>,
    /// The standard outputs kept, one after the other ([`Slot::value`] is an offset here).
    stdout: String,
    /// The reasons of the failed outcomes, by task index.
    failures: BTreeMap<u32, String>,
    /// Tasks with an outcome (ok or failed).
    done: usize,
}

/// What one task has, in 16 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The solutions counted ([`Kept::Nqueens`]) or the offset of the standard output in
    /// [`Reassembly::stdout`] ([`Kept::Exec`]).
    value: u64,
    /// The length of the standard output ([`Kept::Exec`]).
    len: u32,
    kept: Kept,
}

/// Which outcome a task has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Kept {
    /// No outcome yet.
    #[default]
    Nothing,
    /// Succeeded with an N-queens count.
    Nqueens,
    /// Succeeded with a standard output.
    Exec,
    /// Failed (the reason is in [`Reassembly::failures`]).
    Failed,
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
        let slots = vec![Slot::default(); project.tasks.len()];
        Reassembly {
            project,
            slots,
            stdout: String::new(),
            failures: BTreeMap::new(),
            done: 0,
        }
    }

    /// The project being reassembled.
    pub fn project(&self) -> &Project {
        &self.project
    }

    /// Offers a result; keeps it unless its task already has one or does not exist.
    pub fn record(&mut self, result: &TaskResult) -> Recorded {
        if result.project != self.project.id {
            return Recorded::Unknown;
        }
        let Some(slot) = self.slots.get_mut(result.index as usize) else {
            return Recorded::Unknown;
        };
        if slot.kept != Kept::Nothing {
            return Recorded::Duplicate;
        }
        *slot = match &result.outcome {
            Outcome::Ok {
                output: TaskOutput::Nqueens { solutions },
            } => Slot {
                value: *solutions,
                len: 0,
                kept: Kept::Nqueens,
            },
            Outcome::Ok {
                output: TaskOutput::Exec { stdout },
            } => {
                // No message through the broker holds 4 GiB; were one to, its output would be
                // cut at a character boundary, never a panic.
                let mut len = stdout.len().min(u32::MAX as usize);
                while !stdout.is_char_boundary(len) {
                    len -= 1;
                }
                let value = self.stdout.len() as u64;
                self.stdout.push_str(&stdout[..len]);
                Slot {
                    value,
                    len: len as u32,
                    kept: Kept::Exec,
                }
            }
            Outcome::Failed { reason } => {
                self.failures.insert(result.index, reason.clone());
                Slot {
                    kept: Kept::Failed,
                    ..Slot::default()
                }
            }
        };
        self.done += 1;
        Recorded::New
    }

    /// Forgets task `index`'s outcome if it is a failure, so that the task can be run again
    /// and its next outcome counts (`resume --retry-failed`); returns whether it was one.
    pub fn retry(&mut self, index: u32) -> bool {
        if self.failures.remove(&index).is_none() {
            return false;
        }
        self.slots[index as usize] = Slot::default();
        self.done -= 1;
        true
    }

    /// The indexes of the tasks whose outcome is a failure, in order.
    pub fn failed_indexes(&self) -> Vec<u32> {
        self.failures.keys().copied().collect()
    }

    /// Whether task `index` already has an outcome.
    pub fn has(&self, index: u32) -> bool {
        self.slots
            .get(index as usize)
            .is_some_and(|s| s.kept != Kept::Nothing)
    }

    /// How many tasks have an outcome.
    pub fn done(&self) -> usize {
        self.done
    }

    /// How many tasks failed, in O(1) (for progress; [`Reassembly::result`] walks every task).
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// Whether every task has an outcome (failed or not).
    pub fn finished(&self) -> bool {
        self.done == self.project.tasks.len()
    }

    /// The standard output kept in `slot` ([`Kept::Exec`]).
    fn stdout_of(&self, slot: &Slot) -> &str {
        let start = slot.value as usize;
        &self.stdout[start..start + slot.len as usize]
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
        for (task, slot) in self.project.tasks.iter().zip(&self.slots) {
            match slot.kept {
                Kept::Nothing => missing.push(task.index),
                Kept::Failed => failed.push(FailedTask {
                    index: task.index,
                    reason: self.failures.get(&task.index).cloned().unwrap_or_default(),
                }),
                Kept::Nqueens | Kept::Exec => {}
            }
            match &task.spec {
                TaskSpec::Nqueens { weight, .. } => {
                    let total = solutions.get_or_insert(0u64);
                    match slot.kept {
                        // Checked: a total that does not fit is an error, never a wrong
                        // number.
                        Kept::Nqueens => {
                            match weight
                                .checked_mul(slot.value)
                                .and_then(|w| total.checked_add(w))
                            {
                                Some(sum) => *total = sum,
                                None => overflow = true,
                            }
                        }
                        Kept::Exec => inconsistent = true,
                        Kept::Nothing | Kept::Failed => {}
                    }
                }
                TaskSpec::Exec(_) => outputs.push(match slot.kept {
                    Kept::Exec => Some(self.stdout_of(slot).to_string()),
                    Kept::Nqueens => {
                        inconsistent = true;
                        None
                    }
                    Kept::Nothing | Kept::Failed => None,
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
