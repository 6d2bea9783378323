//! Retention (`scripts/rabbitmq-retention.sh`): a results queue nobody uses expires, and an
//! entry of `todo.dead` is dropped after its time, on the topology the binaries declare.

use std::time::{Duration, Instant};

use tasks::amqp::{self, Message};

use crate::support::*;

/// Runs the retention script on `vhost` with times in milliseconds.
fn set_retention(vhost: &str, results_ms: u64, dead_ms: u64) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/rabbitmq-retention.sh"
    );
    let status = std::process::Command::new(script)
        .args(["--vhost", vhost])
        .args(["--results-expire-ms", &results_ms.to_string()])
        .args(["--dead-ttl-ms", &dead_ms.to_string()])
        .status()
        .expect("running rabbitmq-retention.sh");
    assert!(status.success(), "rabbitmq-retention.sh failed");
}

/// The queues of `vhost` and how many messages each holds, as the broker lists them
/// (looking through `rabbitmqctl` does not count as using a queue, which would renew it).
fn queues(vhost: &str) -> std::collections::BTreeMap<String, u64> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "--no-table-headers",
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages",
        ])
        .output()
        .expect("running rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl list_queues failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, n)| (name.trim().to_string(), n.trim().parse().unwrap_or(0)))
        .collect()
}

/// Waits until `check` holds, polling every 300 ms; returns how long it took.
async fn until<F>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> bool,
{
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn unused_results_queues_expire_and_dead_tasks_are_dropped_in_time() {
    let name = "executant-tests-retention";
    let url = own_vhost(name);
    set_retention(name, 1500, 1500);
    let id = unique_project("retention");
    let conn = amqp::connect(&url, "retention test").await.unwrap();
    let channel = amqp::confirm_channel(&conn).await.unwrap();
    amqp::declare_todo(&channel).await.unwrap();
    let queue = amqp::declare_results(&channel, &id, &amqp::Nodes::parse(&url))
        .await
        .unwrap();
    // Dead-lettered as an executant does it: to todo.dead, and to the project's queue.
    let task_id = format!("{id}/0");
    let message = Message {
        exchange: amqp::DEAD_LETTER_EXCHANGE,
        routing_key: amqp::TODO_QUEUE,
        message_id: &task_id,
        body: b"{}",
        reason: Some("retention test"),
    };
    amqp::publish(&channel, message).await.unwrap();
    let published = Instant::now();

    // The policy applies to the whole vhost: todo.dead empties, whatever it held before. Its
    // depth is read from the queue itself (a passive declare): `rabbitmqctl list_queues`
    // shows a quorum queue's counters as last reported, which lag behind it.
    let mut seen = false;
    let dropped = loop {
        let depth = amqp::inspect(&channel, amqp::DEAD_QUEUE)
            .await
            .unwrap()
            .message_count();
        seen |= depth > 0;
        if seen && depth == 0 {
            break published.elapsed();
        }
        assert!(
            published.elapsed() < Duration::from_secs(20),
            "todo.dead not emptied within 20 s (entry seen: {seen})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(seen, "the dead-lettered entry never reached todo.dead");
    let _ = conn.close(200, "done".into()).await;
    until(Duration::from_secs(20), "the results queue expired", || {
        !queues(name).contains_key(&queue)
    })
    .await;
    let expired = published.elapsed();
    assert!(
        dropped >= Duration::from_millis(1000),
        "todo.dead emptied after {dropped:?}: the entry was not kept its 1.5 s"
    );
    assert!(
        expired >= Duration::from_millis(1500),
        "the results queue went after {expired:?}, before its 1.5 s"
    );
    eprintln!("retention 1.5 s: todo.dead emptied after {dropped:?}, the results queue gone {expired:?} after its last use");
}
