//! The client's side of the queues: publishing a project's tasks and following its results.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use tasks::amqp::{self, BrokerError};
use tasks::reassemble::Recorded;

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
}

/// Reports progress to the person watching (a progress bar, or nothing).
pub trait Watcher {
    /// `done` of the project's tasks have an outcome.
    fn progress(&self, done: usize);
    /// Something the person should know.
    fn warn(&self, message: &str);
}

/// Publishes, with confirms, every task that has no outcome yet; returns how many.
pub async fn publish_missing(url: &str, tracker: &mut Tracker) -> Result<usize, FollowError> {
    let conn =
        amqp::connect_with_backoff(url, "commanditaire publish", Some(CONNECT_PATIENCE)).await?;
    let channel = amqp::confirm_channel(&conn).await?;
    amqp::declare_todo(&channel).await?;
    amqp::declare_results(&channel, &tracker.project().id).await?;
    let todo: Vec<_> = tracker.remaining();
    amqp::publish_tasks(&channel, &todo).await?;
    let _ = conn.close(200, "published".into()).await;
    if !tracker.published() {
        tracker.mark_published()?;
    }
    Ok(todo.len())
}

/// Consumes the project's results queue until every task has an outcome, recording results
/// in the tracking repository and acking each delivery only after its result was committed.
/// Reconnects with backoff when the broker goes away.
pub async fn follow(
    url: &str,
    tracker: &mut Tracker,
    watcher: &dyn Watcher,
) -> Result<(), FollowError> {
    let project = tracker.project().id.clone();
    let mut first = true;
    while !tracker.finished() {
        let patience = if first { Some(CONNECT_PATIENCE) } else { None };
        first = false;
        let conn = amqp::connect_with_backoff(url, "commanditaire follow", patience).await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|source| BrokerError::Operation {
                op: "open channel",
                source,
            })?;
        let queue = amqp::declare_results(&channel, &project).await?;
        channel
            .basic_qos(1000, BasicQosOptions::default())
            .await
            .map_err(|source| BrokerError::Operation {
                op: "set prefetch",
                source,
            })?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| BrokerError::Operation {
                op: "consume results",
                source,
            })?;
        let mut unacked: Vec<Delivery> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_progress = Instant::now();
        let mut warned_idle = false;
        loop {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        match tasks::TaskResult::from_json(&delivery.data) {
                            Ok(result) => {
                                if tracker.record(result) == Recorded::New {
                                    last_progress = Instant::now();
                                    watcher.progress(tracker.done());
                                }
                            }
                            Err(e) => watcher.warn(&format!("ignoring an unreadable result: {e}")),
                        }
                        unacked.push(delivery);
                        if tracker.due() || tracker.finished() {
                            commit_and_ack(tracker, &mut unacked, watcher).await;
                        }
                        if tracker.finished() && tracker.pending() == 0 {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        watcher.warn(&format!("results consumer failed ({e}); reconnecting"));
                        break;
                    }
                    None => {
                        watcher.warn("results consumer ended (broker restarted?); reconnecting");
                        break;
                    }
                },
                _ = tick.tick() => {
                    if tracker.due() {
                        commit_and_ack(tracker, &mut unacked, watcher).await;
                    }
                    if !warned_idle && last_progress.elapsed() > Duration::from_secs(15) {
                        if let Ok(0) = todo_consumers(&channel).await {
                            watcher.warn("no executant is consuming the todo queue: start one (`executant`); the project waits");
                            warned_idle = true;
                        }
                    }
                }
            }
        }
        if tracker.finished() {
            // Commit whatever is left before acking (the disk may need a few tries).
            while tracker.pending() > 0 {
                commit_and_ack(tracker, &mut unacked, watcher).await;
                if tracker.pending() > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            commit_and_ack(tracker, &mut unacked, watcher).await;
            let _ = channel
                .queue_delete(
                    queue.as_str().into(),
                    QueueDeleteOptions {
                        if_empty: true,
                        ..Default::default()
                    },
                )
                .await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
    Ok(())
}

/// Commits the waiting results, then acks their deliveries. If the commit fails (a full
/// disk), nothing is acked: the results stay in memory and on the broker.
async fn commit_and_ack(tracker: &mut Tracker, unacked: &mut Vec<Delivery>, watcher: &dyn Watcher) {
    if let Err(e) = tracker.flush() {
        watcher.warn(&format!("cannot record results yet ({e}); will retry"));
        return;
    }
    if let Some(last) = unacked.last() {
        let multiple = BasicAckOptions { multiple: true };
        if let Err(e) = last.ack(multiple).await {
            watcher.warn(&format!("ack failed ({e}); duplicates will be ignored"));
        }
    }
    unacked.clear();
}

async fn todo_consumers(channel: &lapin::Channel) -> Result<u32, lapin::Error> {
    let q = channel
        .queue_declare(
            amqp::TODO_QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(q.consumer_count())
}
