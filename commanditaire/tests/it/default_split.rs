//! The default split of an N-queens board follows the executants consuming `todo`;
//! `--depth` overrides it.

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use tasks::amqp;

use crate::support::*;

/// Publishes N = 18 detached with `args`; the number of tasks published.
fn published(url: &str, args: &[&str]) -> (u64, String) {
    let ws = tempfile::tempdir().unwrap();
    let output = client(ws.path())
        .env("AMQP_URL", url)
        .args(["--json", "nqueens", "18", "--detach"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let project = value["project"].as_str().unwrap().to_string();
    (value["published"].as_u64().unwrap(), project)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_split_follows_the_executants_on_todo() {
    // A vhost of its own: the consumers on its `todo` are this test's alone, and nothing runs
    // the tasks published (they are deleted with the queue).
    let url = own_vhost("commanditaire-tests-default-split");
    let conn = amqp::connect(&url, "default split test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(amqp::TODO_QUEUE.into(), QueueDeleteOptions::default())
        .await;

    // No executant yet: split for one (64 tasks at least, and 167 for the board's work:
    // depth 3, 1,354 tasks).
    let (alone, first) = published(&url, &[]);
    assert_eq!(alone, 1_354);

    // 32 consumers (each holding one task, acking none): 2,048 tasks at least, depth 4.
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumers = Vec::new();
    for k in 0..32 {
        let consumer = channel
            .basic_consume(
                amqp::TODO_QUEUE.into(),
                format!("stand-in-{k}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        consumers.push(consumer);
    }
    let (many, second) = published(&url, &[]);
    assert_eq!(many, 12_936);
    // --depth overrides the rule.
    let (fixed, third) = published(&url, &["--depth", "2"]);
    assert_eq!(fixed, 121);
    // The stand-ins did take tasks: they were consumers the broker counted.
    let taken = consumers[0].next().await.unwrap().unwrap();
    assert!(taken.data.starts_with(b"{"));

    // The stand-ins' channel closed, not their consumers dropped one by one: lapin takes the
    // cancel-oks of dropped consumers for unexpected frames and closes the connection.
    let _ = channel.close(200, "done".into()).await;
    drop(consumers);
    let _ = conn.close(200, "done".into()).await;
    let conn = amqp::connect(&url, "default split cleanup").await.unwrap();
    let cleanup = conn.create_channel().await.unwrap();
    for project in [first, second, third] {
        cleanup
            .queue_delete(
                amqp::results_queue(&project).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .unwrap();
    }
    cleanup
        .queue_delete(amqp::TODO_QUEUE.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "done".into()).await.unwrap();
}
