//! Computing a task in-process: what the worker does inside its container and what `--local`
//! does on every core. The one place that maps a task kind to its computation.

use std::time::Instant;

use crate::model::Symmetry;
use crate::{Task, TaskOutput, TaskResult, TaskSpec};

/// Computes a validated task and times it. A task that cannot be computed in-process (an
/// `exec` task, whose command runs in its own image) is a failed result saying so.
pub fn compute(task: &Task) -> TaskResult {
    let start = Instant::now();
    let mut result = match &task.spec {
        TaskSpec::Nqueens {
            n,
            prefix,
            symmetry,
            ..
        } => {
            let count = match symmetry {
                Symmetry::Mirror => crate::nqueens::count_completions(*n, prefix),
                Symmetry::Classes => crate::nqueens::count_class(*n, prefix),
            };
            match count {
                Ok(solutions) => TaskResult::ok(task, TaskOutput::Nqueens { solutions }),
                Err(e) => TaskResult::failed(task, e.to_string()),
            }
        }
        TaskSpec::Exec(spec) => TaskResult::failed(
            task,
            format!(
                "exec tasks run their command in their own image ({}) through an executant, \
                 not in-process",
                spec.image
            ),
        ),
    };
    result.duration_ms = start.elapsed().as_millis() as u64;
    result
}
