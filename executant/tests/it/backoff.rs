//! Retry with backoff: a task returned after a fault outside it waits in a delay queue
//! before it runs again, and is dead-lettered with its reason after its last attempt.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use lapin::types::AMQPValue;
use tasks::amqp::{self, delay};

use crate::support::*;

/// How many times the broker expired the message out of each queue (its `x-death`).
fn expirations(props: &lapin::BasicProperties) -> BTreeMap<String, i64> {
    let mut seen = BTreeMap::new();
    let Some(AMQPValue::FieldArray(deaths)) = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death").cloned())
    else {
        return seen;
    };
    for death in deaths.as_slice() {
        let AMQPValue::FieldTable(death) = death else {
            continue;
        };
        let death = death.inner();
        let text = |k: &str| match death.get(k) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            _ => String::new(),
        };
        let count = match death.get("count") {
            Some(AMQPValue::LongLongInt(n)) => *n,
            _ => 0,
        };
        if text("reason") == "expired" {
            seen.insert(text("queue"), count);
        }
    }
    seen
}

/// An executant whose worker image does not exist: every attempt is an engine error (the
/// engine answers, the container cannot be created). The task must be tried 6 times, each
/// retry after the backoff's wait in its delay queue, then dead-lettered with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn engine_faults_back_off_then_dead_letter() {
    // A vhost of its own: this executant fails every task it takes.
    let url = own_vhost("executant-tests-backoff");
    let id = unique_project("backoff");
    let project = tasks::split::nqueens_project(&id, 6, 0).unwrap();
    let mut config = test_config();
    config.amqp_url = url.clone();
    config.worker_image = "taskplatform/no-such-worker:absent".into();
    config.retry_delay = Duration::from_millis(300);
    config.retry_delay_max = Duration::from_millis(1200);
    let executant = InProcess::start(config);

    let conn = amqp::connect(&url, "backoff test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let (queue, mut consumer) = consume_results(&channel, &url, &id).await;
    let published = Instant::now();
    publish_tasks_to(&url, &id, &project.tasks.to_vec()).await;
    let dead = tokio::time::timeout(Duration::from_secs(45), consumer.next())
        .await
        .expect("the task was not dead-lettered within 45 s")
        .unwrap()
        .unwrap();
    let elapsed = published.elapsed();
    dead.ack(BasicAckOptions::default()).await.unwrap();
    executant.stop().await;
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;

    assert_eq!(amqp::message_id_of(&dead.properties), format!("{id}/0"));
    let reason = amqp::reason_of(&dead.properties).expect("a reason header");
    assert!(
        reason.starts_with("gave up after 6 attempts, the last: Docker engine"),
        "{reason}"
    );
    // Five retries, each through the delay queue of its wait: 0.3, 0.6, then the 1.2 s cap.
    let want: BTreeMap<String, i64> = [
        ("todo.delay.300ms".to_string(), 1),
        ("todo.delay.600ms".to_string(), 1),
        ("todo.delay.1200ms".to_string(), 3),
    ]
    .into();
    assert_eq!(expirations(&dead.properties), want);
    assert_eq!(delay::earlier_attempts(&dead.properties), 5);
    let waited = Duration::from_millis(300 + 600 + 3 * 1200);
    assert!(
        elapsed >= waited,
        "6 attempts took {elapsed:?}, less than the {waited:?} of backoff"
    );
    eprintln!("backoff: 6 attempts and the dead-lettering took {elapsed:?} (waits: {waited:?})");
}
