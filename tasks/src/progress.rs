//! A project's progress as the client records it in the tracking repository
//! (`<project>/progress.json`, [`crate::layout::progress`]), read back by `commanditaire status` and broker-api.

use serde::{Deserialize, Serialize};

use crate::model::ProjectSpec;

/// A project's progress at the last tracking commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The model version.
    pub schema: u32,
    /// The project id.
    pub project: String,
    /// What the project asked for.
    pub spec: ProjectSpec,
    /// Number of tasks.
    pub tasks: u32,
    /// Tasks with an outcome (succeeded or failed).
    pub done: u32,
    /// Tasks that failed.
    pub failed: u32,
    /// True once every task has an outcome and the result was written.
    pub complete: bool,
    /// When this was recorded (RFC 3339, UTC).
    pub updated: String,
}

impl Progress {
    /// The fraction of tasks with an outcome, from 0.0 to 1.0 (1.0 for an empty project).
    pub fn fraction(&self) -> f64 {
        if self.tasks == 0 {
            1.0
        } else {
            self.done as f64 / self.tasks as f64
        }
    }
}
