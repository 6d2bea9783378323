//! The one AMQP connection of the service, its channel pools, reconnection, and the
//! registry of queues the service lists.
//!
//! **Channels.** Publishes go over a pool of confirm-mode channels (round robin), each
//! carrying **one publish at a time**: a publish holds its channel until its confirm. An
//! unroutable message (a publish to a missing queue) comes back as a `basic.return` just
//! before its confirm, and lapin hands a return to whichever confirm of the channel is
//! settled next; with several publishes in flight on one channel, a 404 went to another
//! request's publish and that one's missing queue answered 200 (seen under load). Publishing
//! to the default exchange never closes a channel, so the pool is shared across requests.
//! Everything that can make the broker close a channel (a passive declare or a get on a
//! missing queue answers 404 by closing it; a conflicting declare answers 406) runs on a
//! channel *leased* exclusively from a second pool; a closed channel is not returned to the
//! pool, so an error on one request never breaks another's.
//!
//! **Listing.** AMQP has no "list queues" operation, and the management plugin is both
//! optional and slower than we want to be. The service keeps a registry of the queue names
//! it knows: the platform's work queues (`todo.high`, `todo`, `todo.low`) and `todo.dead`,
//! the `results.<project>` queues of the workspace's projects, queues configured with
//! `--queue`, and every queue created or used through the API. Their depth and consumer count come from a passive `queue.declare`;
//! names whose queue no longer exists are dropped from the registry.
//!
//! **Reconnection.** A background task connects with backoff; while the connection is down,
//! every route that needs the broker answers 503, `/readyz` fails, and the task reconnects
//! until the broker is back.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::join_all;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicRejectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde::{Deserialize, Serialize};
use tasks::amqp::{self as platform, op, BrokerError};
use tasks::backoff::Backoff;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::queue_name::QueueName;

/// Idle leased channels kept for reuse.
const MAX_IDLE_LEASES: usize = 128;
/// Passive declares run at once when listing.
const LIST_CONCURRENCY: usize = 8;
/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long the broker may take to open a channel when a failure makes the service check
/// its connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection attempt may take (also the wait for a channel to open).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A queue's depth and consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueStats {
    /// The queue name.
    pub name: String,
    /// Messages ready for delivery.
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// The kind of a queue to create.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    /// A replicated quorum queue (the platform's default).
    #[default]
    Quorum,
    /// A classic queue.
    Classic,
}

/// What to do with a message after getting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// Acknowledge it: the message leaves the queue.
    Ack,
    /// Put it back (a peek): the message stays, marked redelivered.
    Requeue,
    /// Reject it without requeueing: it leaves the queue, dead-lettered if the queue has a
    /// dead-letter exchange.
    Reject,
}

/// The connection, once up.
struct Live {
    conn: Connection,
    /// The broker node `conn` is connected to.
    node: usize,
    publish: Vec<tokio::sync::Mutex<Channel>>,
    next: AtomicUsize,
    idle: Mutex<Vec<Channel>>,
}

/// The broker as the service sees it. Cheap to share (`Arc`).
pub struct Broker {
    nodes: platform::Nodes,
    name: String,
    publish_channels: usize,
    confirm_timeout: Duration,
    live: RwLock<Option<Arc<Live>>>,
    lost: Notify,
    known: Mutex<BTreeSet<String>>,
    task: Mutex<Option<JoinHandle<()>>>,
    list_permits: Semaphore,
    metrics: Arc<Metrics>,
}

/// An exclusively held channel, returned to the pool when dropped if still open.
struct Lease {
    channel: Option<Channel>,
    live: Arc<Live>,
}

impl std::ops::Deref for Lease {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        self.channel
            .as_ref()
            .expect("a lease holds its channel until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            if channel.status().connected() {
                let mut idle = lock(&self.live.idle);
                if idle.len() < MAX_IDLE_LEASES {
                    idle.push(channel);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Broker {
    /// Starts connecting in the background to `url`, naming the connection `name`; `queues`
    /// seed the registry.
    pub fn start(
        url: String,
        name: String,
        publish_channels: usize,
        confirm_timeout: Duration,
        queues: impl IntoIterator<Item = String>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let broker = Arc::new(Broker {
            nodes: platform::Nodes::parse(&url),
            name,
            publish_channels: publish_channels.max(1),
            confirm_timeout,
            live: RwLock::new(None),
            lost: Notify::new(),
            known: Mutex::new(queues.into_iter().collect()),
            task: Mutex::new(None),
            list_permits: Semaphore::new(LIST_CONCURRENCY),
            metrics,
        });
        let task = tokio::spawn(broker.clone().maintain());
        *lock(&broker.task) = Some(task);
        broker
    }

    /// Stops reconnecting and closes the connection.
    pub async fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        let live = self.live.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(live) = live {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                live.conn.close(200, "broker-api shutting down".into()),
            )
            .await;
        }
        self.metrics.broker_up.set(0);
    }

    /// Whether the connection is up.
    pub fn ready(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<Arc<Live>> {
        let live = self
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        live.conn.status().connected().then_some(live)
    }

    fn live(&self) -> Result<Arc<Live>, ApiError> {
        self.current().ok_or_else(|| {
            self.lost.notify_one();
            ApiError::Unavailable("not connected".into())
        })
    }

    /// Maps a broker error, and wakes the reconnect task when the connection looks lost.
    fn fail(&self, error: BrokerError, queue: &str) -> ApiError {
        let error = ApiError::from_broker(error, queue);
        if matches!(error, ApiError::Unavailable(_)) {
            self.lost.notify_one();
        }
        error
    }

    async fn lease(&self) -> Result<Lease, ApiError> {
        let live = self.live()?;
        let idle = lock(&live.idle).pop();
        let channel = match idle {
            Some(channel) => channel,
            None => live
                .conn
                .create_channel()
                .await
                .map_err(|e| self.fail(op("open channel")(e), ""))?,
        };
        Ok(Lease {
            channel: Some(channel),
            live,
        })
    }

    /// A publish channel of the pool, held until the guard is dropped (one publish in flight
    /// per channel); reopened when the broker closed it (`stale`: the one a failed publish
    /// used, not to be handed back).
    async fn publish_channel<'a>(
        &self,
        live: &'a Live,
        stale: Option<tokio::sync::MutexGuard<'a, Channel>>,
    ) -> Result<tokio::sync::MutexGuard<'a, Channel>, ApiError> {
        let mut slot = match stale {
            Some(slot) => slot,
            None => {
                let index = live.next.fetch_add(1, Ordering::Relaxed) % live.publish.len();
                let slot = live.publish[index].lock().await;
                if slot.status().connected() {
                    return Ok(slot);
                }
                slot
            }
        };
        *slot = platform::confirm_channel(&live.conn)
            .await
            .map_err(|e| self.fail(e, ""))?;
        Ok(slot)
    }

    /// Adds `name` to the registry of listed queues.
    pub fn remember(&self, name: &QueueName) {
        let mut known = lock(&self.known);
        if !known.contains(name.as_str()) {
            known.insert(name.to_string());
        }
    }

    fn forget(&self, name: &str) {
        lock(&self.known).remove(name);
    }

    /// A queue's depth and consumers (404 when it does not exist).
    pub async fn inspect(&self, name: &QueueName) -> Result<QueueStats, ApiError> {
        let result = self.passive(name.as_str()).await;
        match &result {
            Ok(_) => self.remember(name),
            Err(ApiError::NotFound(_)) => self.forget(name.as_str()),
            Err(_) => {}
        }
        result
    }

    async fn passive(&self, name: &str) -> Result<QueueStats, ApiError> {
        let lease = self.lease().await?;
        let queue = tasks::amqp::inspect(&lease, name)
            .await
            .map_err(|e| self.fail(op("inspect queue")(e), name))?;
        Ok(QueueStats {
            name: name.to_string(),
            messages: queue.message_count(),
            consumers: queue.consumer_count(),
        })
    }

    /// The known queues that exist, with their stats, sorted by name; `extra` adds names
    /// for this listing only (the results queues of the workspace's projects).
    pub async fn list(
        &self,
        extra: impl IntoIterator<Item = String>,
    ) -> Result<Vec<QueueStats>, ApiError> {
        self.live()?;
        let mut names: BTreeSet<String> = lock(&self.known).clone();
        for priority in tasks::Priority::ALL {
            names.insert(platform::todo_queue(priority).to_string());
        }
        names.insert(platform::DEAD_QUEUE.to_string());
        names.extend(extra);
        let stats = names.into_iter().map(|name| async move {
            let _permit = self.list_permits.acquire().await;
            match self.passive(&name).await {
                Ok(stats) => Ok(Some(stats)),
                Err(ApiError::NotFound(_)) => {
                    self.forget(&name);
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        });
        let mut queues = Vec::new();
        for result in join_all(stats).await {
            if let Some(stats) = result? {
                queues.push(stats);
            }
        }
        Ok(queues)
    }

    /// Declares a durable queue; `Ok((stats, true))` when it did not exist before.
    ///
    /// The platform's own queues are declared through [`tasks::amqp`], with the arguments
    /// every binary agrees on: the work queues and `todo.dead` with
    /// [`platform::declare_todo`], and `results.<project>` with [`platform::declare_results`]
    /// (bound to the results exchange).
    pub async fn declare(
        &self,
        name: &QueueName,
        kind: QueueType,
    ) -> Result<(QueueStats, bool), ApiError> {
        let existed = match self.passive(name.as_str()).await {
            Ok(_) => true,
            Err(ApiError::NotFound(_)) => false,
            Err(e) => return Err(e),
        };
        let lease = self.lease().await?;
        let n = name.as_str();
        if platform::is_todo_queue(n) || n == platform::DEAD_QUEUE {
            if kind != QueueType::Quorum {
                return Err(ApiError::Conflict(format!(
                    "`{n}` is one of the platform's queues, always a quorum queue"
                )));
            }
            platform::declare_todo(&lease)
                .await
                .map_err(|e| self.fail(e, n))?;
        } else if let Some(project) = platform::project_of_results_queue(n) {
            // Replicated (quorum) on a cluster, classic on one node, as every binary declares it.
            let cluster = self.nodes.is_cluster();
            let (expected, shown) = if cluster {
                (QueueType::Quorum, "a quorum queue on a cluster")
            } else {
                (QueueType::Classic, "a classic queue on one node")
            };
            if kind != expected {
                return Err(ApiError::Conflict(format!(
                    "`{n}` is a platform results queue, always {shown}: create it with type `{}`",
                    if cluster { "quorum" } else { "classic" }
                )));
            }
            platform::declare_results(&lease, project, &self.nodes)
                .await
                .map_err(|e| self.fail(e, n))?;
        } else {
            let mut args = FieldTable::default();
            if kind == QueueType::Quorum {
                args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
            }
            lease
                .queue_declare(
                    n.into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    args,
                )
                .await
                .map_err(|e| self.fail(op("declare queue")(e), n))?;
        }
        drop(lease);
        let stats = self.inspect(name).await?;
        Ok((stats, !existed))
    }

    /// Deletes a queue; without `force`, refuses when it holds messages. Returns how many
    /// messages were dropped.
    pub async fn delete(&self, name: &QueueName, force: bool) -> Result<u32, ApiError> {
        let stats = self.inspect(name).await?;
        if stats.messages > 0 && !force {
            return Err(ApiError::Conflict(format!(
                "queue `{name}` holds {} messages; delete with `?force=true` to drop them",
                stats.messages
            )));
        }
        // Not `if_empty`: quorum queues answer it with a connection-level error (540), which
        // would drop every request in flight. The check above leaves a short race (a message
        // published between the two calls is dropped), which `force` users accept anyway.
        let lease = self.lease().await?;
        let dropped = lease
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await
            .map_err(|e| self.fail(op("delete queue")(e), name.as_str()))?;
        self.forget(name.as_str());
        Ok(dropped)
    }

    /// Publishes to `queue` through the default exchange and waits for the broker's
    /// confirm (404 when no such queue exists).
    pub async fn publish(
        &self,
        queue: &QueueName,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), ApiError> {
        let live = self.live()?;
        let mut channel = self.publish_channel(&live, None).await?;
        let mut retried = false;
        loop {
            let publish = platform::publish_with_properties(
                &channel,
                "",
                queue.as_str(),
                body,
                props.clone(),
            );
            let Ok(result) = tokio::time::timeout(self.confirm_timeout, publish).await else {
                // The broker stopped answering (a resource alarm blocks publishers; a
                // half-open connection never answers): say so, and let the reconnect task
                // check the connection.
                self.lost.notify_one();
                return Err(ApiError::Unavailable(format!(
                    "no confirm from the broker within {:?} for a message to `{queue}`; it may \
                     or may not have been queued",
                    self.confirm_timeout
                )));
            };
            match result {
                Ok(()) => {
                    self.remember(queue);
                    return Ok(());
                }
                // A shared channel the broker closed (the connection still up): retry once
                // on a fresh one.
                Err(BrokerError::Operation { .. })
                    if !retried
                        && !channel.status().connected()
                        && live.conn.status().connected() =>
                {
                    retried = true;
                    channel = self.publish_channel(&live, Some(channel)).await?;
                }
                Err(e) => {
                    let error = self.fail(e, queue.as_str());
                    if matches!(error, ApiError::NotFound(_)) {
                        self.forget(queue.as_str());
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Gets the next message of `queue`, if any, and settles it as `mode` says.
    pub async fn get(
        &self,
        queue: &QueueName,
        mode: AckMode,
    ) -> Result<Option<BasicGetMessage>, ApiError> {
        let lease = self.lease().await?;
        let n = queue.as_str();
        let got = lease
            .basic_get(n.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| self.fail(op("get")(e), n));
        let message = match got {
            Ok(message) => message,
            Err(e) => {
                if matches!(e, ApiError::NotFound(_)) {
                    self.forget(n);
                }
                return Err(e);
            }
        };
        self.remember(queue);
        let Some(message) = message else {
            return Ok(None);
        };
        let tag = message.delivery.delivery_tag;
        let settled = match mode {
            AckMode::Ack => lease.basic_ack(tag, BasicAckOptions::default()).await,
            AckMode::Requeue => {
                lease
                    .basic_reject(tag, BasicRejectOptions { requeue: true })
                    .await
            }
            AckMode::Reject => {
                lease
                    .basic_reject(tag, BasicRejectOptions { requeue: false })
                    .await
            }
        };
        settled.map_err(|e| self.fail(op("settle message")(e), n))?;
        Ok(Some(message))
    }

    async fn maintain(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        loop {
            let live = match self.open().await {
                Ok(live) => live,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker unreachable");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            backoff.reset();
            *self.live.write().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
            self.metrics.broker_up.set(1);
            tracing::info!(url = %self.nodes.shown(live.node), "connected to the broker");
            while live.conn.status().connected() {
                tokio::select! {
                    _ = self.lost.notified() => {
                        // Something failed: a connection that still looks up but no longer
                        // answers (half-open) is given up, not waited on for minutes.
                        if !probe(&live).await {
                            tracing::warn!("the broker stopped answering on the connection");
                            break;
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            self.live.write().unwrap_or_else(|e| e.into_inner()).take();
            self.nodes.lost(live.node);
            if live.conn.status().connected() {
                tokio::spawn(async move {
                    let close = live.conn.close(200, "broker-api reconnecting".into());
                    let _ = tokio::time::timeout(PROBE_TIMEOUT, close).await;
                });
            }
            self.metrics.broker_up.set(0);
            tracing::warn!("lost the broker connection; reconnecting");
        }
    }

    async fn open(&self) -> Result<Arc<Live>, BrokerError> {
        // One pass over the nodes (a cluster's are each given a few seconds).
        let connect = self.nodes.connect(&self.name);
        let platform::Link {
            connection: conn,
            node,
        } = match tokio::time::timeout(
            CONNECT_TIMEOUT.max(platform::nodes::NODE_CONNECT_TIMEOUT * self.nodes.len() as u32),
            connect,
        )
        .await
        {
            Ok(link) => link?,
            Err(_) => {
                return Err(BrokerError::Connect {
                    url: platform::redact_url(&self.nodes.shown(0)),
                    source: lapin::Error::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection attempt timed out",
                    )),
                })
            }
        };
        let mut publish = Vec::with_capacity(self.publish_channels);
        for _ in 0..self.publish_channels {
            publish.push(tokio::sync::Mutex::new(
                platform::confirm_channel(&conn).await?,
            ));
        }
        Ok(Arc::new(Live {
            conn,
            node,
            publish,
            next: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
        }))
    }
}

/// Whether the connection answers: the broker opens a channel within [`PROBE_TIMEOUT`]
/// (publishers blocked by a resource alarm still can).
async fn probe(live: &Live) -> bool {
    match tokio::time::timeout(PROBE_TIMEOUT, live.conn.create_channel()).await {
        Ok(Ok(channel)) => {
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(PROBE_TIMEOUT, channel.close(200, "probe".into())).await;
            });
            true
        }
        _ => false,
    }
}
