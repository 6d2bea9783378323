//! Following a project's results queue until every task has an outcome.
//!
//! The consumer is exclusive (one follower per project, wherever it runs). Results and the
//! project's dead-lettered tasks are recorded and acked only after their commit; anything
//! else is dropped (acked) at once and counted, so it never fills the prefetch window.
//! Tasks with no outcome that are in no queue are published again ([`LostTasks`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tasks::amqp::{self, BrokerError, Nodes};
use tasks::reassemble::Recorded;
use tasks::trace::TraceParent;

use crate::broker::{close, FollowError, Watcher, CONNECT_PATIENCE};
use crate::inbox::{self, Incoming};
use crate::tracking::Tracker;
use crate::window::{Feed, Window};

/// How long the results queue must stay silent before the follower looks for lost tasks.
pub const QUIET: Duration = Duration::from_secs(3);
/// How often the follower looks for a cancellation recorded at HEAD.
const CANCEL_CHECK: Duration = Duration::from_millis(500);
/// How often the follower looks at the queues' depths.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// The task timeout assumed for a task that names none (the executant's default).
pub const ASSUMED_TASK_TIMEOUT: Duration = Duration::from_secs(600);

/// How a follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Right after this client published every task.
    Fresh,
    /// Picking up a project an earlier client published (`resume`).
    Resumed,
}

/// What a follower saw besides results.
#[derive(Debug, Clone, Copy, Default)]
pub struct Followed {
    /// Messages on the results queue that were neither a result nor a dead-lettered task of
    /// the project, dropped.
    pub junk: usize,
    /// Tasks published again because they had no outcome and were in no queue.
    pub republished: usize,
    /// Tasks published as the window moved on ([`crate::window`]).
    pub published: usize,
}

/// Consumes the project's results queue until every task has an outcome, recording results
/// in the tracking repository and acking each delivery only after its result was committed.
/// Reconnects with backoff when the broker goes away.
pub async fn follow(
    url: &str,
    tracker: &mut Tracker,
    watcher: &dyn Watcher,
    start: Start,
) -> Result<Followed, FollowError> {
    follow_windowed(url, tracker, watcher, start, None).await
}

/// [`follow`], publishing the tasks `window` holds back as outcomes arrive (fair share,
/// [`crate::window`]); only the tasks it published count as possibly lost.
pub async fn follow_windowed(
    url: &str,
    tracker: &mut Tracker,
    watcher: &dyn Watcher,
    start: Start,
    mut window: Option<Window>,
) -> Result<Followed, FollowError> {
    let project = tracker.project().id.clone();
    let priority = crate::priority::project_priority(tracker.workspace(), &project);
    let nodes = Arc::new(Nodes::parse(url));
    let mut since_top_up = 0;
    // Publishes the window's batches in the background, across reconnections.
    let trace = crate::trace::project_trace(tracker.workspace(), &project);
    let mut feed = Feed::new(nodes.clone(), trace, priority);
    let mut seen = Followed::default();
    let mut lost = LostTasks::new(start, tracker, priority);
    let mut first = true;
    while !tracker.finished() {
        if crate::cancel::is_cancelled(tracker.workspace(), &project) {
            feed.close().await;
            return Err(FollowError::Cancelled { project });
        }
        let patience = if first { Some(CONNECT_PATIENCE) } else { None };
        let link = nodes
            .connect_with_backoff("commanditaire follow", patience)
            .await?;
        let conn = &link.connection;
        let Some(opened) = answered(open_follower(conn, &project, &nodes, first)).await else {
            nodes.lost(link.node);
            watcher.warn("the broker did not answer while starting to follow; reconnecting");
            close(conn, "reconnecting").await;
            continue;
        };
        let (channel, probe, queue, mut consumer) = match opened {
            Ok(opened) => opened,
            Err(Opened::Refused) => {
                close(conn, "refused").await;
                if first {
                    return Err(FollowError::Followed { project });
                }
                // After a reconnect, the broker may not have noticed yet that our previous
                // connection is gone.
                watcher.warn(&format!(
                    "results.{project} still has another consumer (our previous connection?); retrying"
                ));
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            // The node went away while the follower was starting: another one takes over.
            Err(Opened::Broker(e)) if !conn.status().connected() => {
                nodes.lost(link.node);
                watcher.warn(&format!(
                    "lost the broker while starting to follow ({e}); reconnecting"
                ));
                close(conn, "reconnecting").await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(Opened::Broker(e)) => return Err(e.into()),
        };
        if first {
            warn_few_executants(&probe, tracker.replicas(), watcher).await;
        }
        first = false;
        let mut runs_channel = None;
        let mut unacked: Vec<Delivery> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_progress = Instant::now();
        let mut last_delivery = Instant::now();
        let mut warned_idle = false;
        let mut cancel_check = Instant::now();
        let mut cancelled = false;
        loop {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        last_delivery = Instant::now();
                        // A message holds one result or a batch of them: it is acked after
                        // the commit of its results, or at once if it holds none.
                        let mut holds_results = false;
                        let mut junk = Vec::new();
                        for (incoming, traceparent) in
                            inbox::classify(tracker.project(), &delivery.data, &delivery.properties)
                        {
                            let offered = match incoming {
                                Incoming::Result(r) | Incoming::DeadLettered(r) => {
                                    log_outcome(&r, traceparent.as_ref());
                                    tracker.record(r)
                                }
                                Incoming::Junk(why) => {
                                    junk.push(why);
                                    continue;
                                }
                            };
                            match offered {
                                Recorded::New => {
                                    holds_results = true;
                                    last_progress = Instant::now();
                                    lost.progress();
                                    since_top_up += 1;
                                }
                                Recorded::Duplicate => holds_results = true,
                                Recorded::Unknown => junk.push(
                                    "a result for a task the project does not have".to_string(),
                                ),
                            }
                        }
                        for why in &junk {
                            count_junk(why, &mut seen, watcher);
                        }
                        if !holds_results {
                            ack_junk(&delivery).await;
                            continue;
                        }
                        watcher.progress(tracker.done());
                        unacked.push(delivery);
                        publish_runs(conn, &mut runs_channel, tracker, &trace, priority, watcher).await;
                        if (tracker.due() || tracker.finished())
                            && !commit_and_ack(tracker, &mut unacked, watcher).await
                        {
                            nodes.lost(link.node);
                            break;
                        }
                        if let Some(w) = window.as_mut().filter(|w| since_top_up >= w.step()) {
                            since_top_up = 0;
                            feed.top_up(w, tracker, watcher);
                        }
                        if tracker.finished() && tracker.pending() == 0 {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        watcher.warn(&format!("results consumer failed ({e}); reconnecting"));
                        if !conn.status().connected() {
                            nodes.lost(link.node);
                        }
                        break;
                    }
                    None => {
                        watcher.warn("results consumer ended (broker restarted?); reconnecting");
                        if !conn.status().connected() {
                            nodes.lost(link.node);
                        }
                        break;
                    }
                },
                outcome = feed.finished(), if feed.busy() => {
                    if let Some(w) = window.as_mut() {
                        seen.published += feed.settle(w, outcome, tracker, watcher);
                    }
                }
                _ = tick.tick() => {
                    // A consumer whose connection died (a missed heartbeat) may not end.
                    if !conn.status().connected() || !channel.status().connected() {
                        watcher.warn("lost the connection to the broker; reconnecting");
                        if !conn.status().connected() {
                            nodes.lost(link.node);
                        }
                        break;
                    }
                    if tracker.due() && !commit_and_ack(tracker, &mut unacked, watcher).await {
                        nodes.lost(link.node);
                        break;
                    }
                    publish_runs(conn, &mut runs_channel, tracker, &trace, priority, watcher).await;
                    if let Some(w) = window.as_mut() {
                        since_top_up = 0;
                        feed.top_up(w, tracker, watcher);
                    }
                    if cancel_check.elapsed() >= CANCEL_CHECK {
                        cancel_check = Instant::now();
                        if crate::cancel::is_cancelled(tracker.workspace(), &project) {
                            cancelled = true;
                            break;
                        }
                    }
                    if !warned_idle && last_progress.elapsed() > Duration::from_secs(15) {
                        match answered(todo_consumers(&channel)).await {
                            Some(Ok(0)) => {
                                watcher.warn("no executant is consuming the todo queue: start one (`executant`); the project waits");
                                warned_idle = true;
                            }
                            Some(_) => {}
                            None => {
                                watcher.warn(UNANSWERED);
                                nodes.lost(link.node);
                                break;
                            }
                        }
                    }
                    // Tasks being published are not lost, though they may be in no queue yet.
                    let lost_now = match feed.busy() {
                        true => Some(false),
                        false => answered(lost.due(&probe, &queue, last_delivery, tracker)).await,
                    };
                    let Some(lost_now) = lost_now else {
                        watcher.warn(UNANSWERED);
                        nodes.lost(link.node);
                        break;
                    };
                    if lost_now && tracker.replicas() > 1 {
                        // Published at the next tick, each avoiding the executants that
                        // already answered its task.
                        let again = tracker.want_runs_again();
                        seen.republished += again;
                        watcher.warn(&format!(
                            "{again} tasks had no outcome agreed and no run in any queue: asking for one more run of each"
                        ));
                    } else if lost_now {
                        let mut tasks = tracker.remaining();
                        if let Some(w) = &window {
                            tasks.retain(|t| w.published(t.index));
                        }
                        let published =
                            crate::broker::publish_on(&nodes, None, &project, &trace, priority, &tasks);
                        match published.await {
                            Ok(()) if tasks.is_empty() => {}
                            Ok(()) => {
                                seen.republished += tasks.len();
                                watcher.warn(&format!(
                                    "{} tasks had no outcome and were in no queue: published them again (a task run twice counts once)",
                                    tasks.len()
                                ));
                            }
                            Err(e) => {
                                watcher.warn(&format!(
                                    "cannot publish the {} lost tasks again yet ({e}); will retry",
                                    tasks.len()
                                ));
                                lost.retry_soon();
                            }
                        }
                    }
                }
            }
        }
        if cancelled {
            // What was received is recorded before the follower goes.
            commit_and_ack(tracker, &mut unacked, watcher).await;
            let _ = conn.close(200, "cancelled".into()).await;
            feed.close().await;
            return Err(FollowError::Cancelled { project });
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
        close(conn, "done").await;
    }
    feed.close().await;
    if seen.junk > 0 {
        watcher.warn(&format!(
            "dropped {} messages of results.{project} that were not results of this project",
            seen.junk
        ));
    }
    Ok(seen)
}

/// Publishes the runs a replicated project needs now (the next replica of each task just
/// answered, or lost runs asked again), on a confirm channel of `conn` opened once; runs
/// that could not be published are put back, for the next tick.
async fn publish_runs(
    conn: &lapin::Connection,
    channel: &mut Option<Channel>,
    tracker: &mut Tracker,
    trace: &tasks::trace::TraceId,
    priority: tasks::Priority,
    watcher: &dyn Watcher,
) {
    if tracker.replicas() <= 1 {
        return;
    }
    let runs = tracker.take_wanted_runs();
    if runs.is_empty() {
        return;
    }
    if channel.as_ref().is_none_or(|c| !c.status().connected()) {
        match amqp::confirm_channel(conn).await {
            Ok(c) => *channel = Some(c),
            Err(e) => {
                watcher.warn(&format!(
                    "cannot publish replica runs yet ({e}); will retry"
                ));
                tracker.put_back_runs(runs);
                return;
            }
        }
    }
    let list: Vec<(&tasks::Task, &[String])> =
        runs.iter().map(|(t, a)| (t, a.as_slice())).collect();
    let channel_ref = channel.as_ref().expect("opened above");
    match crate::replicas::publish(channel_ref, trace, priority, &list).await {
        Ok(()) => tracing::debug!(runs = runs.len(), "replica runs published"),
        Err(e) => {
            watcher.warn(&format!(
                "cannot publish replica runs yet ({e}); will retry"
            ));
            *channel = None;
            tracker.put_back_runs(runs);
        }
    }
}

/// Tells the person when fewer executants consume `todo` than a replicated project needs.
async fn warn_few_executants(probe: &Channel, replicas: u32, watcher: &dyn Watcher) {
    if replicas <= 1 {
        return;
    }
    if let Ok(consumers) = todo_consumers(probe).await {
        if consumers < replicas {
            watcher.warn(&format!(
                "--replicas {replicas}: {consumers} executants consume todo; each task needs {replicas} different ones (one more when they disagree), or it fails after {} runs",
                crate::replicas::max_runs(replicas)
            ));
        }
    }
}

/// Logs (debug) an outcome as it arrives, with its task id and the trace context it came
/// with (the executant passes on its task's `traceparent`: a message header, or the entry's
/// own in a batch).
fn log_outcome(result: &tasks::TaskResult, traceparent: Option<&TraceParent>) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let task_id = format!("{}/{}", result.project, result.index);
    let status = match result.outcome {
        tasks::Outcome::Ok { .. } => "ok",
        _ => "failed",
    };
    match traceparent {
        Some(tp) => {
            tracing::debug!(%task_id, trace_id = %tp.trace_id, span_id = %tp.parent_id, status, "outcome received")
        }
        None => tracing::debug!(%task_id, status, "outcome received (no traceparent)"),
    }
}

/// The rule for tasks that have no outcome and are in no queue (their results lost, say):
/// they are published again when
/// - the results queue is drained and has been silent for [`QUIET`],
/// - `todo` has no message ready, and
/// - either the follower was resumed and no new result came since (checked once `todo`
///   is found empty), or `todo` has stayed empty for longer than the longest timeout of
///   the outstanding tasks plus a minute (by then any of them that an executant had taken
///   would have produced an outcome).
///
/// A task running at that moment may run twice; its outcome is counted once.
struct LostTasks {
    /// The project's work queue.
    todo: &'static str,
    quick: bool,
    todo_empty_since: Option<Instant>,
    next_probe: Instant,
    window: Duration,
    warned: bool,
}

impl LostTasks {
    fn new(start: Start, tracker: &Tracker, priority: tasks::Priority) -> LostTasks {
        let longest = tracker
            .remaining()
            .iter()
            .map(|t| {
                t.timeout_secs
                    .map_or(ASSUMED_TASK_TIMEOUT, Duration::from_secs)
            })
            .max()
            .unwrap_or(ASSUMED_TASK_TIMEOUT);
        LostTasks {
            todo: amqp::todo_queue(priority),
            quick: start == Start::Resumed,
            todo_empty_since: None,
            next_probe: Instant::now() + QUIET,
            window: longest + Duration::from_secs(60),
            warned: false,
        }
    }

    /// A new outcome came: tasks are flowing.
    fn progress(&mut self) {
        self.quick = false;
    }

    /// Publishing the lost tasks failed: look again at the next probe.
    fn retry_soon(&mut self) {
        self.quick = true;
    }

    /// Whether the outstanding tasks should be published again now.
    async fn due(
        &mut self,
        probe: &Channel,
        results_queue: &str,
        last_delivery: Instant,
        tracker: &Tracker,
    ) -> bool {
        if tracker.finished() || Instant::now() < self.next_probe {
            return false;
        }
        self.next_probe = Instant::now() + PROBE_EVERY;
        let depths = match (
            ready(probe, self.todo).await,
            ready(probe, results_queue).await,
        ) {
            (Ok(todo), Ok(results)) => (todo, results),
            (Err(e), _) | (_, Err(e)) => {
                if !self.warned {
                    tracing::warn!(error = %e, "cannot read the queues' depths");
                    self.warned = true;
                }
                return false;
            }
        };
        let (todo, results) = depths;
        if todo > 0 {
            self.todo_empty_since = None;
            return false;
        }
        let empty_since = *self.todo_empty_since.get_or_insert_with(Instant::now);
        if results > 0 || last_delivery.elapsed() < QUIET {
            return false;
        }
        if self.quick || empty_since.elapsed() >= self.window {
            self.quick = false;
            self.todo_empty_since = None;
            return true;
        }
        false
    }
}

/// Messages ready in `queue` (a passive declaration: the queue must exist).
async fn ready(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let q = amqp::inspect(channel, queue).await?;
    Ok(q.message_count())
}

/// Why a follower could not start on a connection.
enum Opened {
    /// Another consumer holds the results queue.
    Refused,
    /// The broker failed (or refused something else).
    Broker(BrokerError),
}

impl From<BrokerError> for Opened {
    fn from(e: BrokerError) -> Self {
        Opened::Broker(e)
    }
}

/// Opens the follower's channels on `conn`, declares the topology and QoS again, and starts
/// the exclusive consumer of the project's results queue: the consuming channel, a probe
/// channel, the queue's name and the consumer.
///
/// On a cluster the results queue is a quorum queue, whose exclusive consumers RabbitMQ
/// 3.10 does not enforce: a starting follower (`first`) that finds another consumer beside
/// its own is refused all the same, before it reads a single delivery.
async fn open_follower(
    conn: &lapin::Connection,
    project: &str,
    nodes: &Nodes,
    first: bool,
) -> Result<(Channel, Channel, String, Consumer), Opened> {
    let channel = open_channel(conn).await?;
    let probe = open_channel(conn).await?;
    amqp::declare_todo(&channel).await?;
    let queue = amqp::declare_results(&channel, project, nodes).await?;
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .map_err(amqp::op("set prefetch"))?;
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let consumed = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            exclusive,
            FieldTable::default(),
        )
        .await
        .map_err(amqp::op("consume results"));
    let consumer = match consumed {
        Ok(consumer) => consumer,
        Err(e) if e.reply_code() == Some(403) => return Err(Opened::Refused),
        Err(e) => return Err(e.into()),
    };
    if nodes.is_cluster() && first {
        let consumers = consumers(&probe, &queue)
            .await
            .map_err(amqp::op("count the results queue's consumers"))?;
        if consumers > 1 {
            return Err(Opened::Refused);
        }
    }
    Ok((channel, probe, queue, consumer))
}

async fn open_channel(conn: &lapin::Connection) -> Result<Channel, BrokerError> {
    conn.create_channel()
        .await
        .map_err(amqp::op("open channel"))
}

/// Counts a message (or an entry of a batch) that is not for this project, and tells the
/// person about the first one.
fn count_junk(why: &str, seen: &mut Followed, watcher: &dyn Watcher) {
    seen.junk += 1;
    tracing::debug!(reason = why, "dropping a message of the results queue");
    if seen.junk == 1 {
        watcher.warn(&format!(
            "dropping a message of the results queue ({why}); further ones are counted"
        ));
    }
}

/// Acks a message holding nothing for this project at once: it must never hold a prefetch
/// slot.
async fn ack_junk(delivery: &Delivery) {
    match answered(delivery.ack(BasicAckOptions::default())).await {
        Some(Ok(_)) => {}
        Some(Err(e)) => tracing::warn!(error = %e, "ack of a dropped message failed"),
        None => tracing::warn!("the broker did not take the ack of a dropped message"),
    }
}

/// What the follower says when the broker did not take an operation within [`amqp::OP_TIMEOUT`].
const UNANSWERED: &str = "the broker did not answer within 10 s; reconnecting";

/// `op`, or `None` when it did not complete within [`amqp::OP_TIMEOUT`] (10 s, the bound
/// every long-lived client shares: [`amqp::answered`]). lapin may leave an operation sent as
/// the connection breaks pending forever (seen with a cluster node SIGKILLed: the follower
/// waited with no connection at all); past this, the connection counts as lost and the
/// follower reconnects.
async fn answered<T>(op: impl std::future::Future<Output = T>) -> Option<T> {
    amqp::answered(op).await
}

/// Commits the waiting results, then acks their deliveries. If the commit fails (a full
/// disk), nothing is acked: the results stay in memory and on the broker. False when the
/// broker did not take the ack within [`amqp::OP_TIMEOUT`]: the connection is then to be replaced.
async fn commit_and_ack(
    tracker: &mut Tracker,
    unacked: &mut Vec<Delivery>,
    watcher: &dyn Watcher,
) -> bool {
    if let Err(e) = tracker.flush() {
        watcher.warn(&format!("cannot record results yet ({e}); will retry"));
        return true;
    }
    let mut taken = true;
    if let Some(last) = unacked.last() {
        let multiple = BasicAckOptions { multiple: true };
        match answered(last.ack(multiple)).await {
            Some(Ok(_)) => {}
            Some(Err(e)) => watcher.warn(&format!("ack failed ({e}); duplicates will be ignored")),
            None => {
                watcher.warn("the broker did not take an ack within 10 s; reconnecting (duplicates will be ignored)");
                taken = false;
            }
        }
    }
    unacked.clear();
    taken
}

async fn todo_consumers(channel: &Channel) -> Result<u32, lapin::Error> {
    consumers(channel, amqp::TODO_QUEUE).await
}

/// The consumers of `queue` (a passive declaration: the queue must exist).
async fn consumers(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let q = amqp::inspect(channel, queue).await?;
    Ok(q.consumer_count())
}
