//! A project's priority (`--priority high|normal|low`): recorded in its config
//! (`config/P/config.json`, field `priority`) when it is recorded, and read back by every run
//! that publishes its tasks, so that `resume` and republished tasks go to the same work
//! queue ([`tasks::amqp::todo_queue`]).

use tasks::layout::{self, CONFIG};
use tasks::Priority;

use crate::workspace::Workspace;

/// The field of the project's config holding its priority.
pub const PRIORITY_FIELD: &str = "priority";

/// The priority of project `id`: the one its config records, or normal for a project
/// recorded before priorities existed. A config naming an unknown priority (written by a
/// newer client, say) reads as normal, with a warning.
pub fn project_priority(ws: &Workspace, id: &str) -> Priority {
    let recorded = ws
        .read_at_head(CONFIG, &layout::config(id))
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|config| config[PRIORITY_FIELD].as_str().map(str::to_string));
    match recorded.map(|name| name.parse::<Priority>()) {
        None => Priority::Normal,
        Some(Ok(priority)) => priority,
        Some(Err(e)) => {
            tracing::warn!(project = id, error = %e, "publishing at normal priority");
            Priority::Normal
        }
    }
}
