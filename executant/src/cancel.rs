//! Cancellations: the executant reads [`amqp::CANCELLATIONS_STREAM`] from its start for as
//! long as it runs, so it knows every project cancelled in the stream's retention. For each
//! cancellation it kills the project's running containers, answers the canceller (the
//! message's `reply_to`) with how many, and from then on acks the project's deliveries
//! without running or publishing anything ([`crate::handle`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use tasks::amqp::{self, BrokerError, Cancellation, Stopped};

use crate::config::Config;
use crate::runner::Runner;

/// The projects known to be cancelled.
#[derive(Debug, Default)]
pub(crate) struct Cancelled {
    projects: Mutex<HashSet<String>>,
}

impl Cancelled {
    /// Whether `project` was cancelled.
    pub(crate) fn contains(&self, project: &str) -> bool {
        self.lock().contains(project)
    }

    /// Records that `project` was cancelled; whether it is news.
    fn insert(&self, project: &str) -> bool {
        self.lock().insert(project.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.projects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads the cancellations until the task is aborted, reconnecting when the broker goes away.
pub(crate) async fn listen(config: Arc<Config>, runner: Arc<Runner>, cancelled: Arc<Cancelled>) {
    loop {
        if let Err(e) = listen_once(&config, &runner, &cancelled).await {
            tracing::warn!(error = %e, "reading cancellations failed; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(
    config: &Config,
    runner: &Runner,
    cancelled: &Cancelled,
) -> Result<(), BrokerError> {
    let name = format!("executant {} control", config.name);
    let conn = amqp::connect_with_backoff(&config.amqp_url, &name, None).await?;
    // Each broker operation bounded (`amqp::OP_TIMEOUT`): past it, the connection is dropped
    // and the listener starts again.
    let (channel, mut consumer) =
        amqp::bounded("start reading cancellations", start(config, &conn)).await?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.map_err(amqp::op("read cancellations"))?;
        if let Ok(c) = serde_json::from_slice::<Cancellation>(&delivery.data) {
            let news = cancelled.insert(&c.project);
            let containers = runner.stop_project(&c.project).await;
            if news {
                tracing::info!(project = %c.project, containers, "project cancelled: its tasks are dropped");
            }
            if let Some(reply_to) = delivery.properties.reply_to() {
                let answer = Stopped {
                    executant: config.name.clone(),
                    project: c.project,
                    containers,
                };
                let body = serde_json::to_vec(&answer).expect("serializable");
                // To a queue of the canceller's that may be gone (an old cancellation read
                // again at start): not mandatory, so the broker drops it.
                let published = amqp::answered(channel.basic_publish(
                    "".into(),
                    reply_to.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                ));
                if published.await.is_none() {
                    return Err(amqp::unanswered("answer a cancellation"));
                }
            }
        }
        amqp::answered(delivery.ack(BasicAckOptions::default()))
            .await
            .ok_or_else(|| amqp::unanswered("ack a cancellation"))?
            .map_err(amqp::op("ack a cancellation"))?;
    }
    let _ = amqp::answered(conn.close(200, "reconnecting".into())).await;
    Ok(())
}

/// Opens the channel and starts consuming the cancellations stream, from its first message.
async fn start(
    config: &Config,
    conn: &lapin::Connection,
) -> Result<(lapin::Channel, lapin::Consumer), BrokerError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(amqp::op("open channel"))?;
    amqp::declare_control(&channel).await?;
    // A stream is consumed with a prefetch and acks; from its first message.
    channel
        .basic_qos(100, BasicQosOptions::default())
        .await
        .map_err(amqp::op("set prefetch"))?;
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString(LongString::from("first")),
    );
    let consumer = channel
        .basic_consume(
            amqp::CANCELLATIONS_STREAM.into(),
            format!("executant-{}-control", config.name).as_str().into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .map_err(amqp::op("consume cancellations"))?;
    Ok((channel, consumer))
}
