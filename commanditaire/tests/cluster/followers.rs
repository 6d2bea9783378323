//! One follower per project on a cluster: `results.<project>` is a quorum queue there, whose
//! exclusive consumer RabbitMQ 3.10 does not enforce, so the client itself refuses to follow
//! a project whose results queue already has a consumer (another machine's follower).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;

use crate::support::oeis;

/// The client on `urls` (the cluster's node list) in `workspace`, killed past `timeout`.
fn client(urls: &str, workspace: &std::path::Path, args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_commanditaire"))
        .env("AMQP_URL", urls)
        .arg("--workspace")
        .arg(workspace)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// With executants running on the cluster: a project published (`--detach`) through the
/// node list, a consumer on its results queue from another connection (to the last node
/// only, as another machine's follower would be), then `resume` is refused (exit 1, the
/// same message as on one node); once that consumer is gone, `resume` finishes exact.
pub fn second_follower_is_refused(urls: &str) {
    let ws = tempfile::tempdir().unwrap();
    let project = format!("held-{}", std::process::id());
    let out = client(
        urls,
        ws.path(),
        &[
            "--json", "nqueens", "8", "--depth", "1", "--id", &project, "--detach",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last_node = urls.split(',').next_back().unwrap().to_string();
    let queue = format!("results.{project}");
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (ready, is_ready) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let queue = queue.clone();
        move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let conn = tasks::amqp::connect(&last_node, "cluster test holder")
                    .await
                    .unwrap();
                let channel = conn.create_channel().await.unwrap();
                let mut consumer = channel
                    .basic_consume(
                        queue.as_str().into(),
                        "elsewhere".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                ready.send(()).unwrap();
                // Hold the queue without taking anything away for good, until told.
                while released.try_recv().is_err() {
                    if let Ok(Some(Ok(d))) =
                        tokio::time::timeout(Duration::from_millis(100), consumer.next()).await
                    {
                        d.nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    }
                }
                conn.close(200, "released".into()).await.unwrap();
            });
        }
    });
    is_ready.recv().unwrap();
    let refused = client(
        urls,
        ws.path(),
        &["resume", &project],
        Duration::from_secs(60),
    );
    release.send(()).unwrap();
    holder.join().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{queue} already has a consumer")),
        "{err}"
    );
    let out = client(
        urls,
        ws.path(),
        &["--json", "resume", &project],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["solutions"].as_u64(), Some(oeis(8)), "{json}");
    assert_eq!(json["complete"], true, "{json}");
    println!(
        "cluster: a second follower of {project} was refused; the project then finished exact"
    );
}
