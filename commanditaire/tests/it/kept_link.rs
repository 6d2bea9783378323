//! The client's kept publishing link (`broker::KeptLink`, a follower's top-ups share one
//! connection): a publication on it must reach `todo` whatever happened to the link or to
//! the queue since the one before, and every task must be there once per publication.

use std::collections::BTreeSet;
use std::process::Command;

use commanditaire::broker::{publish_on, KeptLink};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use tasks::amqp::{self, Nodes};
use tasks::test_support::{echo_project, own_vhost, vhost_of};
use tasks::trace::TraceId;
use tasks::{Priority, Task};

const VHOST: &str = "it-kept-link";

/// Messages ready in `todo` (declared if missing, as a publisher would).
async fn ready(channel: &lapin::Channel) -> u32 {
    amqp::declare_todo(channel).await.unwrap();
    amqp::inspect(channel, amqp::TODO_QUEUE)
        .await
        .unwrap()
        .message_count()
}

/// The task ids in `todo`, taken and acked.
async fn drain(channel: &lapin::Channel, count: u32) -> Vec<String> {
    let mut consumer = channel
        .basic_consume(
            amqp::TODO_QUEUE.into(),
            "kept-link-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..count {
        let delivery = consumer.next().await.unwrap().unwrap();
        ids.push(amqp::message_id_of(&delivery.properties));
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    ids
}

/// Closes every connection of the test's vhost, as an operator (or a node restart) would.
fn close_connections(url: &str) {
    let status = Command::new("rabbitmqctl")
        .args(["-q", "close_all_connections", "--vhost"])
        .arg(vhost_of(url))
        .arg("closed by a test")
        .status()
        .unwrap();
    assert!(status.success(), "rabbitmqctl close_all_connections failed");
}

#[tokio::test]
async fn a_kept_link_publishes_after_its_queue_was_deleted_and_its_connection_closed() {
    let url = own_vhost(VHOST);
    let nodes = Nodes::parse(&url);
    let project = echo_project("kept-link", 1000);
    let tasks: Vec<Task> = project.tasks.to_vec();
    let trace = TraceId::derived_from(&project.id);
    let publish = |range: std::ops::Range<usize>, kept: &'static KeptLink| {
        let (nodes, tasks, id) = (&nodes, &tasks, project.id.clone());
        async move {
            publish_on(
                nodes,
                Some(kept),
                &id,
                &trace,
                Priority::Normal,
                &tasks[range],
            )
            .await
        }
    };
    let kept: &'static KeptLink = Box::leak(Box::default());

    let conn = amqp::connect(&url, "kept-link test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    // Whatever an earlier run left.
    let _ = channel
        .queue_delete(amqp::TODO_QUEUE.into(), QueueDeleteOptions::default())
        .await;
    let channel = conn.create_channel().await.unwrap();

    // The first publication opens the link and keeps it; several windows of 256, each sent
    // while the one before is confirmed.
    publish(0..600, kept).await.unwrap();
    assert_eq!(ready(&channel).await, 600);

    // `todo` deleted behind the kept link's back: the broker returns what the link sends,
    // and the publication goes on on a new connection, which declares the queue again.
    channel
        .queue_delete(amqp::TODO_QUEUE.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    publish(600..700, kept).await.unwrap();
    assert_eq!(
        ready(&channel).await,
        100,
        "the new todo holds the second batch"
    );

    // The kept connection closed by the broker: the next publication opens another.
    close_connections(&url);
    let conn = amqp::connect(&url, "kept-link test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    publish(700..1000, kept).await.unwrap();
    assert_eq!(ready(&channel).await, 400);

    // Each task of the last two publications once, none of the deleted queue's.
    let ids: Vec<String> = drain(&channel, 400).await;
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 400, "a task published twice: {ids:?}");
    let expected: BTreeSet<String> = tasks[600..1000].iter().map(Task::id).collect();
    assert_eq!(unique, expected.iter().collect());

    // One publishing connection, kept; closing it leaves none behind.
    assert_eq!(publishing_connections(&url), 1);
    kept.close().await;
    let mut left = publishing_connections(&url);
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = publishing_connections(&url);
    }
    assert_eq!(left, 0, "the kept connection is still open after close");
    let _ = conn.close(200, "done".into()).await;
}

/// How many connections of the test's vhost the client named for publishing.
fn publishing_connections(url: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "--no-table-headers", "list_connections", "-p"])
        .arg(vhost_of(url))
        .arg("client_properties")
        .output()
        .unwrap();
    assert!(out.status.success(), "rabbitmqctl list_connections failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains("{\"connection_name\",\"commanditaire publish\"}"))
        .count()
}
