//! Computing one task.

use tasks::Task;

/// Computes the task in `input` and returns its result as JSON. A task that cannot be read
/// is an error (the executant validated it before, so this is a broken pipe, not bad input);
/// a task that cannot be computed here is a failed result.
pub fn answer(input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let task = Task::from_json(input)?;
    Ok(tasks::compute::compute(&task).to_json())
}
