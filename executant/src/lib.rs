//! The executant: consumes the TODO queue, runs each task in a sandboxed container, publishes
//! the outcome to the project's results queue with a confirm, and only then acks the task.
//!
//! [`run`] is the whole daemon, with the shutdown signal passed in, so tests start the real
//! executant in-process and stop it cleanly.

mod acks;
mod batcher;
mod cancel;
pub mod config;
mod containers;
pub mod disposition;
mod engine;
mod error;
mod handle;
mod lanes;
pub mod metrics;
pub mod prefetch;
mod provenance;
mod publisher;
pub mod runner;
pub mod sandbox;
pub mod script;
mod session;
mod waiting;
mod warm;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{BoxStream, SelectAll};
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tasks::amqp;
use tasks::backoff::Backoff;
use tasks::Priority;
use tokio::task::JoinSet;

pub use config::{Config, ConfigError, Limits};
pub use runner::Runner;

/// Why the executant stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ExecutantError {
    /// The settings contradict each other or the broker's limits.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// The Docker engine refused to apply the sandbox.
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    /// The metrics address could not be bound.
    #[error("--metrics-listen {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the executant until `shutdown` completes, then stops taking tasks, waits for those
/// in flight (up to the grace period; the rest go back to the queue), removes its containers
/// and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ExecutantError> {
    config.validate().map_err(ExecutantError::Config)?;
    let config = Arc::new(config);
    let metrics = Arc::new(metrics::Metrics::new());
    // Served from the start (a health check answers while the engine is awaited), stopped
    // when this function returns.
    let _metrics_server = match config.metrics_listen {
        Some(addr) => {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| ExecutantError::MetricsListen { addr, source })?;
            tracing::info!(%addr, "serving metrics and health checks");
            Some(AbortOnDrop(tokio::spawn(metrics::serve(
                listener,
                metrics.clone(),
            ))))
        }
        None => None,
    };
    tokio::pin!(shutdown);
    let runner = tokio::select! {
        r = connect_engine(config.clone(), metrics.clone()) => Arc::new(r),
        _ = &mut shutdown => return Ok(()),
    };
    let removed = runner.remove_leftovers().await;
    if removed > 0 {
        tracing::info!(removed, "removed task containers left behind");
    }
    tracing::info!(
        name = %config.name,
        concurrency = config.concurrency,
        prefetch = config.prefetch.map_or_else(|| "sized to the work".to_string(), |p| p.to_string()),
        worker_image = %config.worker_image,
        reuse = config.reuse,
        "executant starting"
    );
    let cancelled = Arc::new(cancel::Cancelled::default());
    let listener = tokio::spawn(cancel::listen(
        config.clone(),
        runner.clone(),
        cancelled.clone(),
    ));
    let nodes = Arc::new(amqp::Nodes::parse(&config.amqp_url));
    let mut fatal = None;
    let mut engine_was_lost = false;
    let mut sessions = 0u64;
    loop {
        if engine_was_lost {
            tokio::select! {
                _ = engine::wait_until_answering(&runner) => {}
                _ = &mut shutdown => break,
            }
            runner.remove_leftovers().await;
            engine_was_lost = false;
        }
        // Workers started while the session opens serve its first tasks at once.
        runner.warm_up();
        // Each session starts small: nothing is known of the work waiting.
        let mut sizer = prefetch::Sizer::new(&config);
        let session = tokio::select! {
            s = open_session(&config, sizer.current(), &nodes, &metrics) => s,
            _ = &mut shutdown => break,
        };
        let Ok((consume_link, publisher, channel, mut consumers)) = session else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        sessions += 1;
        if sessions > 1 {
            metrics
                .broker_reconnects
                .with_label_values(&["consume"])
                .inc();
        }
        metrics.consuming.set(1);
        // The publisher re-establishes its own connection; this notices a loss within a
        // second even when nothing is being published.
        let watcher = tokio::spawn({
            let publisher = publisher.clone();
            async move {
                loop {
                    tokio::time::sleep(HEALTH_CHECK).await;
                    publisher.ensure().await;
                }
            }
        });
        let ctx = Arc::new(handle::Context::new(
            config.clone(),
            runner.clone(),
            publisher.clone(),
            metrics.clone(),
            cancelled.clone(),
        ));
        // A node that stops answering may keep the connection open, and the heartbeats
        // notice only after two missed intervals: a bounded round trip every `PROBE` shows
        // that the consume connection still answers, even while no task comes.
        let prober = AbortOnDrop(tokio::spawn({
            let channel = channel.clone();
            let ctx = ctx.clone();
            async move {
                loop {
                    tokio::time::sleep(PROBE).await;
                    if amqp::answered(probe(&channel)).await.is_none() {
                        ctx.not_answered("probe");
                        return;
                    }
                }
            }
        }));
        // Acks the deliveries whose outcomes were confirmed, together where it may; it stops
        // with the session, after the tasks in flight.
        let acker = AbortOnDrop(tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.send_acks().await }
        }));
        let mut inflight = JoinSet::new();
        // Held, not started: started highest priority first, up to `concurrency` at once;
        // returned if no slot frees in time.
        let mut waiting = waiting::Waiting::new(overdue(&config));
        let mut stopping = false;
        // False once the broker left an operation unanswered: the session's connections are
        // then closed in the background, even at shutdown.
        let mut answering = true;
        let mut health = tokio::time::interval(HEALTH_CHECK);
        let mut sizing = tokio::time::interval(prefetch::WINDOW);
        sizing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Dropped with the session, which stops its pings.
        let mut engine_lost = engine::watch_lost(runner.clone(), config.engine_grace);
        let consume_conn = &consume_link.connection;
        loop {
            // Awaited after the select: its arms' outputs must not live across an await.
            let mut resize = None;
            tokio::select! {
                _ = &mut shutdown, if !stopping => { stopping = true; break; }
                // A consumer whose connection or channel died may end silently, or not at all.
                _ = health.tick() => {
                    return_expired(&mut waiting, &ctx);
                    if !consume_conn.status().connected() || !channel.status().connected() {
                        tracing::warn!("consume connection or channel lost; reconnecting");
                        if !consume_conn.status().connected() {
                            nodes.lost(consume_link.node);
                        }
                        break;
                    }
                }
                // An ack or a nack not answered in time: the connection is given up (a node
                // that stops answering may keep it open, and heartbeats notice only later).
                _ = ctx.unanswered() => {
                    tracing::warn!("the broker left an operation unanswered; reconnecting");
                    nodes.lost(consume_link.node);
                    answering = false;
                    break;
                }
                // Ending the session returns every delivery held here to `todo` (the broker's
                // doing when the consume connection closes), and none is taken until the
                // engine answers again.
                Ok(_) = engine_lost.wait_for(|lost| *lost) => {
                    tracing::warn!(
                        returned = inflight.len() + waiting.len(),
                        grace_secs = config.engine_grace.as_secs(),
                        "Docker engine unreachable past --engine-grace: returning the tasks held \
                         here to todo; consuming none until it answers"
                    );
                    engine_was_lost = true;
                    break;
                }
                _ = sizing.tick() => resize = sizer.tick(tokio::time::Instant::now()),
                Some((priority, generation, next)) = consumers.streams.next() => match next {
                    Some(Ok(delivery)) => {
                        ctx.received(delivery.delivery_tag);
                        waiting.push(priority, Instant::now(), delivery);
                        start_waiting(&mut waiting, &mut inflight, &ctx, handled_at_once(&config, &sizer));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer failed; reconnecting");
                        if !consume_conn.status().connected() {
                            nodes.lost(consume_link.node);
                        }
                        break;
                    }
                    // A consumer replaced by a resize ends after its last delivery.
                    None if generation != consumers.generation => {}
                    None => {
                        let queue = amqp::todo_queue(priority);
                        tracing::warn!(queue, "consumer stream ended (queue deleted or channel closed); reconnecting");
                        break;
                    }
                },
                Some(joined) = inflight.join_next(), if !inflight.is_empty() => {
                    sizer.settled();
                    if sizer.starved() {
                        resize = sizer.tick(tokio::time::Instant::now());
                    }
                    if let Ok(Err(e)) = joined {
                        tracing::error!(error = %e, "stopping: the sandbox cannot be enforced");
                        fatal = Some(e);
                        stopping = true;
                        break;
                    }
                    start_waiting(&mut waiting, &mut inflight, &ctx, handled_at_once(&config, &sizer));
                }
            }
            if let Some(wanted) = resize {
                // New consumers first, then the old ones cancelled: the deliveries these had
                // received still arrive, and their streams' ends are not a lost consumer.
                let resized = amqp::bounded(
                    "resize the prefetch",
                    consumers.start(&channel, &config, wanted),
                )
                .await;
                // The next window starts now: the handover is no measure of the work.
                sizer.restart(tokio::time::Instant::now());
                match resized {
                    Ok(old) => {
                        tracing::info!(prefetch = wanted, "prefetch resized");
                        let mut unanswered = false;
                        for tag in old {
                            let cancel = channel
                                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
                            match amqp::answered(cancel).await {
                                Some(Ok(())) => {}
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "cancelling a replaced consumer failed")
                                }
                                None => unanswered = true,
                            }
                        }
                        if unanswered {
                            tracing::warn!("the broker did not answer a consumer's cancel within 10 s; giving the node up");
                            nodes.lost(consume_link.node);
                            break;
                        }
                        start_waiting(
                            &mut waiting,
                            &mut inflight,
                            &ctx,
                            handled_at_once(&config, &sizer),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "resizing the prefetch failed; reconnecting");
                        nodes.lost(consume_link.node);
                        break;
                    }
                }
            }
        }
        metrics.consuming.set(0);
        if stopping {
            // Bounded: shutdown never waits for a broker that does not answer.
            let cancelled = amqp::answered(async {
                for tag in &consumers.tags {
                    let _ = channel
                        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                        .await;
                }
            });
            if cancelled.await.is_none() {
                answering = false;
                tracing::warn!("the broker did not answer the consumers' cancel within 10 s");
            }
            let grace = tokio::time::timeout(config.shutdown_grace, async {
                while let Some(joined) = inflight.join_next().await {
                    if let Ok(Err(e)) = joined {
                        fatal.get_or_insert(e);
                    }
                }
            });
            if grace.await.is_err() {
                tracing::warn!(
                    returned = inflight.len(),
                    "tasks still running after the grace period go back to the queue"
                );
            }
        }
        // Unfinished deliveries, and those still waiting, return to their queue when the
        // channel closes.
        inflight.abort_all();
        drop(waiting);
        while inflight.join_next().await.is_some() {}
        drop(acker);
        watcher.abort();
        drop(prober);
        // Both bounded by `amqp::OP_TIMEOUT`, at the same time. Waited for only at shutdown,
        // and only when the broker answered the cancel; otherwise in the background: no
        // reconnection waits for a node that may not answer (the publish connection may be
        // frozen on it while the consume connection's loss was noticed).
        let closing = close_session(consume_link.connection, publisher);
        if stopping && answering {
            closing.await;
        } else {
            tokio::spawn(closing);
        }
        runner.remove_leftovers().await;
        if stopping {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    listener.abort();
    runner.remove_leftovers().await;
    tracing::info!("executant stopped");
    match fatal {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

async fn connect_engine(config: Arc<Config>, metrics: Arc<metrics::Metrics>) -> Runner {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match Runner::connect(config.clone(), metrics.clone()).await {
            Ok(r) => return r,
            Err(e) => {
                metrics.engine_errors.inc();
                tracing::warn!(error = %e, "Docker engine unreachable; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the connections are checked.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

/// How often the consume connection is asked for a round trip ([`probe`]).
const PROBE: Duration = Duration::from_secs(5);

/// A round trip on the consume channel: a passive declaration of `todo` (declared when the
/// session started). Its error is left to the health check (a closed channel); only its
/// not being answered matters here.
async fn probe(channel: &lapin::Channel) {
    let _ = amqp::inspect(channel, amqp::TODO_QUEUE).await;
}

/// Closes the connections of a session, each waiting at most [`amqp::OP_TIMEOUT`] for the
/// broker's answer, at the same time.
async fn close_session(consume: lapin::Connection, publisher: Arc<publisher::Publisher>) {
    let consume = async move {
        if amqp::answered(consume.close(200, "executant stopping".into()))
            .await
            .is_none()
        {
            tracing::warn!(
                "the broker did not answer the consume connection's close within 10 s; dropping it"
            );
        }
    };
    tokio::join!(consume, publisher.close());
}

/// How many deliveries are handled at once: with container reuse, the prefetch in force (a
/// worker lane batches the tasks handled together; containers are capped at `--concurrency`
/// below that, and a high task waits behind at most about [`prefetch::AHEAD`] of work); with
/// a container per task, `--concurrency` (more would only wait for a container, in no order
/// of priority).
fn handled_at_once(config: &Config, sizer: &prefetch::Sizer) -> u16 {
    if config.reuse > 1 {
        sizer.current()
    } else {
        config.concurrency
    }
}

/// Starts waiting deliveries, highest priority first, while fewer than `limit` are handled
/// (the prefetch in force: containers are capped at `--concurrency` below it).
fn start_waiting(
    waiting: &mut waiting::Waiting<lapin::message::Delivery>,
    inflight: &mut JoinSet<Result<(), sandbox::SandboxError>>,
    ctx: &Arc<handle::Context>,
    limit: u16,
) {
    while inflight.len() < usize::from(limit) {
        let Some((received, delivery)) = waiting.pop(Instant::now()) else {
            return;
        };
        let ctx = ctx.clone();
        inflight.spawn(async move { ctx.handle(delivery, received.into()).await });
    }
}

/// Returns to their queue the deliveries that waited too long to start (all slots busy):
/// started now, they could not be acked within the consumer timeout. Each return spends one
/// of the task's deliveries, as any return does.
fn return_expired(
    waiting: &mut waiting::Waiting<lapin::message::Delivery>,
    ctx: &Arc<handle::Context>,
) {
    for delivery in waiting.take_expired(Instant::now()) {
        tracing::warn!(
            task = %amqp::message_id_of(&delivery.properties),
            "a task waited too long for a free slot; returning it before the broker's consumer timeout"
        );
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let requeue = lapin::options::BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            match amqp::answered(delivery.nack(requeue)).await {
                Some(Ok(_)) => ctx.returned(delivery.delivery_tag),
                Some(Err(e)) => tracing::warn!(error = %e, "nack failed; the broker returns the task when the channel closes"),
                None => tracing::warn!("the broker did not answer a nack within 10 s; it returns the task when the channel closes"),
            }
        });
    }
}

/// How long a delivery may wait for a slot (after half of it, it starts first): what is left
/// of the holding bound once its longest run is set aside.
fn overdue(config: &Config) -> Duration {
    config.holding_bound().saturating_sub(config.max_timeout)
}

/// A work queue's prefetch, from `size` (the prefetch [`prefetch::Sizer`] chose for `todo`,
/// at least the concurrency): twice that for `todo.high`, so that when a task ends, the next
/// high delivery is already here (its successor comes only after the ack's round trip, and a
/// normal one waiting would take the slot meanwhile); `size` for `todo`; the concurrency for
/// `todo.low` (an executant holds no more low tasks than it runs, which other executants
/// could otherwise run).
fn prefetch(priority: Priority, size: u16, concurrency: u16) -> u16 {
    match priority {
        Priority::High => size.saturating_mul(2),
        Priority::Normal => size,
        Priority::Low => concurrency.min(size),
    }
}

type Session = (
    amqp::Link,
    Arc<publisher::Publisher>,
    lapin::Channel,
    Consumers,
);

/// The consumers of the three work queues, as one stream of `(priority, generation,
/// delivery)`; a `None` delivery says that consumer ended. A resize starts a new generation
/// of consumers and cancels the one before, whose ends are then expected.
struct Consumers {
    streams: SelectAll<BoxStream<'static, (Priority, u64, Option<Consumed>)>>,
    /// The tags of the current generation.
    tags: Vec<String>,
    generation: u64,
}

impl Consumers {
    /// Starts a new generation of consumers on `channel`, `todo`'s prefetch `size`; returns
    /// the tags of the generation before, for the caller to cancel.
    async fn start(
        &mut self,
        channel: &lapin::Channel,
        config: &Config,
        size: u16,
    ) -> Result<Vec<String>, amqp::BrokerError> {
        let op = amqp::op;
        let generation = self.generation + 1;
        let mut tags = Vec::new();
        for priority in Priority::ALL {
            let queue = amqp::todo_queue(priority);
            // `todo`'s first consumer keeps its tag of old (what operators look for). A tag
            // is never used twice on a channel: a cancelled consumer of a quorum queue lives
            // on in the queue while deliveries it made are unacked.
            let tag = match (priority, generation) {
                (Priority::Normal, 1) => format!("executant-{}", config.name),
                (Priority::Normal, g) => format!("executant-{}-{g}", config.name),
                (p, g) => format!("executant-{}-{p}-{g}", config.name),
            };
            // Per consumer (not global): applies to the consumer started next.
            channel
                .basic_qos(
                    prefetch(priority, size, config.concurrency),
                    BasicQosOptions::default(),
                )
                .await
                .map_err(op("set prefetch"))?;
            let consumer = channel
                .basic_consume(
                    queue.into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(op("consume a todo queue"))?;
            let stream = consumer
                .map(move |d| (priority, generation, Some(d)))
                .chain(futures_util::stream::once(async move {
                    (priority, generation, None)
                }));
            self.streams.push(stream.boxed());
            tags.push(tag);
        }
        self.generation = generation;
        Ok(std::mem::replace(&mut self.tags, tags))
    }
}

/// What a consumer stream yields.
type Consumed = Result<lapin::message::Delivery, lapin::Error>;

/// Connects (consumer and publisher on separate connections: a blocked publisher must not
/// stop acks), declares the topology and starts consuming the work queues, `todo` with
/// `prefetch`.
async fn open_session(
    config: &Config,
    prefetch: u16,
    nodes: &Arc<amqp::Nodes>,
    metrics: &Arc<metrics::Metrics>,
) -> Result<Session, amqp::BrokerError> {
    let consume_link = nodes
        .connect_with_backoff(&format!("executant {} consume", config.name), None)
        .await?;
    let publisher = Arc::new(publisher::Publisher::new(
        nodes.clone(),
        format!("executant {} publish", config.name),
        config.confirm_timeout,
        metrics.clone(),
    ));
    publisher.ensure().await;
    let consuming = amqp::bounded(
        "start consuming",
        start_consuming(config, &consume_link.connection, prefetch),
    )
    .await;
    match consuming {
        Ok((channel, consumer)) => {
            tracing::info!(url = %nodes.shown(consume_link.node), "consuming todo.high, todo and todo.low");
            Ok((consume_link, publisher, channel, consumer))
        }
        Err(e) => {
            tracing::warn!(error = %e, "starting the consumer failed; retrying");
            if !consume_link.connection.status().connected() || unanswered(&e) {
                nodes.lost(consume_link.node);
            }
            let _ = amqp::answered(consume_link.connection.close(200, "retrying".into())).await;
            publisher.close().await;
            Err(e)
        }
    }
}

/// Whether `e` is a broker operation that was not answered in time ([`amqp::unanswered`]).
fn unanswered(e: &amqp::BrokerError) -> bool {
    matches!(
        e,
        amqp::BrokerError::Operation { source, .. }
            if matches!(source.kind(), lapin::ErrorKind::IOError(io) if io.kind() == std::io::ErrorKind::TimedOut)
    )
}

/// Declares the topology and starts consuming the three work queues on one channel, each
/// consumer with a prefetch of its own ([`prefetch`], from `size`): a delivery of a higher
/// priority is always taken at once, whatever lower ones are held.
async fn start_consuming(
    config: &Config,
    consume_conn: &lapin::Connection,
    size: u16,
) -> Result<(lapin::Channel, Consumers), amqp::BrokerError> {
    let channel = consume_conn
        .create_channel()
        .await
        .map_err(amqp::op("open channel"))?;
    amqp::declare_todo(&channel).await?;
    let mut consumers = Consumers {
        streams: SelectAll::new(),
        tags: Vec::new(),
        generation: 0,
    };
    consumers.start(&channel, config, size).await?;
    Ok((channel, consumers))
}
