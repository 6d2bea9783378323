//! The executant: consumes the TODO queue, runs each task in a sandboxed container, publishes
//! the outcome to the project's results queue with a confirm, and only then acks the task.
//!
//! [`run`] is the whole daemon, with the shutdown signal passed in, so tests start the real
//! executant in-process and stop it cleanly.

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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::BasicCancelOptions;
use tasks::amqp;
use tasks::backoff::Backoff;
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
        // Each session starts small: nothing is known of the work waiting.
        let mut sizer = prefetch::Sizer::new(&config);
        let session = tokio::select! {
            s = open_session(&config, sizer.current(), &nodes, &metrics) => s,
            _ = &mut shutdown => break,
        };
        let Ok((consume_link, publisher, channel, mut consumer)) = session else {
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
        let mut inflight = JoinSet::new();
        let mut stopping = false;
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
                    if !consume_conn.status().connected() || !channel.status().connected() {
                        tracing::warn!("consume connection or channel lost; reconnecting");
                        if !consume_conn.status().connected() {
                            nodes.lost(consume_link.node);
                        }
                        break;
                    }
                }
                // Ending the session returns every delivery held here to `todo` (the broker's
                // doing when the consume connection closes), and none is taken until the
                // engine answers again.
                Ok(_) = engine_lost.wait_for(|lost| *lost) => {
                    tracing::warn!(
                        returned = inflight.len(),
                        grace_secs = config.engine_grace.as_secs(),
                        "Docker engine unreachable past --engine-grace: returning the tasks held \
                         here to todo; consuming none until it answers"
                    );
                    engine_was_lost = true;
                    break;
                }
                _ = sizing.tick() => resize = sizer.tick(tokio::time::Instant::now()),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let ctx = ctx.clone();
                        inflight.spawn(async move { ctx.handle(delivery).await });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer failed; reconnecting");
                        if !consume_conn.status().connected() {
                            nodes.lost(consume_link.node);
                        }
                        break;
                    }
                    None => {
                        tracing::warn!("consumer stream ended (queue deleted or channel closed); reconnecting");
                        break;
                    }
                },
                Some(joined) = inflight.join_next(), if !inflight.is_empty() => {
                    sizer.settled();
                    if let Ok(Err(e)) = joined {
                        tracing::error!(error = %e, "stopping: the sandbox cannot be enforced");
                        fatal = Some(e);
                        stopping = true;
                        break;
                    }
                }
            }
            if let Some(wanted) = resize {
                let resized = prefetch::reconsume(&channel, &config, &mut consumer, wanted).await;
                // The next window starts now: the handover is no measure of the work.
                sizer.restart(tokio::time::Instant::now());
                match resized {
                    Ok(received) => {
                        tracing::info!(
                            prefetch = wanted,
                            handed_over = received.len(),
                            "prefetch resized"
                        );
                        for delivery in received {
                            let ctx = ctx.clone();
                            inflight.spawn(async move { ctx.handle(delivery).await });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "resizing the prefetch failed; reconnecting");
                        break;
                    }
                }
            }
        }
        metrics.consuming.set(0);
        if stopping {
            let _ = channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await;
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
        // Unfinished deliveries return to the queue when the channel closes.
        inflight.abort_all();
        while inflight.join_next().await.is_some() {}
        watcher.abort();
        let _ = consume_conn.close(200, "executant stopping".into()).await;
        publisher.close().await;
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

type Session = (
    amqp::Link,
    Arc<publisher::Publisher>,
    lapin::Channel,
    lapin::Consumer,
);

/// Connects (consumer and publisher on separate connections: a blocked publisher must not
/// stop acks), declares the topology and starts consuming with `prefetch`.
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
    let consuming = start_consuming(config, &consume_link.connection, prefetch).await;
    match consuming {
        Ok((channel, consumer)) => {
            tracing::info!(url = %nodes.shown(consume_link.node), "consuming todo");
            Ok((consume_link, publisher, channel, consumer))
        }
        Err(e) => {
            tracing::warn!(error = %e, "starting the consumer failed; retrying");
            if !consume_link.connection.status().connected() {
                nodes.lost(consume_link.node);
            }
            let _ = consume_link.connection.close(200, "retrying".into()).await;
            publisher.close().await;
            Err(e)
        }
    }
}

/// Declares the topology and starts consuming `todo` with `prefetch`.
async fn start_consuming(
    config: &Config,
    consume_conn: &lapin::Connection,
    prefetch: u16,
) -> Result<(lapin::Channel, lapin::Consumer), amqp::BrokerError> {
    let channel = consume_conn
        .create_channel()
        .await
        .map_err(amqp::op("open channel"))?;
    amqp::declare_todo(&channel).await?;
    let consumer = prefetch::consume(&channel, config, prefetch).await?;
    Ok((channel, consumer))
}
