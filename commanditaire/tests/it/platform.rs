//! Projects through the whole platform.

use std::time::Duration;

use crate::support::*;

/// Each (n, depth) through broker, executant and containers equals OEIS.
#[test]
fn nqueens_through_the_platform_equals_oeis() {
    let _executant = Executant::start(16);
    let ws = tempfile::tempdir().unwrap();
    for (n, depth) in [(10u8, 1u8), (10, 3), (11, 2), (12, 2), (13, 1), (13, 3)] {
        let (code, json, _) = client_json(
            ws.path(),
            &["nqueens", &n.to_string(), "--depth", &depth.to_string()],
        );
        assert_eq!(code, 0, "N = {n}, depth = {depth}: {json}");
        assert_eq!(json["n"], n);
        assert_eq!(
            json["solutions"].as_u64(),
            Some(oeis(n)),
            "N = {n}, depth = {depth}"
        );
        assert_eq!(json["complete"], true);
        // Reported for scripts; a run with no fault has nothing to ignore.
        assert!(json["duplicate_results"].is_u64(), "{json}");
        assert!(json["project"]
            .as_str()
            .unwrap()
            .starts_with(&format!("nq{n}-d{depth}")));
    }
}

#[test]
fn the_echo_demo_reassembles_in_order_and_history_shows_progress() {
    let _executant = Executant::start(1);
    let ws = tempfile::tempdir().unwrap();
    let (code, json, _) = client_json(
        ws.path(),
        &[
            "exec",
            "--id",
            "demo-echo",
            "--count",
            "6",
            "--",
            "echo",
            "project {project} task {index}",
        ],
    );
    assert_eq!(code, 0, "{json}");
    let outputs: Vec<&str> = json["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..6)
        .map(|i| format!("project demo-echo task {i}\n"))
        .collect();
    assert_eq!(outputs, expected);

    let log = git_log(&ws.path().join("tracking"));
    assert!(
        log[0].starts_with("Project demo-echo complete: 6/6 tasks"),
        "{log:?}"
    );
    assert!(log.last().unwrap().contains("started, 0/6"), "{log:?}");
    assert!(log.iter().any(|l| l.contains("tasks done")), "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("6 tasks published")),
        "{log:?}"
    );
    let results = git_log(&ws.path().join("results"));
    assert!(
        results[0].contains("demo-echo result: 6/6 tasks"),
        "{results:?}"
    );

    // `status` reads the tracking repository.
    let (code, status, _) = client_json(ws.path(), &["status"]);
    assert_eq!(code, 0);
    let projects = status["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0]["done"], 6);
    assert_eq!(projects[0]["complete"], true);
}

#[test]
fn resume_after_killing_the_client_finishes_exactly_and_republishes_nothing_done() {
    let ws = tempfile::tempdir().unwrap();
    // The client publishes and follows; no executant yet, so nothing is done.
    let mut child = client(ws.path())
        .args(["nqueens", "12", "--depth", "3", "--id", "resume-12"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tracking = ws.path().join("tracking");
    wait_for("the tasks to be published", Duration::from_secs(60), || {
        tracking.join(".git").exists()
            && git_log(&tracking)
                .iter()
                .any(|l| l.contains("tasks published"))
    });
    // Some results arrive and are committed, then the client dies without warning.
    let executant = Executant::start(1);
    wait_for("a batch of results", Duration::from_secs(120), || {
        git_log(&tracking).iter().any(|l| l.contains("tasks done"))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, json, _) = client_json(ws.path(), &["resume", "resume-12"]);
    drop(executant);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["solutions"].as_u64(), Some(14200));
    assert_eq!(json["published"], 0, "resume republished tasks: {json}");
    let log = git_log(&tracking);
    assert!(log[0].starts_with("Project resume-12 complete"), "{log:?}");
}

#[test]
fn two_clients_at_once_each_get_their_own_results() {
    let _executant = Executant::start(8);
    let ws_a = tempfile::tempdir().unwrap();
    let ws_b = tempfile::tempdir().unwrap();
    let a = client(ws_a.path())
        .args(["--json", "nqueens", "11", "--depth", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = client(ws_b.path())
        .args(["--json", "nqueens", "10", "--depth", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for both before any assertion, so that a failure leaves no client running.
    let outputs = [(a, 11u8), (b, 10u8)].map(|(child, n)| (child.wait_with_output().unwrap(), n));
    for (out, n) in outputs {
        assert!(out.status.success());
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["solutions"].as_u64(), Some(oeis(n)));
        assert!(json["failed"].as_array().unwrap().is_empty());
    }
}

#[test]
fn local_mode_needs_no_broker() {
    let ws = tempfile::tempdir().unwrap();
    let (code, json, _) = client(ws.path())
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .args(["--json", "nqueens", "13", "--local"])
        .output()
        .map(|o| {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            (o.status.code().unwrap(), v, o)
        })
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(json["solutions"].as_u64(), Some(73712));
}

#[test]
fn errors_a_person_can_act_on() {
    let ws = tempfile::tempdir().unwrap();
    let out = client(ws.path())
        .env("AMQP_URL", "amqp://guest:secret-pw@127.0.0.1:1/%2f")
        .args(["nqueens", "8"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is RabbitMQ running"), "{err}");
    assert!(!err.contains("secret-pw"), "the password leaked: {err}");

    std::fs::create_dir_all(ws.path().join("bad/tasks")).unwrap();
    let out = client(&ws.path().join("bad"))
        .args(["nqueens", "8", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a git repository"), "{err}");

    let out = client(ws.path()).args(["nqueens", "40"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an invalid argument is bad usage"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("`n`"));
}

#[test]
fn code_on_demand_runs_the_committed_script() {
    let _executant = Executant::start(1);
    // Where the executants allow scripts from (`--allow-script-repo DIR/**`).
    let ws = tempfile::tempdir_in(script_workspaces()).unwrap();
    let script = ws.path().join("square.sh");
    std::fs::write(&script, "#!/bin/sh\necho $(( $1 * $1 ))\n").unwrap();
    let (code, json, _) = client_json(
        ws.path(),
        &[
            "exec",
            "--id",
            "square",
            "--count",
            "4",
            "--script",
            script.to_str().unwrap(),
            "--",
            "sh",
            "{script}",
            "{index}",
        ],
    );
    assert_eq!(code, 0, "{json}");
    assert_eq!(
        json["outputs"],
        serde_json::json!(["0\n", "1\n", "4\n", "9\n"])
    );
    let log = git_log(&ws.path().join("tasks"));
    assert!(
        log.iter().any(|l| l == "Project square: script square.sh"),
        "{log:?}"
    );
}
