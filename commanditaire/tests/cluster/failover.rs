//! A project of more than 2,000 tasks through a 3-node cluster while a node fails: the node
//! leading `todo` killed (SIGKILL of its VM) then started again, or a node paused (SIGSTOP)
//! then resumed. Each run must end exact, with every task counted once, and no stretch
//! without progress longer than [`MAX_STALL`]. The figures (election time, longest stretch
//! without progress) are printed (`--nocapture` shows them). The kill test first checks,
//! on the same cluster, that a second follower of a project is refused ([`crate::followers`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faults::cluster::{self, Cluster};
use faults::harness::progress;

use crate::broker_api::Probe;
use crate::support::{oeis, Executant};

/// Nodes in the cluster.
const NODES: usize = 3;
/// The longest a node's queues may go without a leader.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest stretch without progress a run may have.
const MAX_STALL: Duration = Duration::from_secs(60);
/// The longest a whole project may take.
const PROJECT_TIMEOUT: Duration = Duration::from_secs(420);
/// The board: N=10 split 6 rows deep is 2,045 tasks (the whole-board symmetry split; the
/// mirror split of N=12 at depth 4 made 2,040, the class split makes 1,290).
const N: u8 = 10;
const DEPTH: &str = "6";

/// What is done to the node.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL of the node leading `todo`, started again 15 s later.
    KillTodoLeader,
    /// SIGSTOP of the node leading `todo` (the others see it vanish), SIGCONT 30 s later.
    PauseTodoLeader,
}

/// Every task index recorded in the project's batches at HEAD, in order of the files.
fn recorded_indexes(workspace: &Path, project: &str) -> Vec<u32> {
    let repo = git2::Repository::open(workspace.join("tracking")).unwrap();
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let dir = tree
        .get_path(Path::new(&tasks::layout::results_folder(project)))
        .unwrap();
    let dir = repo.find_tree(dir.id()).unwrap();
    let mut indexes = Vec::new();
    for entry in dir.iter() {
        let blob = repo.find_blob(entry.id()).unwrap();
        for line in blob
            .content()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            indexes.push(tasks::TaskResult::from_json(line).unwrap().index);
        }
    }
    indexes
}

/// Samples the progress every 250 ms until stopped; the samples (time, done).
struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, u32)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(workspace: PathBuf, project: String) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (samples, stop) = (samples.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((done, _)) = progress(&workspace, &project) {
                        samples.lock().unwrap().push((Instant::now(), done));
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        });
        Sampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    fn done(&self) -> u32 {
        self.samples.lock().unwrap().last().map_or(0, |s| s.1)
    }

    /// The longest stretch after `from` during which `done` did not grow, up to the last
    /// sample.
    fn longest_stall_after(&self, from: Instant) -> Duration {
        let samples = self.samples.lock().unwrap();
        let mut longest = Duration::ZERO;
        let mut since = from;
        let mut last_done = samples.iter().rfind(|s| s.0 <= from).map_or(0, |s| s.1);
        for &(at, done) in samples.iter().filter(|s| s.0 > from) {
            if done > last_done {
                longest = longest.max(at - since);
                since = at;
                last_done = done;
            }
        }
        longest
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().unwrap().join();
    }
}

/// Waits for the client to exit, within `timeout` (killed past it); its exit code, stdout
/// and stderr.
fn wait_client(mut child: Child, timeout: Duration) -> (i32, String, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (mut out, mut err) = (String::new(), String::new());
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
    (status.code().unwrap_or(-1), out, err)
}

/// `urls` with node `k` (1-based) first.
fn first_node(urls: &str, k: usize) -> String {
    let mut nodes: Vec<&str> = urls.split(',').collect();
    nodes.rotate_left(k - 1);
    nodes.join(",")
}

/// `verify P --sample 3` through the cluster, with the executants still running: exit 0.
fn verify_sample(urls: &str, workspace: &Path, project: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_commanditaire"))
        .env("AMQP_URL", urls)
        .arg("--workspace")
        .arg(workspace)
        .args(["verify", project, "--sample", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify on the cluster failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("verify --sample 3 on the cluster: exit 0");
}

fn run(fault: Fault) {
    let cluster = Cluster::start(cluster::TESTS, NODES);
    // The topology first (so `todo` has a leader to fail), through the platform's code.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let conn = tasks::amqp::connect_with_backoff(&cluster.urls, "cluster test", None)
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        tasks::amqp::declare_todo(&channel).await.unwrap();
        let _ = conn.close(200, "declared".into()).await;
    });
    let ws = tempfile::tempdir().unwrap();
    let project = format!("cluster-{fault:?}-{}", std::process::id()).to_lowercase();
    let executants: Vec<Executant> = (0..2)
        .map(|i| {
            Executant::start_on(&cluster.urls, 4, |config| {
                config.name = format!("cluster-test-{}-{i}", std::process::id());
            })
        })
        .collect();
    if let Fault::KillTodoLeader = fault {
        // Sharing this test's cluster (a start is 1-3 minutes here): one follower per project.
        crate::followers::second_follower_is_refused(&cluster.urls);
    }
    let client = Command::new(env!("CARGO_BIN_EXE_commanditaire"))
        .env("AMQP_URL", &cluster.urls)
        .env("RUST_LOG", "info")
        .arg("--workspace")
        .arg(ws.path())
        .args([
            "--json",
            "nqueens",
            &N.to_string(),
            "--depth",
            DEPTH,
            "--id",
            &project,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sampler = Sampler::start(ws.path().to_path_buf(), project.clone());
    // Mid-project: a tenth of the tasks done.
    let began = Instant::now();
    let total = loop {
        if let Some((done, tasks)) = progress(ws.path(), &project) {
            if done >= tasks / 10 {
                break tasks;
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "a tenth of the project was not done within 180 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        total >= 2000,
        "the project has {total} tasks, not 2,000 or more"
    );
    let leader = cluster
        .leader(tasks::amqp::TODO_QUEUE, 1)
        .expect("todo has a leader");
    let other = (1..=NODES).find(|&k| k != leader).unwrap();
    // broker-api on the node about to be killed (the first of its list).
    let api = matches!(fault, Fault::KillTodoLeader)
        .then(|| Probe::start(&first_node(&cluster.urls, leader)));
    let done_at_fault = sampler.done();
    let fault_at = Instant::now();
    let election = match fault {
        Fault::KillTodoLeader => {
            cluster.signal(leader, "KILL");
            let election = cluster
                .wait_new_leader(tasks::amqp::TODO_QUEUE, leader, other, ELECTION_TIMEOUT)
                .expect("a new todo leader");
            std::thread::sleep(Duration::from_secs(15).saturating_sub(fault_at.elapsed()));
            cluster.restart(leader).unwrap_or_else(|e| panic!("{e}"));
            election
        }
        Fault::PauseTodoLeader => {
            cluster.signal(leader, "STOP");
            let election = cluster
                .wait_new_leader(tasks::amqp::TODO_QUEUE, leader, other, ELECTION_TIMEOUT)
                .expect("a new todo leader");
            std::thread::sleep(Duration::from_secs(30).saturating_sub(fault_at.elapsed()));
            cluster.signal(leader, "CONT");
            election
        }
    };
    let (code, out, err) = wait_client(client, PROJECT_TIMEOUT);
    let stall = sampler.longest_stall_after(fault_at);
    drop(sampler);
    if let Some(api) = api {
        let (gap, failed) = api.longest_gap_after(fault_at);
        drop(api);
        println!(
            "broker-api on the killed node: longest stretch without an answer after the kill \
             {:.1} s (a request failed: {failed})",
            gap.as_secs_f64()
        );
        assert!(
            gap < crate::broker_api::MAX_GAP,
            "broker-api did not answer for {:.1} s after its node was killed",
            gap.as_secs_f64()
        );
        // The sampled re-run declares the project's results queue: a quorum queue here.
        verify_sample(&cluster.urls, ws.path(), &project);
    }
    drop(executants);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!("the client printed no JSON ({e}), exit {code}: stdout {out:?}, stderr {err}")
    });
    assert_eq!(code, 0, "{json}\n{err}");
    assert_eq!(json["solutions"].as_u64(), Some(oeis(N)), "{json}");
    assert_eq!(json["complete"], true, "{json}");
    let mut indexes = recorded_indexes(ws.path(), &project);
    let recorded = indexes.len();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), recorded, "a task was recorded twice");
    assert_eq!(indexes.len(), total as usize, "lost tasks");
    println!(
        "cluster failover {fault:?}: {total} tasks, node {leader} (leading todo) at {done_at_fault} done; \
         new todo leader after {:.1} s; longest stretch without progress after the fault {:.1} s; \
         duplicates ignored {}; whole project {:.0} s",
        election.as_secs_f64(),
        stall.as_secs_f64(),
        json["duplicate_results"],
        began.elapsed().as_secs_f64()
    );
    let took_over = err.contains("took over");
    println!("client log names the node that took over: {took_over}");
    assert!(
        stall < MAX_STALL,
        "{:.1} s without progress after the fault",
        stall.as_secs_f64()
    );
    assert!(
        !err.contains("guest:guest"),
        "a password reached the client's log"
    );
}

#[test]
fn todo_leader_killed_mid_project_exact_result() {
    run(Fault::KillTodoLeader);
}

#[test]
fn todo_leader_paused_mid_project_exact_result() {
    run(Fault::PauseTodoLeader);
}
