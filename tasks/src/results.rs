//! What a message of a project's results queue carries: one result (the message every build
//! writes for a result that is ready alone, its trace context in a `traceparent` header), or
//! a batch of results of one project (an executant publishing results that were ready
//! together, each with its task's trace context). Every reader of results queues parses
//! bodies through [`parse`], so both are read the same way.
//!
//! A batch is `{"batch": 1, "results": [{"traceparent": "00-...", "result": {...}}, ...]}`;
//! each `result` is exactly a message of one result, with its own `schema` field.

use serde::{Deserialize, Serialize};

use crate::model::{check_schema, validate_project_id, TaskError, TaskResult};

/// The version of the batch envelope this build writes and reads.
pub const BATCH_VERSION: u32 = 1;

/// One result read from a results message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The W3C `traceparent` of the result's task, for an entry of a batch that carried one
    /// (a message of one result carries it as a header instead: `None` here).
    pub traceparent: Option<String>,
    /// The result.
    pub result: TaskResult,
}

#[derive(Serialize)]
struct BatchOut<'a> {
    batch: u32,
    results: Vec<EntryOut<'a>>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    result: &'a TaskResult,
}

#[derive(Deserialize)]
struct EntryIn {
    #[serde(default)]
    traceparent: Option<String>,
    result: serde_json::Value,
}

/// The body of a batch of results, each with its task's `traceparent` when it had one.
pub fn batch_json<'a>(
    entries: impl IntoIterator<Item = (Option<String>, &'a TaskResult)>,
) -> Vec<u8> {
    let batch = BatchOut {
        batch: BATCH_VERSION,
        results: entries
            .into_iter()
            .map(|(traceparent, result)| EntryOut {
                traceparent,
                result,
            })
            .collect(),
    };
    serde_json::to_vec(&batch).expect("a batch always serializes")
}

/// The results a message body carries: one (a message of one result) or every entry of a
/// batch, in the batch's order. A batch of another version, or one with an entry that cannot
/// be read, is refused whole; an empty batch carries no result.
pub fn parse(bytes: &[u8]) -> Result<Vec<Received>, TaskError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| TaskError::Json(e.to_string()))?;
    let Some(entries) = value.get_mut("results").map(serde_json::Value::take) else {
        return Ok(vec![Received {
            traceparent: None,
            result: result_of(value)?,
        }]);
    };
    match value.get("batch").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(BATCH_VERSION) => {}
        found => {
            return Err(TaskError::Json(format!(
                "a batch of results of version {} (this build reads {BATCH_VERSION})",
                found.map_or_else(|| "none".to_string(), |v| v.to_string())
            )))
        }
    }
    let entries: Vec<EntryIn> =
        serde_json::from_value(entries).map_err(|e| TaskError::Json(format!("results: {e}")))?;
    entries
        .into_iter()
        .map(|entry| {
            Ok(Received {
                traceparent: entry.traceparent,
                result: result_of(entry.result)?,
            })
        })
        .collect()
}

/// A result from its JSON value: its schema version, fields and project id checked, as
/// [`TaskResult::from_json`] does.
fn result_of(value: serde_json::Value) -> Result<TaskResult, TaskError> {
    check_schema(&value)?;
    let result: TaskResult =
        serde_json::from_value(value).map_err(|e| TaskError::Json(e.to_string()))?;
    validate_project_id(&result.project)?;
    Ok(result)
}
