//! `--reuse` and the broker's consumer timeout (issue 11, item 8): tasks queued behind each
//! other in a worker lane must not hold their deliveries past the broker's `consumer_timeout`
//! (the broker would close the channel and every task in flight would run again). Checked
//! against a RabbitMQ node of the test's own whose `consumer_timeout` is 20 s.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tasks::Reassembly;

use crate::support::*;

const NODE: &str = "executantct";
const PORT: &str = "5712";
/// A worker that takes 6 s per task (it sleeps, then answers as the real worker does).
const SLOW_WORKER: &str = "taskplatform-test/slow-worker:exec-robust";

fn node_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-node.sh")
}

/// The extra node, stopped when dropped.
struct Node;

impl Node {
    fn start(conf: &[&str]) -> Node {
        let out = Command::new(node_script())
            .args(["start", NODE, PORT])
            .args(conf)
            // Channels check their consumer timeout every second, not every minute.
            .env(
                "RABBITMQ_NODE_ADVANCED_CONFIG",
                "[{rabbit, [{channel_tick_interval, 1000}]}].",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "starting the node: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Node
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new(node_script())
            .args(["stop", NODE, PORT])
            .status();
    }
}

fn build_slow_worker() {
    let dockerfile = format!(
        "FROM {}\nENTRYPOINT [\"sh\", \"-c\", \"while read -r task; do sleep 6; printf '%s\\\\n' \\\"$task\\\" | /usr/local/bin/worker run || exit 1; done\", \"slow-worker\"]\n",
        executant::config::DEFAULT_WORKER_IMAGE
    );
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", SLOW_WORKER, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    build
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    assert!(build.wait().unwrap().success(), "docker build failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn reused_workers_never_hold_a_delivery_past_the_consumer_timeout() {
    build_slow_worker();
    let _node = Node::start(&["consumer_timeout = 20000"]);
    let url = format!("amqp://guest:guest@127.0.0.1:{PORT}/%2f");
    let id = unique_project("exec-ctimeout");
    let project = tasks::split::nqueens_project(&id, 8, 2).unwrap();
    let count = project.tasks.len() as u32;
    publish_tasks_to(&url, &id, &project.tasks.to_vec()).await;

    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("executant.log");
    let mut executant = Command::new(env!("CARGO_BIN_EXE_executant"))
        .args(["--concurrency", "8", "--reuse", "50", "--name", &id])
        .args(["--consumer-timeout", "20", "--task-timeout", "10"])
        .args(["--max-task-timeout", "10", "--worker-image", SLOW_WORKER])
        .env("AMQP_URL", &url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let collected = collect_results_from(&url, &id, count, Duration::from_secs(240)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &executant.id().to_string()])
        .status();
    let _ = executant.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let (results, duplicates) = collected.unwrap_or_else(|e| panic!("{e}\n{log}"));

    let mut reassembly = Reassembly::new(project);
    for r in results.values() {
        reassembly.record(r);
    }
    let result = reassembly.result();
    assert!(result.complete, "{result:?}\n{log}");
    assert_eq!(result.solutions, Some(92));
    assert_eq!(duplicates, 0, "tasks ran twice:\n{log}");
    for lost in [
        "consumer failed",
        "consumer stream ended",
        "consume connection or channel lost",
    ] {
        assert!(
            !log.contains(lost),
            "the broker took deliveries back:\n{log}"
        );
    }
    // Tasks queued behind others in a lane were moved to containers of their own.
    assert!(log.contains("running it apart"), "{log}");
}

#[test]
fn a_task_timeout_above_the_consumer_timeout_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_executant"))
        .args(["--consumer-timeout", "20", "--max-task-timeout", "18"])
        .args(["--task-timeout", "10"])
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--max-task-timeout 18s is too close to RabbitMQ's consumer_timeout (20s)"),
        "{stderr}"
    );
}
