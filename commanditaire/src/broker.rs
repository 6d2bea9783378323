//! The client's side of the queues: publishing a project's tasks (following its results is
//! [`crate::follow`]).

use std::time::Duration;

use tasks::amqp::{self, BrokerError};
use tasks::trace::{SpanId, TraceId};

use crate::tracking::Tracker;

/// How long the client waits for a broker before giving up with an error.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(20);

/// What went wrong following a project.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The broker.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The tracking repository.
    #[error(transparent)]
    Workspace(#[from] crate::workspace::WorkspaceError),
    /// The broker refused this client's exclusive consumer on the results queue: another
    /// client follows the project.
    #[error("results.{project} already has a consumer: another client follows project {project} (on this machine or another); wait for it to finish or stop it, then `commanditaire resume {project}`")]
    Followed {
        /// The project.
        project: String,
    },
    /// The project was cancelled (exit code 5).
    #[error("project {project} was cancelled (`commanditaire cancel {project}`); the results received before are recorded")]
    Cancelled {
        /// The project.
        project: String,
    },
}

/// Reports progress to the person watching (a progress bar, or nothing).
pub trait Watcher {
    /// The project has `tasks` tasks (said once, before any progress).
    fn total(&self, _tasks: usize) {}
    /// `done` of the project's tasks have an outcome.
    fn progress(&self, done: usize);
    /// Something the person should know.
    fn warn(&self, message: &str);
}

/// Publishes, with confirms, every task that has no outcome yet, then records that the
/// project was published; returns how many.
pub async fn publish_missing(url: &str, tracker: &mut Tracker) -> Result<usize, FollowError> {
    let todo: Vec<_> = tracker.remaining();
    let id = &tracker.project().id;
    let trace = crate::trace::project_trace(tracker.workspace(), id);
    publish(url, id, &trace, &todo).await?;
    if !tracker.published() {
        tracker.mark_published()?;
    }
    Ok(todo.len())
}

/// Publishes `tasks` of `project` to `todo` with confirms, on a connection of its own (a
/// blocked publisher never stalls the consumer); the results queue is declared first, so
/// that no outcome is unroutable. Each task carries its span of `trace` in a `traceparent`
/// header; each is logged (debug) with its task id, trace id and span id, the project once
/// (info).
pub async fn publish(
    url: &str,
    project: &str,
    trace: &TraceId,
    tasks: &[tasks::Task],
) -> Result<(), BrokerError> {
    let conn =
        amqp::connect_with_backoff(url, "commanditaire publish", Some(CONNECT_PATIENCE)).await?;
    let channel = amqp::confirm_channel(&conn).await?;
    amqp::declare_todo(&channel).await?;
    amqp::declare_results(&channel, project).await?;
    let published = amqp::publish_traced_tasks(&channel, tasks, Some(trace)).await;
    let _ = conn.close(200, "published".into()).await;
    if published.is_ok() {
        if tracing::enabled!(tracing::Level::DEBUG) {
            for task in tasks {
                let span_id = SpanId::of_task(trace, task.index);
                tracing::debug!(task_id = %task.id(), trace_id = %trace, %span_id, "task published");
            }
        }
        tracing::info!(project, trace_id = %trace, tasks = tasks.len(), "tasks published");
    }
    published
}
