//! Issue 11, item 1: one follower per project, batches never replaced, `resume` always
//! finishes.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use commanditaire::tracking::{self, BatchPolicy, Tracker};
use commanditaire::Workspace;
use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;

use crate::broker::{client_json_within, forget_results_queue, wait_within, with_channel};
use crate::support::{client, client_json, Executant};

/// Every change to `<project>/results/` in the tracking history adds a file; none modifies
/// or deletes one. Returns the task indexes the batches hold at HEAD.
fn batches_only_added(tracking: &Path, project: &str) -> Vec<u32> {
    let repo = git2::Repository::open(tracking).unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push_head().unwrap();
    let folder = format!("{project}/results/");
    for oid in walk {
        let commit = repo.find_commit(oid.unwrap()).unwrap();
        let parent = commit.parent(0).ok().map(|p| p.tree().unwrap());
        let diff = repo
            .diff_tree_to_tree(parent.as_ref(), Some(&commit.tree().unwrap()), None)
            .unwrap();
        for delta in diff.deltas() {
            let path = delta.new_file().path().unwrap().display().to_string();
            if path.starts_with(&folder) {
                assert_eq!(
                    delta.status(),
                    git2::Delta::Added,
                    "{path} was changed by {:?}",
                    commit.summary()
                );
            }
        }
    }
    let mut indexes = Vec::new();
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let dir = tree
        .get_path(Path::new(&folder[..folder.len() - 1]))
        .unwrap();
    let dir = repo.find_tree(dir.id()).unwrap();
    for entry in dir.iter() {
        let blob = repo.find_blob(entry.id()).unwrap();
        for line in blob
            .content()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            indexes.push(tasks::TaskResult::from_json(line).unwrap().index);
        }
    }
    indexes
}

#[test]
fn two_followers_of_one_project_one_is_refused_and_no_batch_is_replaced() {
    forget_results_queue("twin");
    let ws = tempfile::tempdir().unwrap();
    let (code, json, _) = client_json(
        ws.path(),
        &["nqueens", "12", "--depth", "3", "--id", "twin", "--detach"],
    );
    assert_eq!(code, 0, "{json}");
    let tasks = json["published"].as_u64().unwrap() as usize;
    let spawn = || {
        client(ws.path())
            .args(["--json", "resume", "twin"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut followers = vec![spawn(), spawn()];
    // One of the two is refused at once, naming who follows the project.
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        if let Some(i) = followers
            .iter_mut()
            .position(|c| c.try_wait().unwrap().is_some())
        {
            break followers.remove(i);
        }
        assert!(Instant::now() < deadline, "neither follower was refused");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = refused.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("project twin is already being followed by commanditaire pid"),
        "{err}"
    );

    let executant = Executant::start(16);
    let last = followers.pop().unwrap();
    let out = wait_within(last, Duration::from_secs(180), "the remaining follower");
    drop(executant);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert_eq!(json["solutions"].as_u64(), Some(14200));

    let mut indexes = batches_only_added(&ws.path().join("tracking"), "twin");
    indexes.sort();
    indexes.dedup();
    assert_eq!(indexes.len(), tasks, "a batch of results was lost");
}

#[test]
fn a_follower_elsewhere_holds_the_results_queue_and_a_second_is_refused() {
    forget_results_queue("held");
    let ws = tempfile::tempdir().unwrap();
    let (code, json, _) = client_json(
        ws.path(),
        &["nqueens", "8", "--depth", "1", "--id", "held", "--detach"],
    );
    assert_eq!(code, 0, "{json}");
    // Another machine's follower: a consumer on results.held, from another connection.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        with_channel(async |ch| {
            let mut consumer = ch
                .basic_consume(
                    "results.held".into(),
                    "elsewhere".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            ready_tx.send(()).unwrap();
            // Hold the queue (without taking anything away for good) until told.
            while rx.try_recv().is_err() {
                if let Ok(Some(Ok(d))) =
                    tokio::time::timeout(Duration::from_millis(100), consumer.next()).await
                {
                    d.nack(lapin::options::BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
            }
        })
    });
    ready_rx.recv().unwrap();
    let out = client(ws.path()).args(["resume", "held"]).output().unwrap();
    tx.send(()).unwrap();
    holder.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("results.held already has a consumer"), "{err}");
    // Once that follower is gone, the project finishes.
    let _executant = Executant::start(4);
    let (code, json, _) =
        client_json_within(ws.path(), &["resume", "held"], Duration::from_secs(120));
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["solutions"].as_u64(), Some(92));
}

#[test]
fn resume_publishes_again_the_tasks_that_are_in_no_queue() {
    forget_results_queue("lost");
    // The state the lost batches left: every task published once (the marker exists), no
    // outcome recorded, and none of the tasks in any queue.
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open_or_init(dir.path()).unwrap();
    let project = tasks::split::nqueens_project("lost", 10, 2).unwrap();
    tracking::record_project(&ws, &project, &serde_json::json!({})).unwrap();
    let mut tracker = Tracker::load(&ws, project.clone(), BatchPolicy::default());
    tracker.mark_published().unwrap();
    drop(tracker);

    let _executant = Executant::start(4);
    let (code, json, out) =
        client_json_within(dir.path(), &["resume", "lost"], Duration::from_secs(180));
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["solutions"].as_u64(), Some(724));
    assert_eq!(json["published"].as_u64(), Some(project.tasks.len() as u64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("were in no queue: published them again"),
        "{err}"
    );
}
