//! Issue 11, items 4, 5, 11 and 12: what the client records and prints.

use std::time::Duration;

use crate::broker::{read_head, wait_within};
use crate::support::{client, client_json, git_log, Executant};

#[test]
fn an_id_that_exists_is_refused_with_exit_2_and_nothing_runs() {
    let ws = tempfile::tempdir().unwrap();
    let (code, json, _) = client_json(ws.path(), &["nqueens", "6", "--local", "--id", "same"]);
    assert_eq!(code, 0, "{json}");
    for args in [
        &[
            "exec", "--id", "same", "--count", "2", "--", "echo", "second",
        ][..],
        &["nqueens", "7", "--local", "--id", "same"][..],
    ] {
        let out = client(ws.path()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("project same already exists"), "{err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
    }
    // The record holds the first project only.
    let log = git_log(&ws.path().join("tasks"));
    assert_eq!(
        log.iter().filter(|l| l.starts_with("Project same")).count(),
        1,
        "{log:?}"
    );
    assert!(read_head(&ws.path().join("tasks"), "same/scripts").is_none());
}

#[test]
fn a_token_in_a_remote_url_is_never_printed_nor_recorded() {
    let ws = tempfile::tempdir().unwrap();
    let out = client(ws.path())
        .env("AMQP_URL", "amqp://someone:amqp-secret@127.0.0.1:5672/hC")
        .args([
            "--remote",
            "https://TOKEN1234@127.0.0.1:1/team",
            "nqueens",
            "6",
            "--local",
            "--id",
            "red",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("TOKEN1234"), "the token leaked: {err}");
    assert!(err.contains("https://***@127.0.0.1:1/team"), "{err}");
    let config = read_head(&ws.path().join("config"), "red/config.json").unwrap();
    assert!(
        !config.contains("someone") && !config.contains("amqp-secret"),
        "{config}"
    );
    assert!(config.contains("amqp://***@127.0.0.1:5672/hC"), "{config}");
}

#[test]
fn credentials_in_the_github_api_url_are_never_printed() {
    let ws = tempfile::tempdir().unwrap();
    let out = client(ws.path())
        .env("GITHUB_TOKEN", "ghp_tokenvalue")
        .env("GITHUB_API_URL", "https://someone:apisecret@127.0.0.1:1/")
        .args([
            "--github-owner",
            "me",
            "nqueens",
            "6",
            "--local",
            "--id",
            "gh",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("GitHub API at https://***@127.0.0.1:1/"),
        "{err}"
    );
    for secret in ["apisecret", "someone", "ghp_tokenvalue"] {
        assert!(!err.contains(secret), "{secret} leaked: {err}");
    }
}

#[test]
fn stale_git_locks_left_by_a_crash_are_cleared() {
    let ws = tempfile::tempdir().unwrap();
    let (code, json, _) = client_json(ws.path(), &["nqueens", "6", "--local", "--id", "first"]);
    assert_eq!(code, 0, "{json}");
    let stale = [
        "tracking/.git/HEAD.lock",
        "tracking/.git/refs/heads/main.lock",
        "results/.git/index.lock",
        "tasks/.git/packed-refs.lock",
        "config/.git/config.lock",
    ];
    for rel in stale {
        std::fs::write(ws.path().join(rel), b"left by a client that died").unwrap();
    }
    let (code, json, _) = client_json(ws.path(), &["nqueens", "7", "--local", "--id", "second"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["solutions"].as_u64(), Some(40));
    for rel in stale {
        assert!(!ws.path().join(rel).exists(), "{rel} is still there");
    }
    assert!(git_log(&ws.path().join("tracking"))[0].starts_with("Project second complete"));
}

#[test]
fn a_task_stderr_never_reaches_the_terminal_raw() {
    let _executant = Executant::start(1);
    let ws = tempfile::tempdir().unwrap();
    let child = client(ws.path())
        .args([
            "exec",
            "--id",
            "noisy",
            "--",
            "sh",
            "-c",
            "printf '\\033[31mred\\033]0;pwned\\007\\r\\n' >&2; exit 3",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_within(child, Duration::from_secs(120), "exec noisy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("task 0 failed"), "{err}");
    assert!(err.contains("\\u{1b}[31mred"), "{err}");
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07),
        "a control character reached the terminal: {err:?}"
    );
}
