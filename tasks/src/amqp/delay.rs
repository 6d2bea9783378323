//! Retry with backoff through the broker: delay queues, one per delay.
//!
//! A task returned after a fault outside it is published to the delay queue of its wait
//! (`todo.delay.1s`, `todo.delay.2s`, ...) instead of going straight back to its queue. A
//! delay queue has one message TTL for all its messages (`x-message-ttl`) and dead-letters
//! an expired message to the default exchange with its routing key unchanged: the copy is
//! published with the name of the queue the task came from as routing key, so it goes back
//! there, whatever that queue is (`todo`, or another work queue), without the delay queue
//! knowing it.
//!
//! One queue per delay, not per-message TTLs in one queue: a queue only expires messages at
//! its head, so a 60 s wait at the head would hold back every 1 s wait behind it.
//!
//! Each delay queue is fed through a fanout exchange of the same name: a fanout ignores the
//! routing key, so the key can carry the origin queue while the exchange picks the delay.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use super::{op, BrokerError, DELIVERY_LIMIT};

/// The prefix of every delay queue (and of its exchange).
pub const DELAY_QUEUE_PREFIX: &str = "todo.delay.";
/// Header counting a task's attempts that ended in a fault outside it and sent it through
/// a delay queue: the copy coming back starts a fresh `x-delivery-count`, so the attempts
/// made before it are carried here.
pub const ATTEMPT_HEADER: &str = "x-platform-attempt";
/// The most attempts a task gets: as many as `todo`'s delivery limit allows one message.
pub const MAX_ATTEMPTS: i64 = DELIVERY_LIMIT + 1;

/// The delay queue (and exchange) holding messages for `delay`: `todo.delay.1s` for whole
/// seconds, `todo.delay.250ms` otherwise. One name, one TTL: two executants configured
/// differently never declare the same queue with different arguments.
pub fn delay_queue(delay: Duration) -> String {
    let ms = delay.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{DELAY_QUEUE_PREFIX}{}s", ms / 1000)
    } else {
        format!("{DELAY_QUEUE_PREFIX}{ms}ms")
    }
}

/// The work queue a delivery came from, by its routing key (tasks are published to their
/// queue on the default exchange, and a copy back from a delay queue keeps the key):
/// `todo` or a queue named `todo.<something>` other than a delay queue and `todo.dead`;
/// [`super::TODO_QUEUE`] for any other key, so a delayed copy never comes back unroutable.
pub fn origin_queue(routing_key: &str) -> &str {
    let work_queue = routing_key == super::TODO_QUEUE
        || (routing_key.starts_with("todo.")
            && routing_key.len() > "todo.".len()
            && !routing_key.starts_with(DELAY_QUEUE_PREFIX)
            && routing_key != super::DEAD_QUEUE);
    if work_queue {
        routing_key
    } else {
        super::TODO_QUEUE
    }
}

/// The wait before attempt `next` (2 for the first retry): `first` doubled for each retry
/// before it, capped at `max`.
pub fn delay_before(next: i64, first: Duration, max: Duration) -> Duration {
    let doublings = (next - 2).clamp(0, 30) as u32;
    first.saturating_mul(1 << doublings).min(max)
}

/// Declares the delay queue of `delay` and its fanout exchange (idempotent); returns the
/// name of both. The queue is a quorum queue dead-lettering at least once, like `todo`, so
/// an expired copy is not lost on its way back.
pub async fn declare_delay(channel: &Channel, delay: Duration) -> Result<String, BrokerError> {
    let name = delay_queue(delay);
    channel
        .exchange_declare(
            name.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(op("declare a delay exchange"))?;
    channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            delay_arguments(delay),
        )
        .await
        .map_err(op("declare a delay queue"))?;
    channel
        .queue_bind(
            name.as_str().into(),
            name.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(op("bind a delay queue"))?;
    Ok(name)
}

fn delay_arguments(delay: Duration) -> FieldTable {
    let mut args = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(delay.as_millis().min(i64::MAX as u128) as i64),
    );
    // The default exchange, and no dead-letter routing key: the message keeps the routing
    // key it was published with, the queue it came from.
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    args.insert("x-overflow".into(), text("reject-publish"));
    args
}

/// The attempts a message's earlier copies made ([`ATTEMPT_HEADER`]; 0 without it).
pub fn earlier_attempts(props: &BasicProperties) -> i64 {
    let Some(headers) = props.headers().as_ref() else {
        return 0;
    };
    match headers.inner().get(ATTEMPT_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => *n as i64,
        Some(AMQPValue::ShortInt(n)) => *n as i64,
        _ => 0,
    }
    .max(0)
}

/// This delivery's attempt, counted from 1 over every copy: the earlier copies' attempts
/// plus the deliveries of this one.
pub fn attempt(props: &BasicProperties) -> i64 {
    earlier_attempts(props) + super::delivery_count(props) + 1
}

/// Whether this delivery is the task's last attempt: a fault now dead-letters it.
pub fn is_last_attempt(props: &BasicProperties) -> bool {
    attempt(props) >= MAX_ATTEMPTS || super::is_last_delivery(props)
}

/// The properties of the delayed copy of a delivery whose attempt `attempt` failed: the
/// same message id, headers and properties, with [`ATTEMPT_HEADER`] set to `attempt` and
/// the broker's delivery count left out (the copy is a new message to the queue).
pub fn delayed_properties(props: &BasicProperties, attempt: i64) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (key, value) in props
        .headers()
        .as_ref()
        .map(|h| h.inner())
        .into_iter()
        .flatten()
    {
        if key.as_str() != "x-delivery-count" {
            headers.insert(key.clone(), value.clone());
        }
    }
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(attempt));
    props.clone().with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_delays() {
        let ms = Duration::from_millis;
        assert_eq!(delay_queue(ms(1000)), "todo.delay.1s");
        assert_eq!(delay_queue(ms(60_000)), "todo.delay.60s");
        assert_eq!(delay_queue(ms(250)), "todo.delay.250ms");
        let table = [
            (2, 1000),
            (3, 2000),
            (4, 4000),
            (7, 32_000),
            (8, 60_000),
            (99, 60_000),
        ];
        for (next, want) in table {
            assert_eq!(delay_before(next, ms(1000), ms(60_000)), ms(want), "{next}");
        }
    }

    #[test]
    fn copies_go_back_to_a_work_queue() {
        let table = [
            ("todo", "todo"),
            ("todo.high", "todo.high"),
            ("", "todo"),
            ("todo.", "todo"),
            ("todo.dead", "todo"),
            ("todo.delay.1s", "todo"),
            ("jobs", "todo"),
        ];
        for (key, want) in table {
            assert_eq!(origin_queue(key), want, "{key:?}");
        }
    }

    #[test]
    fn attempts_add_up_over_copies() {
        let mut headers = FieldTable::default();
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        headers.insert("x-project".into(), AMQPValue::LongString("p".into()));
        let props = BasicProperties::default()
            .with_message_id("p/0".into())
            .with_headers(headers);
        assert_eq!(attempt(&props), 3);
        let copy = delayed_properties(&props, 3);
        assert_eq!(earlier_attempts(&copy), 3);
        assert_eq!(attempt(&copy), 4, "the delivery count is not carried over");
        assert_eq!(copy.message_id(), props.message_id());
        let headers = copy.headers().as_ref().unwrap().inner();
        assert!(headers.contains_key("x-project"));
        assert!(!is_last_attempt(&copy));
        assert!(is_last_attempt(&delayed_properties(
            &props,
            MAX_ATTEMPTS - 1
        )));
    }
}
