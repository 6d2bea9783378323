//! Losing a broker connection mid-project (issue 11, item 2): the executant reconnects within
//! seconds, a result that could not be published is published again without spending one of
//! the task's delivery attempts, and no task ends in `todo.dead`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tasks::model::ExecSpec;
use tasks::{amqp, Outcome, Project, TaskOutput, TaskSpec};

use crate::support::*;

/// The two tests share the `todo` queue: each must see only its own executant close.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many times a connection is closed during the project.
const CLOSES: usize = 3;
/// How soon the executant must have a new connection.
const RECONNECT_WITHIN: Duration = Duration::from_secs(10);

/// An executant process, killed if the test fails before stopping it.
struct Executant(Option<Child>);

impl Drop for Executant {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the executant binary, its log (with each attempt's number) going to `log`.
fn spawn_executant(name: &str, log: &std::path::Path) -> Executant {
    let child = Command::new(env!("CARGO_BIN_EXE_executant"))
        .args(["--concurrency", "4", "--name", name])
        .env("AMQP_URL", amqp_url())
        .env("RUST_LOG", "info,executant=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Executant(Some(child))
}

/// The highest attempt number the executant logged for a task.
fn highest_attempt(log: &str) -> u32 {
    log.lines()
        .filter(|l| l.contains("running"))
        .filter_map(|l| l.split("attempt=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Stops it as a service manager would (SIGTERM) and checks it exited cleanly.
fn stop(mut executant: Executant) {
    let mut child = executant.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "executant exited with {exit:?}");
}

/// Runs a project of short `exec` tasks while closing the connection named
/// `executant NAME <side>` several times, and checks every task came back once, exactly.
async fn survives_closed_connections(side: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let id = unique_project(&format!("exec-close-{side}"));
    let tasks_count = 40;
    let specs: Vec<_> = (0..tasks_count)
        .map(|i| {
            TaskSpec::Exec(ExecSpec {
                image: "debian:bookworm-slim".into(),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    format!("sleep 0.3; echo task-{i}"),
                ],
                script: None,
            })
        })
        .collect();
    let project = Project::from_specs(&id, specs).unwrap();
    publish_tasks(&id, &project.tasks.to_vec()).await;
    let name = format!("{id}-x");
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("executant.log");
    let executant = spawn_executant(&name, &log_path);
    let connection = format!("executant {name} {side}");

    let closer = tokio::spawn({
        let connection = connection.clone();
        async move {
            let mut pid = wait_for_connection(&connection, None, Duration::from_secs(60)).await;
            let mut reconnect_times = Vec::new();
            for _ in 0..CLOSES {
                tokio::time::sleep(Duration::from_secs(3)).await;
                close_connection(&pid);
                let closed = Instant::now();
                pid = wait_for_connection(&connection, Some(&pid), RECONNECT_WITHIN).await;
                reconnect_times.push(closed.elapsed());
            }
            reconnect_times
        }
    });
    let (results, mut duplicates) =
        collect_results(&id, tasks_count, Duration::from_secs(300)).await;
    let reconnect_times = closer.await.expect("the connection was not re-established");
    tokio::task::spawn_blocking(move || stop(executant))
        .await
        .unwrap();
    duplicates += ids_in_queue(&amqp::results_queue(&id), "").await.len();
    let dead = ids_in_queue(amqp::DEAD_QUEUE, &format!("{id}/")).await;
    drop_results(&id).await;

    let log = std::fs::read_to_string(&log_path).unwrap();
    let attempts = highest_attempt(&log);
    eprintln!(
        "{side}: reconnected after {reconnect_times:?}; {duplicates} duplicate results; \
         highest attempt {attempts}"
    );
    assert!(attempts >= 1, "no attempt logged:\n{log}");
    assert_eq!(reconnect_times.len(), CLOSES);
    assert!(dead.is_empty(), "tasks in todo.dead: {dead:?}");
    for (index, result) in &results {
        match &result.outcome {
            Outcome::Ok {
                output: TaskOutput::Exec { stdout },
            } => assert_eq!(stdout, &format!("task-{index}\n")),
            other => panic!("task {index}: {other:?}"),
        }
    }
    if side == "publish" {
        // The deliveries were held while the publisher reconnected: no task ran twice.
        assert_eq!(attempts, 1, "a delivery was returned:\n{log}");
        assert_eq!(duplicates, 0, "duplicate results");
        assert!(log.contains("publish connection re-established"), "{log}");
    } else {
        // Deliveries in flight go back to the queue with the consumer's channel; one whose
        // result was confirmed but whose ack was lost runs again (its result is a duplicate).
        assert!(duplicates <= CLOSES * 4, "{duplicates} duplicate results");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_the_publish_connection_loses_no_attempt() {
    survives_closed_connections("publish").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_the_consume_connection_loses_no_task() {
    survives_closed_connections("consume").await;
}
