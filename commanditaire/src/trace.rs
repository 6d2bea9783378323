//! The trace context of a project (W3C `traceparent`, [`tasks::trace`]): made at random when
//! the project is recorded, kept in its header (`tasks/P/project.json`, field `trace_id`), and
//! read back by every run that publishes its tasks, so a resumed or republished task carries
//! the same `traceparent` as the first time.

use tasks::layout::{self, TASKS};
use tasks::trace::TraceId;

use crate::workspace::Workspace;

/// The field of the project header holding the trace id.
pub const TRACE_FIELD: &str = "trace_id";

/// A new random trace id (the operating system's generator; a failing one, which does not
/// happen on Linux, falls back to the clock and the process id).
pub fn new_trace_id() -> TraceId {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_be_bytes();
    }
    TraceId::from_bytes(bytes).unwrap_or_else(|| TraceId::derived_from("zero"))
}

/// The trace of project `id`: the one in its header, or, for a project recorded before the
/// client made traces, one derived from its id ([`TraceId::derived_from`]).
pub fn project_trace(ws: &Workspace, id: &str) -> TraceId {
    ws.read_at_head(TASKS, &layout::project_header(id))
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|header| header[TRACE_FIELD].as_str().and_then(TraceId::from_hex))
        .unwrap_or_else(|| TraceId::derived_from(id))
}
