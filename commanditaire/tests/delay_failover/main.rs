//! Retry with backoff on a 3-node cluster: tasks waiting in a delay queue
//! (`todo.delay.<wait>`) when the node leading that queue is SIGKILLed must come back to
//! `todo` when their wait ends, and the project end exact, with no task published again by
//! the client (the lost-task rule waits 11 minutes for a fresh project: far past this
//! test's bound) and every task counted once.
//!
//! A cluster start takes 1 to 5 minutes on a loaded machine, so this target is not run by
//! `cargo test` (`test = false` in Cargo.toml); `scripts/delay-failover.sh` runs it. Its
//! cluster is `delays-1..3`, AMQP on 5761-5763 (`RABBITMQ_CLUSTER_NAME=delays`), beside the
//! cluster tests' (5701..), the fault suite's (5731..) and the bench's (5741..).

#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faults::cluster::{Cluster, Place};

use support::{oeis, Executant};

/// This target's cluster.
const PLACE: Place = Place {
    name: "delays",
    port_base: 5760,
};
/// The wait of every retry: long enough to find the queue's leader, kill it and see a new
/// one elected while the copies wait (an election took up to 22 s under load here), short
/// enough for the test.
const WAIT: Duration = Duration::from_secs(60);
/// The board: 8 tasks (N=8, depth 1).
const N: u8 = 8;
/// The longest the project may take after the kill (the wait, an election, the runs).
const AFTER_KILL: Duration = Duration::from_secs(240);

/// `queue`'s `column` as node `k` lists it (`rabbitmqctl list_queues name COLUMN`).
fn queue_column(k: usize, queue: &str, column: &str) -> Option<String> {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/rabbitmq-cluster.sh"
        ))
        .args([
            "ctl",
            &k.to_string(),
            "list_queues",
            "-q",
            "--no-table-headers",
        ])
        .args(["name", column])
        .env("RABBITMQ_CLUSTER_NAME", PLACE.name)
        .env("RABBITMQ_CLUSTER_PORT_BASE", PLACE.port_base.to_string())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let (name, rest) = line.trim().split_once(char::is_whitespace)?;
            (name == queue).then(|| rest.trim().to_string())
        })
}

/// The messages of `queue` (a passive declaration on a connection of its own to `url`, at
/// most 10 s); `None` when the node does not answer.
fn depth(url: &str, queue: &str) -> Option<usize> {
    use lapin::options::QueueDeclareOptions;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let counted = tokio::time::timeout(Duration::from_secs(10), async {
            let conn = tasks::amqp::connect(url, "delay failover test")
                .await
                .ok()?;
            let channel = conn.create_channel().await.ok()?;
            let declared = tasks::amqp::inspect(&channel, queue).await;
            let _ = conn.close(200, "counted".into()).await;
            declared.ok().map(|q| q.message_count() as usize)
        });
        counted.await.ok().flatten()
    })
}

#[test]
fn tasks_waiting_in_a_delay_queue_survive_the_loss_of_its_leader() {
    let cluster = Cluster::start(PLACE, 3);
    let urls = cluster.urls.clone();
    let pid = std::process::id();
    let delay_queue = tasks::amqp::delay::delay_queue(WAIT);

    // An executant whose worker image does not exist: each task it takes is an engine
    // fault, sent to wait in the delay queue.
    let mut failing = executant::Config::new(urls.clone());
    failing.name = format!("delays-failing-{pid}");
    failing.worker_image = "taskplatform/no-such-worker:absent".into();
    failing.retry_delay = WAIT;
    failing.retry_delay_max = WAIT;
    let failing = Executant::run(failing);

    let ws = tempfile::tempdir().unwrap();
    let id = format!("delays-{pid}");
    let started = Instant::now();
    let mut client = Command::new(env!("CARGO_BIN_EXE_commanditaire"))
        .env("AMQP_URL", &urls)
        .arg("--workspace")
        .arg(ws.path())
        .args([
            "--json",
            "nqueens",
            &N.to_string(),
            "--depth",
            "1",
            "--id",
            &id,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tasks = tasks::split::nqueens_project(&id, N, 1)
        .unwrap()
        .tasks
        .len();

    // The copies waiting in the delay queue, asked of node `k` over AMQP (a passive
    // declaration, which the queue's leader answers; `None`: no answer). Not rabbitmqctl's
    // `messages`: its counters of a quorum queue read 0 for a while after a new leader is
    // elected.
    let node_urls: Vec<String> = urls.split(',').map(str::to_string).collect();
    let waiting = |k: usize| depth(&node_urls[k - 1], &delay_queue);
    support::wait_for(
        "every task in the delay queue",
        Duration::from_secs(120),
        || waiting(1).is_some_and(|m| m >= tasks),
    );
    let in_delay = started.elapsed();
    let all_in = Instant::now();
    // Stopped in the background (its shutdown took up to a minute under load): it cancels
    // its consumers at once, long before the copies are due back.
    let stopping = std::thread::spawn(move || drop(failing));
    assert_eq!(
        queue_column(1, &delay_queue, "type").as_deref(),
        Some("quorum"),
        "{delay_queue} is not a quorum queue"
    );
    let members = queue_column(1, &delay_queue, "members").unwrap_or_default();
    for k in 1..=3 {
        assert!(
            members.contains(&format!("{}-{k}@", PLACE.name)),
            "{delay_queue} has no member on node {k}: {members}"
        );
    }
    let leader = cluster
        .leader(&delay_queue, 1)
        .expect("the delay queue has a leader");
    let other = (1..=3).find(|&k| k != leader).unwrap();

    // Its leader killed while they wait; a worker that runs them from now on.
    let killed = Instant::now();
    cluster.signal(leader, "KILL");
    let mut honest = executant::Config::new(urls.clone());
    honest.name = format!("delays-honest-{pid}");
    let honest = Executant::run(honest);
    let election = cluster
        .wait_new_leader(&delay_queue, leader, other, Duration::from_secs(120))
        .expect("a new leader of the delay queue");
    let still_waiting = waiting(other);
    assert_eq!(
        still_waiting,
        Some(tasks),
        "the copies are not all in {delay_queue} under its new leader"
    );
    // When the copies left the delay queue (due back [`WAIT`] after they entered it).
    let mut left = None;
    while killed.elapsed() < AFTER_KILL {
        if waiting(other) == Some(0) {
            left = Some((killed.elapsed(), all_in.elapsed()));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break Some(status);
        }
        if killed.elapsed() > AFTER_KILL {
            let _ = client.kill();
            let _ = client.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut out = String::new();
    let mut err = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    drop(honest);
    stopping.join().unwrap();
    println!(
        "delay failover: {tasks} tasks in {delay_queue} after {:.1} s (members {members}); \
         node {leader} (its leader) killed; new leader after {:.1} s, {still_waiting:?} still \
         waiting there; the queue empty {} ; client {} {:.1} s after the kill",
        in_delay.as_secs_f64(),
        election.as_secs_f64(),
        left.map_or("never".to_string(), |(k, a)| format!(
            "{:.1} s after the kill, {:.1} s after the last copy entered (wait {WAIT:?})",
            k.as_secs_f64(),
            a.as_secs_f64()
        )),
        status.map_or("still running".to_string(), |s| format!("exited {s}")),
        killed.elapsed().as_secs_f64(),
    );
    let status = status.unwrap_or_else(|| {
        panic!("the project did not finish within {AFTER_KILL:?} of the kill: {err}")
    });
    let json: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("no JSON ({e}), {status}: {out:?} {err}"));
    assert_eq!(status.code(), Some(0), "{json} {err}");
    assert_eq!(json["solutions"].as_u64(), Some(oeis(N)), "{json}");
    assert!(
        !err.contains("published them again"),
        "the client published lost tasks again: {err}"
    );
    let verdict = faults::harness::verify(ws.path(), &id, Some(oeis(N)));
    assert_eq!(
        (verdict.tasks, verdict.lost, verdict.duplicated),
        (tasks, 0, 0)
    );
    // Every counted outcome came from a copy that went through the delay queue.
    let folder = ws
        .path()
        .join("tracking")
        .join(tasks::layout::results_folder(&id));
    let mut counted = 0;
    for entry in std::fs::read_dir(folder).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .lines()
        {
            let result = tasks::TaskResult::from_json(line.as_bytes()).unwrap();
            let attempt = result.provenance.as_ref().map_or(0, |p| p.attempt);
            assert!(
                attempt >= 2,
                "task {} counted from attempt {attempt}",
                result.index
            );
            counted += 1;
        }
    }
    assert_eq!(counted, tasks);
}
