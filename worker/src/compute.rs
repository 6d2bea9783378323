//! Computing one task.

use std::time::Instant;

use tasks::{Task, TaskOutput, TaskResult, TaskSpec};

/// Computes the task in `input` and returns its result as JSON. A task that cannot be read
/// is an error (the executant validated it before, so this is a broken pipe, not bad input);
/// a task that cannot be computed here is a failed result.
pub fn answer(input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let task = Task::from_json(input)?;
    Ok(compute(&task).to_json())
}

/// Computes a validated task.
pub fn compute(task: &Task) -> TaskResult {
    let start = Instant::now();
    let mut result = match &task.spec {
        TaskSpec::Nqueens { n, prefix, .. } => {
            match tasks::nqueens::count_completions(*n, prefix) {
                Ok(solutions) => TaskResult::ok(task, TaskOutput::Nqueens { solutions }),
                Err(e) => TaskResult::failed(task, e.to_string()),
            }
        }
        TaskSpec::Exec(spec) => TaskResult::failed(
            task,
            format!(
                "exec tasks run their command in their own image ({}), not in the worker",
                spec.image
            ),
        ),
    };
    result.duration_ms = start.elapsed().as_millis() as u64;
    result
}
