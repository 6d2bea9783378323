//! `--replicas 2` with faults mid-vote: an executant SIGKILLed while tasks wait for its
//! vote or hold its runs, and the client SIGKILLed mid-project then resumed. Each project
//! must end exact, every task's vote settled (none failed, none left waiting for a replica
//! that died), every task counted once. The executants are processes here (the workspace's
//! `executant` binary, through the fault suite's harness) so that one can be SIGKILLed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use faults::harness::{self, Env, Proc};

use crate::support::*;

/// The board: 44 tasks, each run twice at least.
const N: u8 = 8;
const DEPTH: &str = "3";
/// The longest a project may take here: well under the lost-task rule's wait for tasks
/// nobody runs (their timeout, 600 s, plus a minute), so a vote left waiting for a dead
/// replica fails the test instead of being rescued by that rule.
const PROJECT_TIMEOUT: Duration = Duration::from_secs(400);

/// Three honest executant processes on `url`, their logs in `logs`.
fn executants(url: &str, logs: &Path, prefix: &str) -> Vec<Proc> {
    let mut env = Env::locate();
    env.amqp_url = url.to_string();
    (1..=3)
        .map(|k| {
            let name = format!("{prefix}-{k}");
            env.executant(&name, &[], &logs.join(format!("{name}.log")))
        })
        .collect()
}

/// Waits for the client's exit within `PROJECT_TIMEOUT` (killed past it): its code, its
/// JSON, its stderr.
fn finish(mut child: std::process::Child, id: &str) -> (i32, serde_json::Value, String) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PROJECT_TIMEOUT {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let json = serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
    assert!(
        started.elapsed() <= PROJECT_TIMEOUT,
        "{id}: not finished within {PROJECT_TIMEOUT:?}: {err}"
    );
    (status.code().unwrap_or(-1), json, err)
}

/// The project ended exact, every task decided by two agreeing runs and counted once.
fn assert_settled(ws: &Path, id: &str, code: i32, json: &serde_json::Value, stderr: &str) {
    assert_eq!(code, 0, "{id}: {json} {stderr}");
    assert_eq!(json["solutions"].as_u64(), Some(oeis(N)), "{id}: {json}");
    assert_eq!(json["replicas"]["n"], 2, "{id}: {json}");
    let tasks = json["tasks"].as_u64().unwrap();
    assert!(
        json["replicas"]["runs"].as_u64().unwrap() >= 2 * tasks,
        "{id}: {json}"
    );
    let verdict = harness::verify(ws, id, Some(oeis(N)));
    assert_eq!(verdict.tasks as u64, tasks, "{id}: {verdict:?}");
    assert_eq!(verdict.lost, 0, "{id}: {verdict:?}");
    assert_eq!(verdict.duplicated, 0, "{id}: {verdict:?}");
    assert!(verdict.failed.is_empty(), "{id}: {verdict:?}");
}

fn start_client(url: &str, ws: &Path, args: &[&str]) -> std::process::Child {
    client(ws)
        .env("AMQP_URL", url)
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `done` outcomes are committed for `id`.
fn wait_done(ws: &Path, id: &str, done: u32) {
    wait_for(&format!("{done} outcomes of {id}"), PROJECT_TIMEOUT, || {
        harness::progress(ws, id).is_some_and(|(d, _)| d >= done)
    });
}

#[test]
fn an_executant_killed_mid_vote_leaves_no_vote_waiting() {
    let url = own_vhost("commanditaire-replicas-killed-executant");
    let logs = tempfile::tempdir().unwrap();
    let mut procs = executants(&url, logs.path(), &format!("vote-{}", std::process::id()));
    let ws = tempfile::tempdir().unwrap();
    let id = "replicas-executant-killed";
    let started = Instant::now();
    let child = start_client(
        &url,
        ws.path(),
        &[
            "nqueens",
            &N.to_string(),
            "--depth",
            DEPTH,
            "--replicas",
            "2",
            "--id",
            id,
        ],
    );
    // A quarter of the tasks decided: the third executant has voted on others, which wait
    // for their second vote, and holds runs of its own.
    wait_done(ws.path(), id, 11);
    procs[2].kill9();
    let killed = started.elapsed();
    let (code, json, stderr) = finish(child, id);
    eprintln!(
        "{id}: executant killed at {killed:?}, finished at {:?}: {json}",
        started.elapsed()
    );
    assert_settled(ws.path(), id, code, &json, &stderr);
}

#[test]
fn a_replicated_project_resumes_exact_after_its_client_is_killed() {
    let url = own_vhost("commanditaire-replicas-killed-client");
    let logs = tempfile::tempdir().unwrap();
    let _procs = executants(&url, logs.path(), &format!("resume-{}", std::process::id()));
    let ws = tempfile::tempdir().unwrap();
    // Every task published at once (the `published` marker committed before the kill), and
    // a window of 8 (killed before the marker: `resume` publishes the rest).
    for (id, window) in [
        ("replicas-client-killed", "2000"),
        ("replicas-client-killed-windowed", "8"),
    ] {
        let started = Instant::now();
        let n = N.to_string();
        let mut child = start_client(
            &url,
            ws.path(),
            &[
                "--max-in-flight",
                window,
                "nqueens",
                &n,
                "--depth",
                DEPTH,
                "--replicas",
                "2",
                "--id",
                id,
            ],
        );
        // Killed with a quarter decided: runs in todo, runs answered and not committed,
        // tasks with one vote recorded and their next run published (or not yet).
        wait_done(ws.path(), id, 11);
        child.kill().unwrap();
        child.wait().unwrap();
        let killed = started.elapsed();
        let marker = tasks::layout::published_marker(id);
        let marked = crate::killed_publishing::at_head(&ws.path().join("tracking"), &marker);
        assert_eq!(
            marked,
            window == "2000",
            "{id}: the kill was not where meant"
        );
        let child = start_client(&url, ws.path(), &["resume", id]);
        let (code, json, stderr) = finish(child, id);
        eprintln!(
            "{id}: client killed at {killed:?} (published marker: {marked}), resumed and finished at {:?}: {json}",
            started.elapsed()
        );
        assert_settled(ws.path(), id, code, &json, &stderr);
    }
}
