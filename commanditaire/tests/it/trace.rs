//! Trace context: every task message carries the `traceparent` the client made for its
//! project, the executant passes it on to the outcome and logs each task with its task id,
//! trace id and span id, so one grep of a task's span id follows it through the client's
//! logs, the broker's messages and the executant's logs.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use tasks::trace::{SpanId, TraceId, TraceParent};

use crate::support::*;

/// The lines of `text` that contain `needle`.
fn grep<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn one_grep_of_a_span_id_follows_a_task_across_client_broker_and_executant() {
    let executant_logs = capture_executant_logs();
    // On a vhost of its own: an executant of another process (a test running the binary)
    // could take its tasks, and their log lines would not be captured here.
    let url = own_vhost("commanditaire-trace");
    let _executant = Executant::start_on(&url, 1, |_| {});
    let ws = tempfile::tempdir().unwrap();
    let id = format!("trace-{}", std::process::id());
    let publish = client(ws.path())
        .env("AMQP_URL", &url)
        .env("RUST_LOG", "commanditaire=debug")
        .args(["--json", "exec", "--id", &id, "--count", "3", "--detach"])
        .args(["--", "echo", "task {index}"])
        .output()
        .unwrap();
    let publish_log = String::from_utf8_lossy(&publish.stderr).to_string();
    assert!(publish.status.success(), "{publish_log}");

    // The client made the project's trace and recorded it with the project.
    let header: serde_json::Value = serde_json::from_slice(&read_at_head(
        &ws.path().join("tasks"),
        &format!("{id}/project.json"),
    ))
    .unwrap();
    let trace = TraceId::from_hex(header["trace_id"].as_str().unwrap()).unwrap();

    // The broker: each outcome, waiting in results.P, carries its task's traceparent.
    let carried = outcomes_traceparents(&url, &id, 3);
    for index in 0..3u32 {
        assert_eq!(
            carried.get(&format!("{id}/{index}")),
            Some(&TraceParent::of_task(&trace, index).to_string()),
            "{carried:?}"
        );
    }

    let resume = client(ws.path())
        .env("AMQP_URL", &url)
        .env("RUST_LOG", "commanditaire=debug")
        .args(["--json", "resume", &id])
        .output()
        .unwrap();
    let resume_log = String::from_utf8_lossy(&resume.stderr).to_string();
    assert!(resume.status.success(), "{resume_log}");

    let executant_log = executant_logs.text();
    let span = SpanId::of_task(&trace, 1).to_string();
    let task = format!("task_id={id}/1");
    // One grep of the span id: the client publishing the task, the executant running it,
    // the client receiving its outcome.
    let client_published = grep(&publish_log, &span);
    assert_eq!(client_published.len(), 1, "{publish_log}");
    assert!(client_published[0].contains("task published") && client_published[0].contains(&task));
    let executant_lines = grep(&executant_log, &span);
    assert!(
        executant_lines.iter().any(|l| l.contains("task done")),
        "{executant_log}"
    );
    let received = grep(&resume_log, &span);
    assert!(
        received.len() == 1 && received[0].contains("outcome received"),
        "{resume_log}"
    );
    // Every executant line about the task carries its trace id and span id.
    let about_task = grep(&executant_log, &task);
    assert!(!about_task.is_empty(), "{executant_log}");
    for line in about_task {
        assert!(
            line.contains(&format!("trace_id={trace}")) && line.contains(&span),
            "{line}"
        );
    }
    // The trace id follows the whole project: the client says it once when publishing.
    let trace_text = trace.to_string();
    assert!(
        grep(&publish_log, &trace_text)
            .iter()
            .any(|l| l.contains("tasks published") && l.contains(&id)),
        "{publish_log}"
    );
    assert!(
        grep(&executant_log, &trace_text).len() >= 3,
        "{executant_log}"
    );
}

/// The `traceparent` of each of the `count` outcomes of `project` once they all wait in its
/// results queue, by task id (`P/index`); the messages are returned to the queue. Outcomes
/// ready together come in one message (a batch, each entry with its own `traceparent`), so
/// outcomes are counted, not messages: the deliveries are held until all are seen.
fn outcomes_traceparents(
    url: &str,
    project: &str,
    count: u32,
) -> std::collections::HashMap<String, String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let conn = tasks::amqp::connect(url, "trace test").await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let queue = tasks::amqp::results_queue(project);
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut seen = std::collections::HashMap::new();
        let mut held = Vec::new();
        while seen.len() < count as usize {
            let next = tokio::time::timeout_at(deadline, consumer.next()).await;
            let Ok(next) = next else {
                panic!("outcomes of {project} missing after 120 s: {seen:?}");
            };
            let delivery = next.unwrap().unwrap();
            // A message of one outcome carries its traceparent as a header.
            let header = tasks::amqp::traceparent_of(&delivery.properties).map(|tp| tp.to_string());
            for entry in tasks::results::parse(&delivery.data).unwrap() {
                let tp = entry.traceparent.or_else(|| header.clone());
                let task = format!("{}/{}", entry.result.project, entry.result.index);
                seen.insert(task, tp.unwrap_or_default());
            }
            held.push(delivery);
        }
        let requeue = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        for delivery in held {
            delivery.nack(requeue).await.unwrap();
        }
        let _ = conn.close(200, "done".into()).await;
        seen
    })
}
