//! A client SIGKILLed at each step of publishing a project (stopped there by its test-only
//! failpoint, `commanditaire::failpoint`, then killed): before its first window, in the
//! middle of a window, and between its last window and the `published` marker, windowed or
//! not. `resume` must finish each project with the exact count, every task counted once
//! (tasks may have been published twice; their duplicate results are ignored).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use commanditaire::failpoint;

use crate::support::*;

/// The vhost of these tests: their executant takes no other test's tasks.
const VHOST: &str = "commanditaire-killed-publishing";
/// How long the client may take to reach its failpoint.
const REACH_TIMEOUT: Duration = Duration::from_secs(180);

/// Whether `path` exists in the repository at HEAD.
pub(crate) fn at_head(repo: &Path, path: &str) -> bool {
    let Ok(repo) = git2::Repository::open(repo) else {
        return false;
    };
    let Ok(tree) = repo.head().and_then(|h| h.peel_to_tree()) else {
        return false;
    };
    tree.get_path(Path::new(path)).is_ok()
}

/// Runs `nqueens N --depth D --id ID extra...` until it reports reaching `step`, then
/// SIGKILLs it; panics if it exits or does not get there in time.
fn kill_at(url: &str, ws: &Path, step: &str, board: (u8, u8), id: &str, extra: &[&str]) {
    let mut child = client(ws)
        .env("AMQP_URL", url)
        .env(failpoint::FAILPOINT_ENV, step)
        .args([
            "nqueens",
            &board.0.to_string(),
            "--depth",
            &board.1.to_string(),
        ])
        .args(["--id", id])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let wanted = format!("failpoint {step} reached");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if line.contains(&wanted) {
                let _ = seen_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    let started = Instant::now();
    let reached = seen_rx.recv_timeout(REACH_TIMEOUT).is_ok();
    // SIGKILL (what `Child::kill` sends on Unix), reached or not.
    let _ = child.kill();
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap().join("\n");
    assert!(
        reached,
        "{id}: the client never reached {step} in {:?} ({status}): {stderr}",
        started.elapsed()
    );
    eprintln!("{id}: killed at {step} after {:?}", started.elapsed());
}

/// `resume ID` must end exact: `expected` solutions, no task without an outcome, none
/// recorded twice; returns the resume's JSON.
fn resume_exact(url: &str, ws: &Path, id: &str, n: u8) -> serde_json::Value {
    let tracking = ws.join("tracking");
    assert!(
        !at_head(&tracking, &tasks::layout::published_marker(id)),
        "{id}: the killed client had marked the project published"
    );
    let started = Instant::now();
    let out = client(ws)
        .env("AMQP_URL", url)
        .args(["--json", "resume", id])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{id}: resume printed no JSON ({e}): {stderr}"));
    eprintln!(
        "{id}: resume {:?}, {} tasks, {json}",
        started.elapsed(),
        json["tasks"]
    );
    assert_eq!(out.status.code(), Some(0), "{id}: {json} {stderr}");
    assert_eq!(json["solutions"].as_u64(), Some(oeis(n)), "{id}: {json}");
    let verdict = faults::harness::verify(ws, id, Some(oeis(n)));
    assert!(verdict.tasks > 0, "{id}: {verdict:?}");
    assert_eq!(verdict.lost, 0, "{id}: {verdict:?}");
    assert_eq!(verdict.duplicated, 0, "{id}: {verdict:?}");
    assert!(verdict.failed.is_empty(), "{id}: {verdict:?}");
    assert!(
        at_head(&tracking, &tasks::layout::published_marker(id)),
        "{id}: resume did not mark the project published"
    );
    json
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[test]
fn killed_before_its_first_window_the_client_resumes_exact() {
    let url = own_vhost(VHOST);
    let _executant = Executant::start_on(&url, 4, |_| {});
    let ws = tempfile::tempdir().unwrap();
    let id = unique("killed-first");
    kill_at(
        &url,
        ws.path(),
        failpoint::BEFORE_FIRST_WINDOW,
        (8, 3),
        &id,
        &[],
    );
    resume_exact(&url, ws.path(), &id, 8);
}

#[test]
fn killed_mid_window_the_client_resumes_exact() {
    let url = own_vhost(VHOST);
    let _executant = Executant::start_on(&url, 4, |_| {});
    let ws = tempfile::tempdir().unwrap();
    let id = unique("killed-mid-window");
    // 424 tasks in one publication: killed after its first 256 were confirmed.
    kill_at(&url, ws.path(), failpoint::MID_WINDOW, (10, 4), &id, &[]);
    resume_exact(&url, ws.path(), &id, 10);
}

#[test]
fn killed_between_its_last_window_and_the_published_marker_the_client_resumes_exact() {
    let url = own_vhost(VHOST);
    let _executant = Executant::start_on(&url, 4, |_| {});
    let ws = tempfile::tempdir().unwrap();
    // Followed with a window of 32: the last window goes out as outcomes arrive, so the
    // executant holds tasks and results.P holds results when the client dies.
    let id = unique("killed-last-window");
    let windowed = ["--max-in-flight", "32"];
    kill_at(
        &url,
        ws.path(),
        failpoint::BEFORE_PUBLISHED_MARKER,
        (9, 4),
        &id,
        &windowed,
    );
    resume_exact(&url, ws.path(), &id, 9);
    // Every task at once (no window): the same step in the other publishing path.
    let id = unique("killed-all-published");
    let all = ["--max-in-flight", "0"];
    kill_at(
        &url,
        ws.path(),
        failpoint::BEFORE_PUBLISHED_MARKER,
        (8, 4),
        &id,
        &all,
    );
    resume_exact(&url, ws.path(), &id, 8);
}
