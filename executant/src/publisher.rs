//! The publishing side of the executant: one connection and one confirm channel, re-established
//! whenever either is lost (closed by an operator, a missed heartbeat, a broker restart).
//!
//! A handler that cannot publish an outcome keeps its delivery unacked and publishes again on
//! the new channel: a quorum queue counts every returned delivery as an attempt, so returning
//! it would spend one for a fault outside the task. Only the broker refusing the message
//! (nack, unroutable, an access or argument error), or the delivery's deadline, ends the
//! retries.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::{Channel, Connection};
use tasks::amqp::{self, BrokerError, Message};
use tasks::backoff::Backoff;
use tasks::trace::TraceParent;
use tokio::sync::Mutex;

use crate::metrics::Metrics;
use tokio::time::Instant;

/// Why an outcome was not published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// The broker refused it: retrying on another channel would not help.
    #[error("the broker refused it: {0}")]
    Refused(BrokerError),
    /// The broker stayed unreachable until its consumer timeout had taken the delivery back.
    #[error("the broker could not be reached before its consumer timeout")]
    Deadline,
    /// The batch that was to carry it ended without an answer (its task was stopped).
    #[error("the message that was to carry it was abandoned")]
    Abandoned,
}

/// A publishing connection that reconnects itself.
pub(crate) struct Publisher {
    nodes: Arc<amqp::Nodes>,
    connection_name: String,
    confirm_timeout: Duration,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

/// The current link, and a generation number that tells a broken link from its replacement.
#[derive(Default)]
struct State {
    generation: u64,
    link: Option<(Connection, Channel)>,
    /// The broker node of `link`.
    node: usize,
}

/// Where a publish goes: an exchange, or the delay queue of a wait (declared on each attempt's
/// channel first).
#[derive(Clone, Copy)]
enum Route<'a> {
    Exchange(&'a str),
    Delay(Duration),
}

/// How long to wait before trying again when the broker is reachable but a publish failed.
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Publisher {
    /// A publisher to `nodes` (one broker node or a cluster's); connects on first use (and
    /// in [`Publisher::ensure`]).
    pub(crate) fn new(
        nodes: Arc<amqp::Nodes>,
        connection_name: String,
        confirm_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Publisher {
            nodes,
            connection_name,
            confirm_timeout,
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    /// Returns a healthy channel and its generation, connecting again (with backoff, for as
    /// long as it takes) if the connection or the channel was lost.
    pub(crate) async fn ensure(&self) -> (u64, Channel) {
        let mut state = self.state.lock().await;
        if let Some((connection, channel)) = &state.link {
            if connection.status().connected() && channel.status().connected() {
                return (state.generation, channel.clone());
            }
        }
        if let Some((connection, _)) = state.link.take() {
            tracing::warn!("publish connection or channel lost; reconnecting");
            if !connection.status().connected() {
                self.nodes.lost(state.node);
            }
            close_in_background(connection);
        }
        let mut backoff = Backoff::new(Duration::from_millis(200), RETRY_MAX);
        loop {
            let opened = async {
                let link = self
                    .nodes
                    .connect_with_backoff(&self.connection_name, None)
                    .await?;
                // Bounded: the state stays locked meanwhile.
                match amqp::bounded(
                    "open the publish channel",
                    amqp::confirm_channel(&link.connection),
                )
                .await
                {
                    Ok(channel) => Ok::<_, BrokerError>((link, channel)),
                    Err(e) => {
                        self.nodes.lost(link.node);
                        close_in_background(link.connection);
                        Err(e)
                    }
                }
            };
            match opened.await {
                Ok((amqp::Link { connection, node }, channel)) => {
                    state.node = node;
                    state.generation += 1;
                    if state.generation > 1 {
                        self.metrics
                            .broker_reconnects
                            .with_label_values(&["publish"])
                            .inc();
                        tracing::info!(
                            generation = state.generation,
                            "publish connection re-established"
                        );
                    }
                    state.link = Some((connection, channel.clone()));
                    return (state.generation, channel);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "opening the publish channel failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Drops the link of `generation` if it is still the current one, so that the next use
    /// reconnects; `node_lost` (or a connection that is gone) makes the next attempt start
    /// with another node.
    async fn invalidate(&self, generation: u64, node_lost: bool) {
        let mut state = self.state.lock().await;
        if state.generation == generation {
            if let Some((connection, _)) = state.link.take() {
                if node_lost || !connection.status().connected() {
                    self.nodes.lost(state.node);
                }
                close_in_background(connection);
            }
        }
    }

    /// Publishes `message` (with the trace context of its task, when it had one) and waits
    /// (at most the confirm timeout) for the broker's confirm; a lost connection or a late
    /// confirm is retried on a new connection until `deadline`.
    pub(crate) async fn publish(
        &self,
        message: Message<'_>,
        traceparent: Option<&TraceParent>,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let mut props = amqp::properties(message.message_id, message.reason);
        if let Some(tp) = traceparent {
            props = amqp::with_traceparent(props, tp);
        }
        self.publish_with(
            message.exchange,
            message.routing_key,
            message.body,
            props,
            deadline,
        )
        .await
    }

    /// Publishes `body` with `props` as they are (a task passed on to another executant),
    /// retried like [`Publisher::publish`].
    pub(crate) async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: lapin::BasicProperties,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let to = Route::Exchange(exchange);
        self.publish_routed("publish", to, routing_key, body, props, deadline)
            .await
    }

    /// Publishes `body` with exactly `props` (a copy of a delivery: the same id and headers),
    /// retried like [`Publisher::publish`].
    pub(crate) async fn publish_copy(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: lapin::BasicProperties,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let to = Route::Exchange(exchange);
        self.publish_routed("publish a copy", to, routing_key, body, props, deadline)
            .await
    }

    /// Publishes the delayed copy of a task (`props`, from
    /// [`amqp::delay::delayed_properties`]) to the delay queue of `delay`, declared first,
    /// routed back to `origin` (the queue it came from) when its wait is over.
    pub(crate) async fn publish_delayed(
        &self,
        delay: Duration,
        origin: &str,
        body: &[u8],
        props: lapin::BasicProperties,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let to = Route::Delay(delay);
        self.publish_routed(
            "publish to a delay queue",
            to,
            origin,
            body,
            props,
            deadline,
        )
        .await
    }

    /// The one shape of the publishes above: `body` with `props` to `to`, each attempt on the
    /// current channel, retried (as `what` in the logs) like [`Publisher::publish`].
    async fn publish_routed(
        &self,
        what: &'static str,
        to: Route<'_>,
        routing_key: &str,
        body: &[u8],
        props: lapin::BasicProperties,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let props = &props;
        self.retry(deadline, what, |channel| async move {
            let exchange = match to {
                Route::Exchange(name) => Cow::Borrowed(name),
                Route::Delay(delay) => {
                    Cow::Owned(amqp::delay::declare_delay(&channel, delay).await?)
                }
            };
            amqp::publish_with_properties(&channel, &exchange, routing_key, body, props.clone())
                .await
        })
        .await
    }

    /// Declares `project`'s results queue, retried like [`Publisher::publish`].
    pub(crate) async fn declare_results(
        &self,
        project: &str,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        self.retry(deadline, "declare results", |channel| async move {
            amqp::declare_results(&channel, project, &self.nodes)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Closes the connection (at shutdown or when its session ends), waiting at most
    /// [`amqp::OP_TIMEOUT`] for the broker's answer (and for a reconnection in progress).
    pub(crate) async fn close(&self) {
        let closed = amqp::answered(async {
            if let Some((connection, _)) = self.state.lock().await.link.take() {
                let _ = connection.close(200, "executant stopping".into()).await;
            }
        });
        if closed.await.is_none() {
            tracing::warn!(
                "the broker did not answer the publish connection's close within 10 s; dropping it"
            );
        }
    }

    async fn retry<F, Fut>(
        &self,
        deadline: Instant,
        what: &'static str,
        op: F,
    ) -> Result<(), PublishError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<(), BrokerError>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(200), RETRY_MAX);
        loop {
            let Ok((generation, channel)) = tokio::time::timeout_at(deadline, self.ensure()).await
            else {
                return Err(PublishError::Deadline);
            };
            let wait = deadline.min(Instant::now() + self.confirm_timeout);
            let failure = match tokio::time::timeout_at(wait, op(channel)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) if refused(&e) => {
                    // A channel-level refusal closed the channel: the next user gets a new one.
                    self.invalidate(generation, false).await;
                    return Err(PublishError::Refused(e));
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no confirm in time".to_string(),
            };
            tracing::warn!(op = what, error = %failure, "publishing failed; reconnecting and trying again");
            // No answer, or the connection failed: the node is given up (a node stopped with
            // SIGSTOP keeps its connections open and never answers).
            self.invalidate(generation, true).await;
            let delay = backoff.next_delay();
            if Instant::now() + delay >= deadline {
                return Err(PublishError::Deadline);
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// Whether the broker refused an operation (as opposed to the connection being lost).
fn refused(e: &BrokerError) -> bool {
    match e {
        BrokerError::NotConfirmed { .. } => true,
        // ACCESS_REFUSED, NOT_FOUND, PRECONDITION_FAILED: the broker said no.
        _ => matches!(e.reply_code(), Some(403 | 404 | 406)),
    }
}

/// Closes a connection that is being replaced without waiting for a broker that may not
/// answer.
fn close_in_background(connection: Connection) {
    tokio::spawn(async move {
        let _ = connection.close(200, "replaced".into()).await;
    });
}
