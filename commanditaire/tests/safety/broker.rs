//! Direct broker access for setting scenes up, and a client run with a deadline.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::support::{amqp_url, client};

/// The tests' broker (`AMQP_URL`) as its node list, for declarations that depend on it.
pub fn nodes() -> tasks::amqp::Nodes {
    tasks::amqp::Nodes::parse(&amqp_url())
}

/// Runs `f` with a fresh connection's confirm channel.
pub fn with_channel<T>(f: impl AsyncFnOnce(&lapin::Channel) -> T) -> T {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let conn = tasks::amqp::connect(&amqp_url(), "safety test")
            .await
            .unwrap();
        let channel = tasks::amqp::confirm_channel(&conn).await.unwrap();
        let out = f(&channel).await;
        let _ = conn.close(200, "done".into()).await;
        out
    })
}

/// Runs the client with `--json` and `args`, killing it and failing after `timeout`.
pub fn client_json_within(
    workspace: &Path,
    args: &[&str],
    timeout: Duration,
) -> (i32, serde_json::Value, Output) {
    let child = client(workspace)
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_within(child, timeout, &args.join(" "));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "client printed no JSON ({e}): stdout {stdout:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), value, out)
}

/// Waits for `child` (its pipes read meanwhile: a full pipe would block it), killing it and
/// failing after `timeout`.
pub fn wait_within(child: std::process::Child, timeout: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(timeout) {
        Ok(out) => out,
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            let out = rx.recv().unwrap();
            panic!(
                "`{what}` made no end in {timeout:?}: stderr {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The file at `rel` in repository `repo` at HEAD.
pub fn read_head(repo: &Path, rel: &str) -> Option<String> {
    let repo = git2::Repository::open(repo).ok()?;
    let tree = repo.head().ok()?.peel_to_tree().ok()?;
    let entry = tree.get_path(Path::new(rel)).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(String::from_utf8_lossy(blob.content()).into_owned())
}

/// Deletes `results.<project>` if an earlier run of the tests left it behind.
pub fn forget_results_queue(project: &str) {
    with_channel(async |ch| {
        ch.queue_delete(
            tasks::amqp::results_queue(project).as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    });
}
