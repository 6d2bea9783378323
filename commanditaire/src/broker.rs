//! The client's side of the queues: publishing a project's tasks (following its results is
//! [`crate::follow`]).

use std::borrow::Cow;
use std::ops::Range;
use std::time::{Duration, Instant};

use tasks::amqp::{self, BrokerError, Nodes};
use tasks::trace::{SpanId, TraceId};
use tasks::{Priority, Task, Tasks};

use crate::failpoint;
use crate::tracking::Tracker;

/// How long the client waits for a broker before giving up with an error.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(20);
/// How long publishing may go without a confirmed window (across reconnections to other
/// nodes) before the client gives up with an error.
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(120);
/// How long one window of tasks may wait for its confirms before its node is given up.
const WINDOW_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing a connection may take (a node that stopped answering never answers).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

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
    let id = &tracker.project().id;
    let trace = crate::trace::project_trace(tracker.workspace(), id);
    let priority = crate::priority::project_priority(tracker.workspace(), id);
    failpoint::reached(failpoint::BEFORE_FIRST_WINDOW);
    let count = if tracker.done() == 0 {
        // A fresh project: its tasks as they are, not a copy of a million of them.
        let all = &tracker.project().tasks;
        publish(url, id, &trace, priority, all).await?;
        all.len()
    } else {
        let todo = tracker.remaining();
        publish(url, id, &trace, priority, &todo).await?;
        todo.len()
    };
    if !tracker.published() {
        failpoint::reached(failpoint::BEFORE_PUBLISHED_MARKER);
        tracker.mark_published()?;
    }
    Ok(count)
}

/// Tasks to publish, taken a window at a time: a few decoded tasks, or a project's compact
/// list ([`Tasks`], decoded one window at a time, never all at once).
pub trait ToPublish {
    /// How many tasks.
    fn count(&self) -> usize;
    /// The tasks at `range` (within `0..count()`).
    fn window(&self, range: Range<usize>) -> Cow<'_, [Task]>;
}

impl ToPublish for [Task] {
    fn count(&self) -> usize {
        self.len()
    }

    fn window(&self, range: Range<usize>) -> Cow<'_, [Task]> {
        Cow::Borrowed(&self[range])
    }
}

impl ToPublish for Vec<Task> {
    fn count(&self) -> usize {
        self.len()
    }

    fn window(&self, range: Range<usize>) -> Cow<'_, [Task]> {
        Cow::Borrowed(&self[range])
    }
}

impl ToPublish for Tasks {
    fn count(&self) -> usize {
        self.len()
    }

    fn window(&self, range: Range<usize>) -> Cow<'_, [Task]> {
        Cow::Owned(range.filter_map(|i| self.get(i)).collect())
    }
}

/// Publishes `tasks` of `project` to the work queue of `priority` (`todo` for normal) with
/// confirms, on a connection of its own (a
/// blocked publisher never stalls the consumer); the results queue is declared first, so
/// that no outcome is unroutable. Each task carries its span of `trace` in a `traceparent`
/// header; each is logged (debug) with its task id, trace id and span id, the project once
/// (info).
pub async fn publish(
    url: &str,
    project: &str,
    trace: &TraceId,
    priority: Priority,
    tasks: &(impl ToPublish + ?Sized),
) -> Result<(), BrokerError> {
    publish_on(&Nodes::parse(url), None, project, trace, priority, tasks).await
}

/// A publishing connection and its confirm channel, kept from one publication to the next
/// (a follower's top-ups): opening a connection and declaring the topology for each cost
/// more than publishing a quarter window. A publication that fails on the kept link goes on
/// on a new one, which declares the topology again (`todo` may have been deleted since).
#[derive(Default)]
pub struct KeptLink(tokio::sync::Mutex<Option<(amqp::Link, lapin::Channel)>>);

impl KeptLink {
    /// The link kept, if it is still open.
    async fn take(&self) -> Option<(amqp::Link, lapin::Channel)> {
        let kept = self.0.lock().await.take()?;
        if kept.0.connection.status().connected() && kept.1.status().connected() {
            Some(kept)
        } else {
            None
        }
    }

    async fn put(&self, link: amqp::Link, channel: lapin::Channel) {
        *self.0.lock().await = Some((link, channel));
    }

    /// Closes the link kept, if any.
    pub async fn close(&self) {
        if let Some((link, channel)) = self.0.lock().await.take() {
            close_channel(&channel, "published").await;
            close(&link.connection, "published").await;
        }
    }
}

/// [`publish`] to one of `nodes`, on the link `kept` holds when it has one (and keeping the
/// link there after). When publishing fails mid-way (its node lost, `todo` deleted since the
/// topology was declared), it goes on from the first window of tasks not confirmed, on a
/// new connection, another node first (the tasks of that window and the next, sent while it
/// was confirmed, may be in `todo` twice: a task may run twice, it is counted once), for as
/// long as a window is confirmed every [`PUBLISH_PATIENCE`].
pub async fn publish_on(
    nodes: &Nodes,
    kept: Option<&KeptLink>,
    project: &str,
    trace: &TraceId,
    priority: Priority,
    tasks: &(impl ToPublish + ?Sized),
) -> Result<(), BrokerError> {
    let queue = amqp::todo_queue(priority);
    let mut confirmed = 0;
    let mut last_progress = Instant::now();
    let mut reuse = match kept {
        Some(kept) => kept.take().await,
        None => None,
    };
    loop {
        let (link, mut channel) = match reuse.take() {
            Some((link, channel)) => (link, Some(channel)),
            None => {
                let link = nodes
                    .connect_with_backoff("commanditaire publish", Some(CONNECT_PATIENCE))
                    .await?;
                (link, None)
            }
        };
        let reused = channel.is_some();
        let rest = confirmed..tasks.count();
        let published = publish_windows(
            &link,
            &mut channel,
            nodes,
            project,
            trace,
            queue,
            tasks,
            rest,
            |n| {
                confirmed += n;
                last_progress = Instant::now();
            },
        )
        .await;
        let node = link.node;
        match (&published, kept, channel) {
            (Ok(()), Some(kept), Some(channel)) => kept.put(link, channel).await,
            (_, _, channel) => {
                if let Some(channel) = channel {
                    close_channel(&channel, "published").await;
                }
                close(&link.connection, "published").await;
            }
        }
        let error = match published {
            Ok(()) => {
                log_published(project, trace, queue, tasks);
                return Ok(());
            }
            Err(error) => error.into_broker(),
        };
        // Whatever failed (a queue deleted since, a node lost, confirms that did not come),
        // the rest goes on a new connection, which declares the topology first; on the kept
        // link at once, else on another node while windows keep being confirmed.
        if reused {
            continue;
        }
        if last_progress.elapsed() > PUBLISH_PATIENCE {
            return Err(error);
        }
        nodes.lost(node);
        tracing::warn!(
            confirmed,
            remaining = tasks.count() - confirmed,
            error = %error,
            "publishing failed; going on on a new connection, another node first"
        );
    }
}

/// Why publishing windows stopped.
enum WindowError {
    Broker(BrokerError),
    /// A window's confirms did not come within [`WINDOW_CONFIRM_TIMEOUT`].
    NoConfirm,
}

impl WindowError {
    fn into_broker(self) -> BrokerError {
        match self {
            WindowError::Broker(e) => e,
            WindowError::NoConfirm => BrokerError::Operation {
                op: "wait for publisher confirms",
                source: lapin::Error::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no confirm within {WINDOW_CONFIRM_TIMEOUT:?}"),
                )),
            },
        }
    }
}

/// Publishes the tasks at `range` of `tasks` window by window on `channel`, first opened on
/// `link` and the topology declared if it is `None`, calling `confirmed` with the size of
/// each window the broker confirmed.
#[allow(clippy::too_many_arguments)] // each is one fact of the publication
async fn publish_windows(
    link: &amqp::Link,
    channel: &mut Option<lapin::Channel>,
    nodes: &Nodes,
    project: &str,
    trace: &TraceId,
    queue: &str,
    tasks: &(impl ToPublish + ?Sized),
    range: Range<usize>,
    mut confirmed: impl FnMut(usize),
) -> Result<(), WindowError> {
    let channel = match channel {
        Some(channel) => channel,
        None => {
            let opened = amqp::confirm_channel(&link.connection)
                .await
                .map_err(WindowError::Broker)?;
            let channel = channel.insert(opened);
            amqp::declare_todo(channel)
                .await
                .map_err(WindowError::Broker)?;
            amqp::declare_results(channel, project, nodes)
                .await
                .map_err(WindowError::Broker)?;
            channel
        }
    };
    // Each window is sent while the broker confirms the one before: two at most unconfirmed.
    let mut unconfirmed: Option<(usize, amqp::Sent)> = None;
    for start in range.clone().step_by(amqp::PUBLISH_WINDOW) {
        let window = tasks.window(start..range.end.min(start + amqp::PUBLISH_WINDOW));
        if start == range.start + amqp::PUBLISH_WINDOW {
            failpoint::reached(failpoint::MID_WINDOW);
        }
        let sent = within_confirm_timeout(amqp::send_traced_tasks_to(
            channel,
            queue,
            &window,
            Some(trace),
        ))
        .await?;
        if let Some((count, before)) = unconfirmed.replace((window.len(), sent)) {
            within_confirm_timeout(before.confirmed()).await?;
            confirmed(count);
        }
    }
    if let Some((count, last)) = unconfirmed {
        within_confirm_timeout(last.confirmed()).await?;
        confirmed(count);
    }
    Ok(())
}

/// `op`, given at most [`WINDOW_CONFIRM_TIMEOUT`].
async fn within_confirm_timeout<T>(
    op: impl std::future::Future<Output = Result<T, BrokerError>>,
) -> Result<T, WindowError> {
    match tokio::time::timeout(WINDOW_CONFIRM_TIMEOUT, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(WindowError::Broker(e)),
        Err(_) => Err(WindowError::NoConfirm),
    }
}

/// Closes `channel` before its connection: a channel merely dropped closes in the
/// background, and the connection closing under it logged a lapin ERROR line at every
/// publish (every window a following client tops up).
async fn close_channel(channel: &lapin::Channel, why: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, why.into())).await;
}

/// Logs the tasks published: each (debug) with its task id, trace id and span id, the
/// project once (info).
fn log_published(project: &str, trace: &TraceId, queue: &str, tasks: &(impl ToPublish + ?Sized)) {
    let count = tasks.count();
    if tracing::enabled!(tracing::Level::DEBUG) {
        for start in (0..count).step_by(amqp::PUBLISH_WINDOW) {
            for task in tasks
                .window(start..count.min(start + amqp::PUBLISH_WINDOW))
                .iter()
            {
                let span_id = SpanId::of_task(trace, task.index);
                tracing::debug!(task_id = %task.id(), trace_id = %trace, %span_id, "task published");
            }
        }
    }
    tracing::info!(project, trace_id = %trace, queue, tasks = count, "tasks published");
}

/// Closes `connection`, waiting at most [`CLOSE_TIMEOUT`] for the broker's answer.
pub async fn close(connection: &lapin::Connection, why: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, why.into())).await;
}

/// How many consumers `todo` has: the executants present, which the default split of an
/// N-queens board is made for (`generate::default_depth`); `todo` is declared if missing.
/// One connection attempt per node: a client that cannot reach the broker is told so by its
/// publish, which waits for it.
pub async fn todo_consumers(url: &str) -> Result<u32, BrokerError> {
    let link = Nodes::parse(url)
        .connect("commanditaire count executants")
        .await?;
    let channel = link
        .connection
        .create_channel()
        .await
        .map_err(amqp::op("open channel"));
    let counted = match channel {
        Ok(channel) => {
            // Declared first (as publishing would): a passive declare of a queue that does
            // not exist yet closes the channel, and lapin logs that as an ERROR.
            if let Err(e) = amqp::declare_todo(&channel).await {
                close(&link.connection, "counted").await;
                return Err(e);
            }
            let declared = amqp::inspect(&channel, amqp::TODO_QUEUE).await;
            // The channel before its connection (a 404 has closed it already): lapin logs an
            // error for a channel still open when its connection closes.
            if declared.is_ok() {
                let _ = channel.close(200, "counted".into()).await;
            }
            declared
                .map(|queue| queue.consumer_count())
                .map_err(amqp::op("count the executants on todo"))
        }
        Err(e) => Err(e),
    };
    close(&link.connection, "counted").await;
    match counted {
        Err(e) if e.reply_code() == Some(404) => Ok(0),
        other => other,
    }
}
