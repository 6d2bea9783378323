//! `commanditaire cancel P`: every executant is told (through [`amqp::CONTROL_EXCHANGE`]),
//! stops the project's containers and answers; the cancellation is recorded in the tracking
//! repository with the counts at that moment; then the project's results queue is deleted.
//!
//! The order matters: a follower of the project exits once the record is at HEAD (exit
//! code 5), and the results queue is deleted after the record, so a follower never declares
//! it again; every executant that answered publishes nothing more for the project.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{FieldTable, ShortString};
use serde::Serialize;
use tasks::amqp::{self, BrokerError, Cancellation, Stopped};
use tasks::layout::{self, TRACKING};

use crate::broker::CONNECT_PATIENCE;
use crate::tracking::{self, BatchPolicy, LoadError, Tracker};
use crate::workspace::{Workspace, WorkspaceError};

/// How long `cancel` waits for the executants' answers.
pub const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Why a project could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// Every task of the project has an outcome (exit code 2).
    #[error("project {0} is complete: there is nothing to cancel")]
    Finished(String),
    /// The project was cancelled before (exit code 2).
    #[error("project {0} was already cancelled")]
    AlreadyCancelled(String),
    /// The project is not in the workspace, or cannot be read back.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The cancellation could not be recorded.
    #[error("recording the cancellation")]
    Record(#[source] WorkspaceError),
    /// The executants could not be told: nothing was recorded.
    #[error("telling the executants that project {project} is cancelled (nothing was recorded: run `commanditaire cancel {project}` again)")]
    Broker {
        /// The project.
        project: String,
        /// What the broker said.
        #[source]
        source: BrokerError,
    },
}

/// What `tracking/P/cancelled.json` holds, and what `cancel` reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
// broker-api's document has named it `CancelledView` since it answered with a copy of it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = CancelledView))]
pub struct Cancelled {
    /// The project.
    pub project: String,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Tasks of the project.
    pub tasks: u32,
    /// Tasks with an outcome recorded at that moment.
    pub done: u32,
    /// Of those, failed ones.
    pub failed: u32,
    /// Tasks with no outcome recorded: not run, stopped, or run with the result dropped.
    pub not_run: u32,
    /// Executants that answered (each stopped the project's containers).
    pub executants: usize,
    /// Executants consuming `todo` when the cancellation was sent.
    pub executants_expected: u32,
    /// Containers of the project the executants stopped.
    pub containers_stopped: usize,
    /// From sending the cancellation to the last answer, in milliseconds.
    pub stop_ms: u64,
}

/// Whether project `id` has a cancellation recorded at HEAD.
pub fn is_cancelled(ws: &Workspace, id: &str) -> bool {
    ws.read_at_head(TRACKING, &layout::cancellation(id))
        .is_some()
}

/// Cancels project `id` of the workspace at `root` through the broker at `url`.
pub async fn cancel(url: &str, ws: &Workspace, id: &str) -> Result<Cancelled, CancelError> {
    let project = tracking::load_project(ws, id)?;
    if is_cancelled(ws, id) {
        return Err(CancelError::AlreadyCancelled(id.to_string()));
    }
    let complete = tracking::progress(ws, Some(id))?
        .first()
        .is_some_and(|p| p.complete);
    if complete {
        return Err(CancelError::Finished(id.to_string()));
    }
    let broker = |source| CancelError::Broker {
        project: id.to_string(),
        source,
    };
    let conn = amqp::connect_with_backoff(url, "commanditaire cancel", Some(CONNECT_PATIENCE))
        .await
        .map_err(broker)?;
    let told = tell_executants(&conn, id).await.map_err(broker);
    let (answers, expected, stop) = match told {
        Ok(t) => t,
        Err(e) => {
            let _ = conn.close(200, "failed".into()).await;
            return Err(e);
        }
    };
    // The counts at this moment: the follower may still be committing what it received.
    let tracker = Tracker::load(ws, project, BatchPolicy::default());
    let result = tracker.result();
    let tasks = result.tasks;
    let done = tracker.done() as u32;
    let record = Cancelled {
        project: id.to_string(),
        at: tracking::now_rfc3339(),
        tasks,
        done,
        failed: result.failed.len() as u32,
        not_run: tasks - done,
        executants: answers.len(),
        executants_expected: expected,
        containers_stopped: answers.iter().map(|a| a.containers).sum(),
        stop_ms: stop.as_millis() as u64,
    };
    let mut body = serde_json::to_vec_pretty(&record).expect("serializable");
    body.push(b'\n');
    ws.commit(
        TRACKING,
        &[(layout::cancellation(id), body)],
        &format!(
            "Project {id} cancelled: {done}/{tasks} tasks done, {} failed, {} not run; {} containers stopped by {} executants",
            record.failed, record.not_run, record.containers_stopped, record.executants
        ),
    )
    .map_err(CancelError::Record)?;
    // Every executant that answered publishes nothing more for the project, and the
    // follower exits on the record: nothing more can arrive.
    let deleted = async {
        let channel = conn
            .create_channel()
            .await
            .map_err(amqp::op("open channel"))?;
        channel
            .queue_delete(
                amqp::results_queue(id).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .map_err(amqp::op("delete the results queue"))
    };
    if let Err(e) = deleted.await {
        tracing::warn!(error = %e, "the results queue of a cancelled project was not deleted");
    }
    let _ = conn.close(200, "cancelled".into()).await;
    Ok(record)
}

/// Publishes the cancellation with a queue of its own to answer to, and collects answers
/// until every executant consuming `todo` answered or [`STOP_PATIENCE`] passed.
async fn tell_executants(
    conn: &lapin::Connection,
    id: &str,
) -> Result<(Vec<Stopped>, u32, Duration), BrokerError> {
    let channel = amqp::confirm_channel(conn).await?;
    amqp::declare_control(&channel).await?;
    amqp::declare_todo(&channel).await?;
    // Each executant consumes `todo` once (a stream does not report its consumers here).
    let expected = amqp::inspect(&channel, amqp::TODO_QUEUE)
        .await
        .map_err(amqp::op("count the executants"))?
        .consumer_count();
    let replies = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp::op("declare the answers queue"))?;
    let mut answers_in = channel
        .basic_consume(
            replies.name().as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp::op("consume the answers"))?;
    let body = serde_json::to_vec(&Cancellation {
        project: id.to_string(),
    })
    .expect("serializable");
    let props = amqp::properties(&format!("cancel/{id}"), None)
        .with_reply_to(ShortString::from(replies.name().as_str()));
    let sent = Instant::now();
    amqp::publish_with_properties(&channel, amqp::CONTROL_EXCHANGE, "", &body, props).await?;
    let mut answers: Vec<Stopped> = Vec::new();
    let mut last = Duration::ZERO;
    let deadline = tokio::time::Instant::now() + STOP_PATIENCE;
    while answers.len() < expected as usize {
        let next = tokio::time::timeout_at(deadline, answers_in.next()).await;
        let Ok(Some(Ok(delivery))) = next else { break };
        if let Ok(answer) = serde_json::from_slice::<Stopped>(&delivery.data) {
            if answer.project == id {
                last = sent.elapsed();
                answers.push(answer);
            }
        }
    }
    Ok((answers, expected, last))
}
