//! The tracking record on its own (a real git workspace, no broker): a task whose result
//! arrives twice (run again after a fault) is recorded and counted once, and the duplicate
//! is reported.

use std::time::Duration;

use commanditaire::tracking::{self, BatchPolicy, Tracker};
use commanditaire::Workspace;
use tasks::reassemble::Recorded;
use tasks::test_support::echo_project;
use tasks::{TaskOutput, TaskResult};

fn output(task: &tasks::Task, text: &str) -> TaskResult {
    TaskResult::ok(
        task,
        TaskOutput::Exec {
            stdout: format!("{text}\n"),
        },
    )
}

#[test]
fn a_result_received_twice_is_recorded_once_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open_or_init(&dir.path().join("ws")).unwrap();
    let project = echo_project("dup", 3);
    tracking::record_project(&ws, &project, &serde_json::json!({})).unwrap();
    let policy = BatchPolicy {
        max_results: 2,
        max_age: Duration::from_secs(3600),
    };
    let mut tracker = Tracker::load(&ws, project.clone(), policy);
    let tasks = project.tasks.to_vec();
    assert_eq!(tracker.record(output(&tasks[0], "first")), Recorded::New);
    assert_eq!(tracker.record(output(&tasks[1], "one")), Recorded::New);
    tracker.flush().unwrap();
    // Task 0 again, from a second run after its first executant was killed: the same
    // task, another result. The first one committed stands.
    assert_eq!(
        tracker.record(output(&tasks[0], "second")),
        Recorded::Duplicate
    );
    assert_eq!(tracker.record(output(&tasks[2], "two")), Recorded::New);
    assert_eq!(tracker.duplicates(), 1);
    let result = tracker.finish().unwrap();
    assert!(result.complete, "{result:?}");
    assert_eq!(
        result.outputs,
        vec![
            Some("first\n".to_string()),
            Some("one\n".to_string()),
            Some("two\n".to_string())
        ]
    );

    // The tracking repository holds each task's outcome once.
    let folder = "dup/results";
    let mut indexes = Vec::new();
    for batch in ws.list_at_head("tracking", folder) {
        let bytes = ws
            .read_at_head("tracking", &format!("{folder}/{batch}"))
            .unwrap();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            indexes.push(TaskResult::from_json(line).unwrap().index);
        }
    }
    indexes.sort();
    assert_eq!(indexes, vec![0, 1, 2]);

    // A resumed client reads the same record back, with nothing left to do.
    let reloaded = Tracker::load(&ws, tracking::load_project(&ws, "dup").unwrap(), policy);
    assert!(reloaded.finished());
    assert_eq!(reloaded.duplicates(), 0);
}
