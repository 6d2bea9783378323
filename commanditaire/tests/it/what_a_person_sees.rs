//! Issue 15, item 8: what a person sees. Invalid arguments are bad usage (exit 2); a project
//! recorded while the broker was unreachable says that `resume` will publish it; an error
//! says its cause once; `status` tells a stalled project from a running one and says what
//! would move it on.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{client, client_json, wait_for, Executant};

/// The one project of `status --json` output.
fn only_project(status: &serde_json::Value) -> &serde_json::Value {
    let projects = status["projects"].as_array().expect("a list of projects");
    assert_eq!(projects.len(), 1, "{status}");
    &projects[0]
}

#[test]
fn invalid_arguments_are_bad_usage() {
    let ws = tempfile::tempdir().unwrap();
    for args in [
        &["nqueens", "0"][..],
        &["nqueens", "33", "--local"],
        &["nqueens", "8", "--depth", "9"],
        &["status", "no-such-project"],
        &["resume", "no-such-project"],
        &["resume", "../escape"],
    ] {
        let out = client(ws.path()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("commanditaire: error: "), "{args:?}: {err}");
    }
}

#[test]
fn a_project_recorded_without_a_broker_says_resume_publishes_it() {
    let ws = tempfile::tempdir().unwrap();
    let out = client(ws.path())
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("RUST_LOG", "off")
        .args(["nqueens", "8", "--id", "unpublished"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("commanditaire: error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains("`commanditaire resume unpublished` will publish them"),
        "{line}"
    );
    assert_eq!(
        line.matches("Connection refused").count(),
        1,
        "the cause is said once: {line}"
    );

    let (code, status, _) = client_json(ws.path(), &["status", "unpublished"]);
    assert_eq!(code, 0);
    let p = only_project(&status);
    assert_eq!(p["state"], "not_published", "{p}");
    assert!(
        p["hint"]
            .as_str()
            .unwrap()
            .contains("`commanditaire resume unpublished`"),
        "{p}"
    );

    // The command it names does move it on.
    let _executant = Executant::start(1);
    let (code, done, _) = client_json(ws.path(), &["resume", "unpublished"]);
    assert_eq!(code, 0, "{done}");
    assert_eq!(done["solutions"].as_u64(), Some(92));
    let (_, status, _) = client_json(ws.path(), &["status", "unpublished"]);
    assert_eq!(only_project(&status)["state"], "complete");
}

#[test]
fn status_tells_stalled_from_running_and_names_the_command() {
    let ws = tempfile::tempdir().unwrap();
    // A fresh id: `results.<id>` outlives the test (its follower is killed), and a
    // project of the same id and task run later on the same broker would take the old
    // outcome waiting there as its own (same task, same digest) and finish at once.
    let id = format!(
        "slow-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let id = id.as_str();
    // A task that takes a while: no outcome for its first seconds, whoever runs it.
    let (code, detached, _) = client_json(
        ws.path(),
        &["exec", "--id", id, "--detach", "--", "sleep", "20"],
    );
    assert_eq!(code, 0, "{detached}");

    // Nobody follows it: running at first (no outcome expected yet), stalled once the
    // threshold passed; both name `resume`.
    let (_, status, _) = client_json(ws.path(), &["status", id]);
    let p = only_project(&status);
    assert_eq!(p["state"], "running", "{p}");
    assert!(p["hint"]
        .as_str()
        .unwrap()
        .contains(&format!("`commanditaire resume {id}`")));
    std::thread::sleep(Duration::from_millis(1100));
    let (_, status, _) = client_json(ws.path(), &["status", id, "--stalled-after", "1"]);
    let p = only_project(&status);
    assert_eq!(p["state"], "stalled", "{p}");
    assert!(p["idle_secs"].as_u64().unwrap() >= 1, "{p}");
    assert!(p["hint"].as_str().unwrap().contains("no client follows it"));

    // A follower holds it and records nothing: stalled, and the hint names the follower
    // and an executant; without the threshold it is running with no hint.
    let mut follower = client(ws.path())
        .args(["resume", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = follower.id().to_string();
    wait_for(
        "the follower to hold the project",
        Duration::from_secs(10),
        || {
            let (_, status, _) = client_json(ws.path(), &["status", id]);
            only_project(&status)["follower"].is_string()
        },
    );
    let (_, status, _) = client_json(ws.path(), &["status", id]);
    let p = only_project(&status);
    assert_eq!(p["state"], "running", "{p}");
    assert!(p["follower"].as_str().unwrap().contains(&pid), "{p}");
    assert!(p["hint"].is_null(), "{p}");
    let out = client(ws.path())
        .args(["status", id, "--stalled-after", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stalled: no outcome for"), "{text}");
    assert!(text.contains("start an executant (`executant`)"), "{text}");
    assert!(text.contains(&format!("pid {pid}")), "{text}");

    // Once the follower is gone, nobody follows it any more.
    follower.kill().unwrap();
    follower.wait().unwrap();
    let (_, status, _) = client_json(ws.path(), &["status", id]);
    assert!(only_project(&status)["follower"].is_null(), "{status}");
}
