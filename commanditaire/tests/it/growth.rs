//! Growth, at a size CI affords (the million is `benches/tracking.rs`): a project of
//! thousands of tasks recorded, its results committed in batches, the client stopped midway
//! and resumed from its record (replayed one batch at a time), duplicates and a failure
//! among them, then reassembled. Every output is checked, in task order, in memory and in
//! `result.json`; every task is counted once. A real git workspace, no broker.

use std::time::Duration;

use commanditaire::tracking::{self, BatchPolicy, Tracker};
use commanditaire::Workspace;
use tasks::model::ExecSpec;
use tasks::reassemble::Recorded;
use tasks::{Project, ProjectResult, TaskOutput, TaskResult, TaskSpec};

/// Tasks of the project: 20 batches of 250, a few seconds.
const TASKS: usize = 5_000;
/// The task that fails the first time (its retry succeeds).
const FAILS: usize = 1_234;

fn project(id: &str) -> Project {
    let specs: Vec<_> = (0..TASKS)
        .map(|i| {
            TaskSpec::Exec(ExecSpec {
                image: "debian:bookworm-slim".into(),
                command: vec!["echo".into(), format!("growth {i}")],
                script: None,
            })
        })
        .collect();
    Project::from_specs(id, specs).unwrap()
}

/// The output of task `i`: of several lengths, and not all ASCII.
fn stdout_of(i: usize) -> String {
    format!("growth {i} {}\n", "é".repeat(i % 7))
}

fn ok(project: &Project, i: usize) -> TaskResult {
    let stdout = stdout_of(i);
    TaskResult::ok(&project.tasks.get(i).unwrap(), TaskOutput::Exec { stdout })
}

#[test]
fn thousands_of_tasks_are_recorded_resumed_and_reassembled_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open_or_init(&dir.path().join("ws")).unwrap();
    let project = project("growth");
    tracking::record_project(&ws, &project, &serde_json::json!({})).unwrap();
    let policy = BatchPolicy {
        max_results: 250,
        max_age: Duration::from_secs(3600),
    };

    // A first client records the first half, one task failed, then stops (killed).
    let mut first = Tracker::load(&ws, project.clone(), policy);
    for i in 0..TASKS / 2 {
        let result = if i == FAILS {
            TaskResult::failed(&project.tasks.get(i).unwrap(), "timed out after 5 s")
        } else {
            ok(&project, i)
        };
        assert_eq!(first.record(result), Recorded::New);
        if first.due() {
            first.flush().unwrap();
        }
    }
    first.flush().unwrap();
    drop(first);

    // A resumed client replays that record, and is offered every result again (at least
    // once delivery): the committed ones count once, the rest are new.
    let loaded = tracking::load_project(&ws, "growth").unwrap();
    let mut resumed = Tracker::load(&ws, loaded, policy);
    assert_eq!(resumed.done(), TASKS / 2);
    assert_eq!(resumed.result().failed.len(), 1);
    for i in 0..TASKS {
        let expected = if i < TASKS / 2 {
            Recorded::Duplicate
        } else {
            Recorded::New
        };
        assert_eq!(resumed.record(ok(&project, i)), expected, "task {i}");
        if resumed.due() {
            resumed.flush().unwrap();
        }
    }
    assert_eq!(resumed.duplicates(), TASKS / 2);
    let again = resumed.retry_failed().unwrap();
    assert_eq!(
        again.iter().map(|t| t.index).collect::<Vec<_>>(),
        [FAILS as u32]
    );
    assert_eq!(resumed.record(ok(&project, FAILS)), Recorded::New);
    let result = resumed.finish().unwrap();
    check_exact(&result);

    // What was written is what was counted, and a third client agrees.
    let written: ProjectResult =
        serde_json::from_slice(&ws.read_at_head("results", "growth/result.json").unwrap()).unwrap();
    assert_eq!(written, result);
    let loaded = tracking::load_project(&ws, "growth").unwrap();
    let third = Tracker::load(&ws, loaded, policy);
    assert!(third.finished());
    check_exact(&third.result());
}

fn check_exact(result: &ProjectResult) {
    assert!(
        result.complete,
        "{:?}",
        (&result.failed, result.missing.len())
    );
    assert_eq!(result.outputs.len(), TASKS);
    for (i, output) in result.outputs.iter().enumerate() {
        assert_eq!(output.as_deref(), Some(stdout_of(i).as_str()), "task {i}");
    }
}
