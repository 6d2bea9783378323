//! Issue 11, item 3: a task dead-lettered for any reason reaches its client as a failed
//! outcome with the broker's reason, and `resume --retry-failed` runs it again.

use std::time::Duration;

use commanditaire::tracking::{self, BatchPolicy, Tracker};
use commanditaire::Workspace;
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use tasks::amqp::{self, Message};
use tasks::test_support::echo_project;
use tasks::{TaskOutput, TaskResult};

use crate::broker::{client_json_within, forget_results_queue, nodes, with_channel};
use crate::support::{git_log, Executant};

/// A queue like `todo` (quorum, delivery limit, dead-lettered to `todo.dlx`), of this test
/// only: no executant takes what is put there.
const TRAP: &str = "test-dead-letters";

#[test]
fn a_task_dead_lettered_by_the_delivery_limit_fails_its_project_and_can_be_retried() {
    forget_results_queue("dead");
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open_or_init(dir.path()).unwrap();
    let project = echo_project("dead", 2);
    tracking::record_project(&ws, &project, &serde_json::json!({})).unwrap();
    Tracker::load(&ws, project.clone(), BatchPolicy::default())
        .mark_published()
        .unwrap();
    let (task0, task1) = (project.tasks.get(0).unwrap(), project.tasks.get(1).unwrap());

    let deliveries = with_channel(async |ch| {
        amqp::declare_todo(ch).await.unwrap();
        amqp::declare_results(ch, "dead", &nodes()).await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(amqp::DELIVERY_LIMIT),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(amqp::DEAD_LETTER_EXCHANGE.into()),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(TRAP.into(), durable, args).await.unwrap();
        // Task 0 as the client publishes it (with its project header), then rejected back
        // to the queue until the broker gives up on it.
        amqp::publish_with_properties(
            ch,
            "",
            TRAP,
            &task0.to_json(),
            amqp::task_properties(&task0),
        )
        .await
        .unwrap();
        let mut deliveries = 0;
        let mut idle = 0;
        while idle < 30 {
            match ch
                .basic_get(TRAP.into(), BasicGetOptions::default())
                .await
                .unwrap()
            {
                Some(got) => {
                    deliveries += 1;
                    idle = 0;
                    got.delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
                None => {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let _ = ch
            .queue_delete(TRAP.into(), QueueDeleteOptions::default())
            .await;
        // Task 1 succeeded on some executant.
        let result = TaskResult::ok(
            &task1,
            TaskOutput::Exec {
                stdout: "task 1\n".into(),
            },
        );
        amqp::publish(
            ch,
            Message {
                exchange: amqp::RESULTS_EXCHANGE,
                routing_key: "dead",
                message_id: &task1.id(),
                body: &result.to_json(),
                reason: None,
            },
        )
        .await
        .unwrap();
        deliveries
    });
    assert!(
        deliveries >= 2,
        "the broker delivered the task {deliveries} times"
    );

    let (code, json, _) =
        client_json_within(dir.path(), &["resume", "dead"], Duration::from_secs(60));
    assert_eq!(code, 3, "{json}");
    let failed = json["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{json}");
    assert_eq!(failed[0]["index"], 0);
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(reason.contains("delivery_limit"), "{reason}");
    assert_eq!(json["published"], 0, "{json}");

    // Asked to, resume runs the failed task again; its new outcome replaces the failure.
    let _executant = Executant::start(1);
    let (code, json, _) = client_json_within(
        dir.path(),
        &["resume", "dead", "--retry-failed"],
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["published"], 1, "{json}");
    assert_eq!(json["outputs"], serde_json::json!(["task 0\n", "task 1\n"]));
    let log = git_log(&dir.path().join("tracking"));
    let retried = log
        .iter()
        .position(|l| l.starts_with("Project dead: retrying 1 failed tasks (0)"))
        .unwrap_or_else(|| panic!("{log:?}"));
    assert!(
        log[..retried].iter().any(|l| l.contains("tasks done")),
        "no outcome was recorded after the retry: {log:?}"
    );
    assert!(
        log[0].starts_with("Project dead complete: 2/2 tasks"),
        "{log:?}"
    );
    // The retry record names the task and its old reason; batches stay lines of results.
    let repo = git2::Repository::open(dir.path().join("tracking")).unwrap();
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let folder = |rel: &str| {
        let entry = tree.get_path(std::path::Path::new(rel)).unwrap();
        let sub = repo.find_tree(entry.id()).unwrap();
        sub.iter()
            .map(|e| {
                let blob = repo.find_blob(e.id()).unwrap();
                (e.name().unwrap().to_string(), blob.content().to_vec())
            })
            .collect::<Vec<_>>()
    };
    let retries = folder("dead/retries");
    assert_eq!(retries.len(), 1, "{retries:?}");
    let record: serde_json::Value = serde_json::from_slice(&retries[0].1).unwrap();
    assert_eq!(record["retry"], serde_json::json!([0]));
    assert!(record["failed"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("delivery_limit"));
    for (name, content) in folder("dead/results") {
        assert!(name.ends_with(".jsonl"), "{name}");
        for line in content.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            TaskResult::from_json(line).unwrap();
        }
    }
}

#[test]
fn a_task_an_executant_cannot_read_fails_its_project_with_the_executant_reason() {
    forget_results_queue("unreadable");
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open_or_init(dir.path()).unwrap();
    let project = echo_project("unreadable", 1);
    tracking::record_project(&ws, &project, &serde_json::json!({})).unwrap();
    Tracker::load(&ws, project.clone(), BatchPolicy::default())
        .mark_published()
        .unwrap();
    // Task 0's message, damaged on the way: an executant dead-letters it with its reason.
    with_channel(async |ch| {
        amqp::declare_todo(ch).await.unwrap();
        amqp::declare_results(ch, "unreadable", &nodes())
            .await
            .unwrap();
        amqp::publish_todo(
            ch,
            &project.tasks.get(0).unwrap().id(),
            b"{\"schema\":1,\"proj",
        )
        .await
        .unwrap();
    });
    let _executant = Executant::start(1);
    let (code, json, _) = client_json_within(
        dir.path(),
        &["resume", "unreadable"],
        Duration::from_secs(120),
    );
    assert_eq!(code, 3, "{json}");
    let failed = json["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{json}");
    assert_eq!(failed[0]["index"], 0);
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(reason.contains("unreadable task"), "{reason}");
    // Issue 16: its failed outcome has no digest nor provenance (no executant answered it),
    // and `verify` does not hold that against the record.
    let (code, found, _) = client_json_within(
        dir.path(),
        &["verify", "unreadable", "--sample", "0"],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{found}");
    assert_eq!(found["verified"], true, "{found}");
}
