//! Handling one TODO delivery, from decision to ack.
//!
//! Invariant: a delivery is acked only after its outcome (a result, or a dead-lettered copy)
//! was confirmed by the broker. An outcome that could not be published for a lost connection
//! is published again on a new one while the delivery stays unacked (a returned delivery
//! would spend one of its attempts); only a refusal by the broker, or its consumer timeout
//! coming, nacks it back to the queue.
//!
//! A task must finish within the holding bound ([`Config::holding_bound`], below the
//! broker's consumer timeout) of its delivery; the runner keeps to it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tasks::amqp::{self, Message};
use tasks::backoff::Backoff;
use tasks::{Task, TaskResult};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::cancel::Cancelled;
use crate::config::Config;
use crate::disposition::{decide, Disposition};
use crate::publisher::{PublishError, Publisher};
use crate::runner::{RunError, Runner};
use crate::sandbox::SandboxError;

/// What every task handler shares.
pub(crate) struct Context {
    config: Arc<Config>,
    runner: Arc<Runner>,
    publisher: Arc<Publisher>,
    declared: Mutex<HashSet<String>>,
    cancelled: Arc<Cancelled>,
}

impl Context {
    pub(crate) fn new(
        config: Arc<Config>,
        runner: Arc<Runner>,
        publisher: Arc<Publisher>,
        cancelled: Arc<Cancelled>,
    ) -> Context {
        Context {
            config,
            runner,
            publisher,
            declared: Mutex::new(HashSet::new()),
            cancelled,
        }
    }

    /// Handles one delivery; an error means no task may run here any more.
    pub(crate) async fn handle(&self, delivery: Delivery) -> Result<(), SandboxError> {
        // The broker takes the delivery back (closing the channel) past its consumer timeout.
        let received = Instant::now();
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
                let published = self
                    .publisher
                    .publish(message, self.publish_by(received))
                    .await;
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
                self.report(&delivery, TaskResult::failed(&task, reason), received)
                    .await;
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
        let attempt = amqp::delivery_count(&delivery.properties) + 1;
        let mut engine_wait = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
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
                    self.report(delivery, result, received).await;
                    return Ok(());
                }
                Err(RunError::Sandbox(e)) => {
                    self.nack(delivery).await;
                    return Err(e);
                }
                // The engine is down: hold the delivery and wait, without spending an attempt,
                // while the task can still finish before the delivery's deadline.
                Err(RunError::Engine(e)) if !self.runner.ping().await => {
                    let timeout = Runner::timeout_of(&task, &self.config);
                    if Instant::now() + engine_wait.peek() + timeout > deadline {
                        tracing::warn!(task = %task.id(), error = %e, "Docker engine unreachable for too long; returning the task before the broker's consumer timeout");
                        self.nack(delivery).await;
                        return Ok(());
                    }
                    tracing::warn!(task = %task.id(), error = %e, "Docker engine unreachable; waiting");
                    tokio::time::sleep(engine_wait.next_delay()).await;
                }
                Err(e) if amqp::is_last_delivery(&delivery.properties) => {
                    let reason = format!("gave up after {attempt} attempts, the last: {e}");
                    tracing::error!(task = %task.id(), %reason, "task failed for good");
                    self.report(delivery, TaskResult::failed(&task, reason), received)
                        .await;
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(task = %task.id(), error = %e, attempt, "task will run again");
                    self.nack(delivery).await;
                    return Ok(());
                }
            }
        }
    }

    /// Publishes a result to its project's queue, then acks (or nacks if it was not confirmed).
    async fn report(&self, delivery: &Delivery, result: TaskResult, received: Instant) {
        let published = self
            .publish_result(&result, self.publish_by(received))
            .await;
        if published.is_ok() {
            tracing::info!(
                task = %format!("{}/{}", result.project, result.index),
                status = match result.outcome { tasks::Outcome::Ok { .. } => "ok", _ => "failed" },
                duration_ms = result.duration_ms,
                "task done"
            );
        }
        self.settle(delivery, published).await;
    }

    async fn publish_result(
        &self,
        result: &TaskResult,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        self.ensure_results_queue(&result.project, deadline).await?;
        let id = format!("{}/{}", result.project, result.index);
        let message = Message {
            exchange: amqp::RESULTS_EXCHANGE,
            routing_key: &result.project,
            message_id: &id,
            body: &result.to_json(),
            reason: None,
        };
        self.publisher.publish(message, deadline).await
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

    /// Publishing is retried until the broker's consumer timeout: past it, the broker has
    /// taken the delivery back anyway.
    fn publish_by(&self, received: Instant) -> Instant {
        received + self.config.consumer_timeout
    }

    async fn settle(&self, delivery: &Delivery, published: Result<(), PublishError>) {
        match published {
            // An ack on a channel that is gone is not sent (`Ok(false)`), not an error.
            Ok(()) => match delivery.ack(BasicAckOptions::default()).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!("ack not sent (the consume channel is gone); the task will be redelivered (its duplicate result is ignored)"),
                Err(e) => tracing::warn!(error = %e, "ack failed; the task will be redelivered (its duplicate result is ignored)"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "outcome not confirmed by the broker; returning the task");
                self.nack(delivery).await;
            }
        }
    }

    /// Acks a task of a cancelled project without publishing anything.
    async fn drop_cancelled(&self, delivery: &Delivery, task: &Task) {
        tracing::info!(task = %task.id(), "task of a cancelled project dropped");
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            tracing::warn!(error = %e, "ack of a cancelled task failed; it will be dropped again");
        }
    }

    async fn nack(&self, delivery: &Delivery) {
        let options = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        if let Err(e) = delivery.nack(options).await {
            tracing::warn!(error = %e, "nack failed; the broker returns the task when the channel closes");
        }
    }
}
