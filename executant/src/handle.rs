//! Handling one TODO delivery, from decision to ack.
//!
//! Invariant: a delivery is acked only after its outcome (a result, or a dead-lettered copy),
//! or its copy in a delay queue (a retry after a fault outside the task), was confirmed by
//! the broker. An outcome that could not be published for a lost connection
//! is published again on a new one while the delivery stays unacked (a returned delivery
//! would spend one of its attempts); only a refusal by the broker, or its consumer timeout
//! coming, nacks it back to the queue.
//!
//! A task must finish within the holding bound ([`Config::holding_bound`], below the
//! broker's consumer timeout) of its delivery; the runner keeps to it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tasks::amqp::{self, Message};
use tasks::backoff::Backoff;
use tasks::trace::TraceParent;
use tasks::{Task, TaskResult};
use time::OffsetDateTime;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tracing::Instrument;

use crate::acks::{Acks, Tag};
use crate::batcher::Batcher;
use crate::cancel::Cancelled;
use crate::config::Config;
use crate::disposition::{decide, Disposition};
use crate::metrics::Metrics;
use crate::publisher::{PublishError, Publisher};
use crate::runner::{RunError, Runner};
use crate::sandbox::SandboxError;

/// The span of one delivery's handling: `task{task_id=P/i trace_id=T span_id=S}`, the ids
/// from its message id and its `traceparent` header (left out when it has none).
fn task_span(props: &lapin::BasicProperties) -> tracing::Span {
    let task_id = amqp::message_id_of(props);
    let span = tracing::info_span!(
        "task",
        task_id = %task_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty
    );
    if let Some(tp) = amqp::traceparent_of(props) {
        span.record("trace_id", tracing::field::display(tp.trace_id));
        span.record("span_id", tracing::field::display(tp.parent_id));
    }
    span
}

/// What every task handler shares.
pub(crate) struct Context {
    config: Arc<Config>,
    runner: Arc<Runner>,
    publisher: Arc<Publisher>,
    /// Publishes results, those ready together in one message.
    results: Arc<Batcher>,
    metrics: Arc<Metrics>,
    declared: Mutex<HashSet<String>>,
    cancelled: Arc<Cancelled>,
    /// Notified when an ack or a nack went unanswered ([`Context::unanswered`]).
    unanswered: Notify,
    /// The consume channel's deliveries, from their arrival to their ack (`acks.rs`).
    acks: StdMutex<Acks<Pending>>,
    /// Notified when a delivery became ready to ack or was returned.
    acks_changed: Notify,
}

/// What became of an ack: `None` when the broker did not take it within
/// [`amqp::OP_TIMEOUT`], `Some(Ok(false))` when it was not sent (the channel is gone).
type Acked = Option<lapin::Result<bool>>;

/// A delivery ready to ack: its acker, and its handler waiting for the ack.
type Pending = (lapin::Acker, tokio::sync::oneshot::Sender<Acked>);

impl Context {
    pub(crate) fn new(
        config: Arc<Config>,
        runner: Arc<Runner>,
        publisher: Arc<Publisher>,
        metrics: Arc<Metrics>,
        cancelled: Arc<Cancelled>,
    ) -> Context {
        Context {
            config,
            runner,
            results: Batcher::new(publisher.clone()),
            publisher,
            metrics,
            declared: Mutex::new(HashSet::new()),
            cancelled,
            unanswered: Notify::new(),
            acks: StdMutex::new(Acks::default()),
            acks_changed: Notify::new(),
        }
    }

    /// A delivery arrived on the consume channel (before it waits or is handled).
    pub(crate) fn received(&self, tag: Tag) {
        self.acks.lock().expect("acks lock").received(tag);
    }

    /// A delivery was returned to its queue (its nack sent): it no longer holds back the
    /// acks of the deliveries after it.
    pub(crate) fn returned(&self, tag: Tag) {
        self.acks.lock().expect("acks lock").returned(tag);
        self.acks_changed.notify_one();
    }

    /// Sends the acks of the deliveries made ready ([`Context::ack`]) for as long as the
    /// session lasts: those below which every delivery of the channel is settled in one
    /// `basic.ack` with `multiple`, the others alone once they waited [`crate::acks::HOLD`].
    pub(crate) async fn send_acks(&self) {
        loop {
            let next = self.acks.lock().expect("acks lock").next_due();
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = self.acks_changed.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.acks_changed.notified().await,
            }
            let due = self.acks.lock().expect("acks lock").due(Instant::now());
            let together = due.together.len();
            let mut ready = due.together.into_iter().rev();
            if let Some((_, (acker, done))) = ready.next() {
                // Up to the highest tag: every delivery of the channel below it is ready
                // (among these) or settled already.
                let options = BasicAckOptions {
                    multiple: together > 1,
                };
                let acked = self.send_ack(&acker, options).await;
                for (_, (_, waiting)) in ready {
                    let _ = waiting.send(clone_acked(&acked));
                }
                let _ = done.send(acked);
                self.metrics
                    .ack_frames
                    .with_label_values(&["together"])
                    .inc();
                self.metrics.acked_together.inc_by(together as u64);
            }
            for (_, (acker, done)) in due.alone {
                let acked = self.send_ack(&acker, BasicAckOptions::default()).await;
                let _ = done.send(acked);
                self.metrics.ack_frames.with_label_values(&["alone"]).inc();
            }
        }
    }

    async fn send_ack(&self, acker: &lapin::Acker, options: BasicAckOptions) -> Acked {
        let acked = amqp::answered(acker.ack(options)).await;
        if acked.is_none() {
            self.not_answered("ack");
        }
        acked
    }

    /// Completes once an ack or a nack of this session was not answered within
    /// [`amqp::OP_TIMEOUT`]: the consume connection is then to be given up.
    pub(crate) async fn unanswered(&self) {
        self.unanswered.notified().await
    }

    /// Acks `delivery` (its outcome confirmed), with the other deliveries ready around it
    /// ([`Context::send_acks`]), and returns once the ack was sent; `None` when the broker
    /// did not take it within [`amqp::OP_TIMEOUT`] (the session is told, and the delivery
    /// will come back).
    async fn ack(&self, delivery: &Delivery) -> Acked {
        let (done, acked) = tokio::sync::oneshot::channel();
        self.acks.lock().expect("acks lock").ready(
            delivery.delivery_tag,
            Instant::now(),
            (delivery.acker.clone(), done),
        );
        self.acks_changed.notify_one();
        // The session ended before it was sent: the delivery comes back with the channel.
        acked.await.unwrap_or(Some(Ok(false)))
    }

    /// Tells the session that the broker left `op` unanswered.
    pub(crate) fn not_answered(&self, op: &'static str) {
        tracing::warn!(
            op,
            "the broker did not answer within 10 s; giving up the consume connection (its \
             unacked tasks come back to the queue: one may run again, its duplicate result \
             is ignored)"
        );
        // A permit is kept when the session is not waiting at this moment.
        self.unanswered.notify_one();
    }

    /// Handles one delivery; an error means no task may run here any more. Every log line
    /// of its handling carries its task id and the trace and span ids of its `traceparent`.
    ///
    /// `received`: when the delivery arrived (it may have waited behind higher priorities).
    pub(crate) async fn handle(
        &self,
        delivery: Delivery,
        received: Instant,
    ) -> Result<(), SandboxError> {
        let span = task_span(&delivery.properties);
        self.handle_in_span(delivery, received)
            .instrument(span)
            .await
    }

    async fn handle_in_span(
        &self,
        delivery: Delivery,
        // The broker takes the delivery back (closing the channel) past its consumer timeout.
        received: Instant,
    ) -> Result<(), SandboxError> {
        if self.leave_to_another(&delivery) {
            self.pass_on(&delivery).await;
            return Ok(());
        }
        match decide(&delivery.data, &self.config) {
            Disposition::DeadLetter(reason) => {
                tracing::warn!(%reason, bytes = delivery.data.len(), "dead-lettering a message");
                let id = amqp::message_id_of(&delivery.properties);
                let message = Message {
                    exchange: amqp::DEAD_LETTER_EXCHANGE,
                    routing_key: amqp::TODO_QUEUE,
                    message_id: &id,
                    body: &delivery.data,
                    reason: Some(&reason),
                };
                let traceparent = amqp::traceparent_of(&delivery.properties);
                let published = self
                    .publisher
                    .publish(message, traceparent.as_ref(), self.publish_by(received))
                    .await;
                if published.is_ok() {
                    self.metrics.dead_lettered.inc();
                }
                self.settle(&delivery, published).await;
                Ok(())
            }
            Disposition::Run(task) | Disposition::Refuse(task, _)
                if self.cancelled.contains(&task.project) =>
            {
                self.drop_cancelled(&delivery, &task).await;
                Ok(())
            }
            Disposition::Refuse(task, reason) => {
                tracing::warn!(task = %task.id(), %reason, "refusing a task");
                let started = OffsetDateTime::now_utc();
                let attempt = amqp::delay::attempt(&delivery.properties);
                let kind = task.spec.kind();
                let result = TaskResult::failed(&task, reason);
                let result = self.stamped(result, &task, attempt, started).await;
                self.report(&delivery, kind, result, received).await;
                Ok(())
            }
            Disposition::Run(task) => self.run(&delivery, task, received).await,
        }
    }

    async fn run(
        &self,
        delivery: &Delivery,
        task: Task,
        received: Instant,
    ) -> Result<(), SandboxError> {
        // Finishing by then leaves a margin below the consumer timeout to publish the result.
        let deadline = received + self.config.holding_bound();
        let attempt = amqp::delay::attempt(&delivery.properties);
        let started = OffsetDateTime::now_utc();
        let mut engine_wait = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let kind = task.spec.kind();
        self.metrics.started.with_label_values(&[kind]).inc();
        loop {
            tracing::debug!(task = %task.id(), attempt, "running");
            let ran = self.runner.run(&task, deadline).await;
            // Its container was stopped, or it finished as the cancellation came: nothing
            // more is published for a cancelled project.
            let fatal = matches!(ran, Err(RunError::Sandbox(_)));
            if !fatal && self.cancelled.contains(&task.project) {
                self.drop_cancelled(delivery, &task).await;
                return Ok(());
            }
            match ran {
                Ok(result) => {
                    self.metrics
                        .duration
                        .with_label_values(&[kind])
                        .observe(result.duration_ms as f64 / 1000.0);
                    let result = self.stamped(result, &task, attempt, started).await;
                    self.report(delivery, kind, result, received).await;
                    return Ok(());
                }
                Err(RunError::Sandbox(e)) => {
                    self.nack(delivery).await;
                    return Err(e);
                }
                // The engine is down: hold the delivery and wait, without spending an attempt,
                // while the task can still finish before the delivery's deadline. Past
                // `--engine-grace` the session ends instead (`engine.rs`), which returns it.
                Err(RunError::Engine(e)) if !self.runner.ping().await => {
                    self.metrics.engine_errors.inc();
                    let timeout = Runner::timeout_of(&task, &self.config);
                    if Instant::now() + engine_wait.peek() + timeout > deadline {
                        tracing::warn!(task = %task.id(), error = %e, "Docker engine unreachable for too long; returning the task before the broker's consumer timeout");
                        self.metrics.retried.with_label_values(&[kind]).inc();
                        self.nack(delivery).await;
                        return Ok(());
                    }
                    tracing::warn!(task = %task.id(), error = %e, "Docker engine unreachable; waiting");
                    tokio::time::sleep(engine_wait.next_delay()).await;
                }
                Err(e) if amqp::delay::is_last_attempt(&delivery.properties) => {
                    self.count_engine_error(&e);
                    let reason = format!("gave up after {attempt} attempts, the last: {e}");
                    tracing::error!(task = %task.id(), %reason, "task failed for good; dead-lettering it");
                    self.give_up(delivery, &task, &reason, received).await;
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(task = %task.id(), error = %e, attempt, "task will run again after a delay");
                    self.count_engine_error(&e);
                    self.metrics.retried.with_label_values(&[kind]).inc();
                    self.retry_later(delivery, attempt, received).await;
                    return Ok(());
                }
            }
        }
    }

    /// Whether the delivery asks for another executant than this one (a `verify` re-run, a
    /// `--replicas` run) and may still be returned for one.
    fn leave_to_another(&self, delivery: &Delivery) -> bool {
        amqp::leave_to_another(&delivery.properties, &self.config.name)
    }

    /// Leaves a delivery to another executant: publishes a copy at the tail of the queue it
    /// came from (`todo`, or `todo.<name>`: [`amqp::delay::origin_queue`]; its
    /// passes counted, [`amqp::pass_on_properties`]), then acks it; if the copy is not
    /// confirmed, returns the delivery instead.
    async fn pass_on(&self, delivery: &Delivery) {
        tracing::debug!("a delivery asks for another executant; passing it on");
        tokio::time::sleep(amqp::AVOID_PAUSE).await;
        let props = amqp::pass_on_properties(&delivery.properties);
        let origin = amqp::delay::origin_queue(delivery.routing_key.as_str());
        let deadline = Instant::now() + Duration::from_secs(30);
        let copied = self
            .publisher
            .publish_with("", origin, &delivery.data, props, deadline)
            .await;
        match copied {
            Ok(()) => {
                if let Some(Err(e)) = self.ack(delivery).await {
                    // The task is in `todo` twice: it may run twice, counted once.
                    tracing::warn!(error = %e, "ack of a delivery passed on failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot pass a delivery on; returning it");
                self.nack(delivery).await;
            }
        }
    }

    /// `result` with the digest of `task` and its provenance: every result this executant
    /// publishes says which task it answers and where it came from.
    async fn stamped(
        &self,
        mut result: TaskResult,
        task: &Task,
        attempt: i64,
        started: OffsetDateTime,
    ) -> TaskResult {
        let attempt = attempt.clamp(1, u32::MAX.into()) as u32;
        result.digest = Some(task.digest());
        result.provenance = Some(Box::new(
            self.runner.provenance(task, attempt, started).await,
        ));
        result
    }

    /// Publishes a result to its project's queue (in one message with the project's other
    /// results ready at the same moment), then acks (or nacks if it was not confirmed).
    async fn report(
        &self,
        delivery: &Delivery,
        kind: &'static str,
        result: TaskResult,
        received: Instant,
    ) {
        let traceparent = amqp::traceparent_of(&delivery.properties);
        let ok = matches!(result.outcome, tasks::Outcome::Ok { .. });
        let (index, duration_ms) = (result.index, result.duration_ms);
        let project = result.project.clone();
        let published = self
            .publish_result(result, traceparent, self.publish_by(received))
            .await;
        if published.is_ok() {
            let counter = if ok {
                &self.metrics.succeeded
            } else {
                &self.metrics.failed
            };
            counter.with_label_values(&[kind]).inc();
            tracing::info!(
                task = %format!("{project}/{index}"),
                status = if ok { "ok" } else { "failed" },
                duration_ms,
                "task done"
            );
        }
        self.settle(delivery, published).await;
    }

    async fn publish_result(
        &self,
        result: TaskResult,
        traceparent: Option<TraceParent>,
        deadline: Instant,
    ) -> Result<(), Arc<PublishError>> {
        self.ensure_results_queue(&result.project, deadline)
            .await
            .map_err(Arc::new)?;
        self.results.publish(result, traceparent, deadline).await
    }

    /// Declares the project's results queue once, so a result is never unroutable even if
    /// the client has not declared it yet.
    async fn ensure_results_queue(
        &self,
        project: &str,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        if self.declared.lock().await.contains(project) {
            return Ok(());
        }
        self.publisher.declare_results(project, deadline).await?;
        self.declared.lock().await.insert(project.to_string());
        Ok(())
    }

    fn count_engine_error(&self, e: &RunError) {
        if matches!(e, RunError::Engine(_)) {
            self.metrics.engine_errors.inc();
        }
    }

    /// Publishing is retried until the broker's consumer timeout: past it, the broker has
    /// taken the delivery back anyway.
    fn publish_by(&self, received: Instant) -> Instant {
        received + self.config.consumer_timeout
    }

    async fn settle<E: std::fmt::Display>(&self, delivery: &Delivery, published: Result<(), E>) {
        match published {
            // An ack on a channel that is gone is not sent (`Ok(false)`), not an error.
            Ok(()) => match self.ack(delivery).await {
                None | Some(Ok(true)) => {}
                Some(Ok(false)) => tracing::warn!("ack not sent (the consume channel is gone); the task will be redelivered (its duplicate result is ignored)"),
                Some(Err(e)) => tracing::warn!(error = %e, "ack failed; the task will be redelivered (its duplicate result is ignored)"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "outcome not confirmed by the broker; returning the task");
                self.nack(delivery).await;
            }
        }
    }

    /// Publishes a copy of the delivery to the delay queue of its next wait (attempt
    /// `attempt` has just failed), then acks it; it comes back to the queue it came from
    /// when the wait is over. Not confirmed, the delivery is returned at once instead.
    async fn retry_later(&self, delivery: &Delivery, attempt: i64, received: Instant) {
        let delay = amqp::delay::delay_before(
            attempt + 1,
            self.config.retry_delay,
            self.config.retry_delay_max,
        );
        let origin = amqp::delay::origin_queue(delivery.routing_key.as_str());
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            origin,
            "delaying the next attempt"
        );
        let props = amqp::delay::delayed_properties(&delivery.properties, attempt);
        let published = self
            .publisher
            .publish_delayed(
                delay,
                origin,
                &delivery.data,
                props,
                self.publish_by(received),
            )
            .await;
        self.settle(delivery, published).await;
    }

    /// Dead-letters a task whose last attempt failed for a fault outside it, with `reason`
    /// (to `todo.dead`, and to its project as a failed outcome), then acks it.
    async fn give_up(&self, delivery: &Delivery, task: &Task, reason: &str, received: Instant) {
        let mut props = delivery.properties.clone();
        let mut headers = props.headers().clone().unwrap_or_default();
        headers.insert(
            amqp::REASON_HEADER.into(),
            lapin::types::AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            amqp::PROJECT_HEADER.into(),
            lapin::types::AMQPValue::LongString(task.project.as_str().into()),
        );
        props = props.with_headers(headers);
        let published = self
            .publisher
            .publish_copy(
                amqp::DEAD_LETTER_EXCHANGE,
                amqp::TODO_QUEUE,
                &delivery.data,
                props,
                self.publish_by(received),
            )
            .await;
        if published.is_ok() {
            self.metrics.dead_lettered.inc();
        }
        self.settle(delivery, published).await;
    }

    /// Acks a task of a cancelled project without publishing anything.
    async fn drop_cancelled(&self, delivery: &Delivery, task: &Task) {
        tracing::info!(task = %task.id(), "task of a cancelled project dropped");
        if let Some(Err(e)) = self.ack(delivery).await {
            tracing::warn!(error = %e, "ack of a cancelled task failed; it will be dropped again");
        }
    }

    async fn nack(&self, delivery: &Delivery) {
        let options = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        match amqp::answered(delivery.nack(options)).await {
            Some(Ok(_)) => self.returned(delivery.delivery_tag),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "nack failed; the broker returns the task when the channel closes")
            }
            None => self.not_answered("nack"),
        }
    }
}

/// The same outcome of an ack, for each delivery it settled.
fn clone_acked(acked: &Acked) -> Acked {
    acked
        .as_ref()
        .map(|r| r.as_ref().map(|b| *b).map_err(Clone::clone))
}
