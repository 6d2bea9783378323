//! Issue 16, item 4: a result published by hand to `results.P` that does not carry the
//! digest of its task is refused (dropped and counted as junk), never counted.

use std::time::Duration;

use tasks::amqp::{self, Message};
use tasks::{Task, TaskOutput, TaskResult};

use crate::broker::{client_json_within, forget_results_queue, nodes, read_head, with_channel};
use crate::support::{client_json, Executant};

/// The project's tasks, read back from its tasks repository.
fn recorded_tasks(ws: &std::path::Path, id: &str) -> Vec<Task> {
    let lines = read_head(&ws.join("tasks"), &format!("{id}/tasks.jsonl")).unwrap();
    lines
        .lines()
        .map(|l| Task::from_json(l.as_bytes()).unwrap())
        .collect()
}

#[test]
fn forged_results_on_the_results_queue_are_refused_and_counted() {
    let id = "forged";
    forget_results_queue(id);
    let ws = tempfile::tempdir().unwrap();
    let (code, json, _) = client_json(
        ws.path(),
        &["nqueens", "10", "--depth", "2", "--id", id, "--detach"],
    );
    assert_eq!(code, 0, "{json}");
    let tasks = recorded_tasks(ws.path(), id);
    assert!(tasks.len() > 1);
    // Ahead of any real result: for every task, a wrong count with the digest of another
    // task, and one with no digest at all. Counted, either would make the answer wrong.
    let mut forged = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let mut wrong_digest = TaskResult::ok(task, TaskOutput::Nqueens { solutions: 1000 });
        wrong_digest.digest = Some(tasks[(i + 1) % tasks.len()].digest());
        let mut no_digest = wrong_digest.clone();
        no_digest.digest = None;
        forged.push(wrong_digest.to_json());
        forged.push(no_digest.to_json());
    }
    with_channel(async |ch| {
        amqp::declare_results(ch, id, &nodes()).await.unwrap();
        for (i, body) in forged.iter().enumerate() {
            let message_id = format!("{id}/{}", i / 2);
            amqp::publish(
                ch,
                Message {
                    exchange: amqp::RESULTS_EXCHANGE,
                    routing_key: id,
                    message_id: &message_id,
                    body,
                    reason: None,
                },
            )
            .await
            .unwrap();
        }
    });
    let _executant = Executant::start(8);
    let (code, json, out) =
        client_json_within(ws.path(), &["resume", id], Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code, 0, "{json} {err}");
    assert_eq!(json["solutions"].as_u64(), Some(724), "{json}");
    assert_eq!(
        json["junk_results"].as_u64(),
        Some(forged.len() as u64),
        "{json} {err}"
    );
    assert!(
        err.contains("digest"),
        "the refusal names the digest: {err}"
    );
    // What was recorded carries the tasks' own digests only, one outcome per task.
    let recorded = recorded_results(&ws.path().join("tracking"), id);
    assert_eq!(recorded.len(), tasks.len());
    for r in recorded {
        assert_eq!(r.digest, Some(tasks[r.index as usize].digest()));
    }
}

/// Every result line of the project's batches in the tracking repository at HEAD.
fn recorded_results(tracking: &std::path::Path, id: &str) -> Vec<TaskResult> {
    let repo = git2::Repository::open(tracking).unwrap();
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let folder = tree
        .get_path(std::path::Path::new(&format!("{id}/results")))
        .unwrap()
        .to_object(&repo)
        .unwrap()
        .peel_to_tree()
        .unwrap();
    let mut out = Vec::new();
    for entry in folder.iter() {
        let blob = repo.find_blob(entry.id()).unwrap();
        for line in blob
            .content()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            out.push(TaskResult::from_json(line).unwrap());
        }
    }
    out
}
