//! An executant SIGKILLed in the middle of a project, and its successor: what the tests of
//! results sent together (`batched`) and acks sent together (`acks`) share. The project's
//! results are read the way the client reads them (by task index, the first counting), and
//! whatever the kill left behind must come back: nothing lost, nothing counted twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicQosOptions};
use tasks::reassemble::Recorded;
use tasks::{amqp, Reassembly, TaskResult};

use crate::support::*;

/// An executant process with no flags but its name (and `args`), killed if the test fails
/// first.
pub(crate) struct Executant(Option<Child>);

impl Executant {
    /// Starts one, its log in `log`.
    pub(crate) fn start_with(url: &str, name: &str, log: &Path, args: &[&str]) -> Executant {
        let child = Command::new(env!("CARGO_BIN_EXE_executant"))
            .args(["--name", name])
            .args(args)
            .env("AMQP_URL", url)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Executant(Some(child))
    }

    /// SIGKILL: no confirm awaited, no ack sent, no connection closed.
    pub(crate) fn kill(&mut self) {
        let mut child = self.0.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, as a service manager stops it.
    pub(crate) fn stop(&mut self) {
        let mut child = self.0.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(child.wait().unwrap().success());
    }
}

impl Drop for Executant {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The two executants' roles, which `start` is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Started first, SIGKILLed mid-project.
    Victim,
    /// Started once the victim is dead; answers what it left.
    Successor,
}

/// What has come back so far, for the test to decide when to kill the victim.
pub(crate) struct Seen {
    /// Tasks with a kept result.
    pub kept: usize,
    /// Tasks of the project.
    pub count: usize,
    /// Messages that carried more than one result.
    pub batches: usize,
}

/// A project run to its end across the kill.
pub(crate) struct Run {
    /// Tasks of the project.
    pub count: usize,
    /// Results messages read, those carrying more than one result, and the largest.
    pub messages: usize,
    pub batches: usize,
    pub largest: usize,
    /// Results received again for a task that had one (ignored).
    pub duplicates: usize,
    /// Tasks with a result when the victim was killed.
    pub killed_after: usize,
    /// Tasks whose kept result the successor computed.
    pub by_successor: usize,
    /// Still running: the test reads what it needs, then stops it.
    pub successor: Executant,
}

/// Runs N-queens `n` split at depth 5 (thousands of tasks of well under a millisecond)
/// through a victim executant, SIGKILLs it as soon as `kill_now` says so, then lets a
/// successor finish. Asserts what holds whatever the test: the count exact, one kept result
/// per task, each answering its exact task, and some answered by the successor.
pub(crate) async fn killed_mid_project(
    url: &str,
    id: &str,
    n: u8,
    start: impl Fn(Role, &str, &Path) -> Executant,
    mut kill_now: impl AsyncFnMut(&Seen) -> bool,
) -> Run {
    let project = tasks::split::nqueens_project(id, n, 5).unwrap();
    let count = project.tasks.len();
    publish_tasks_to(url, id, &project.tasks.to_vec()).await;
    let conn = amqp::connect(url, "executant tests killed").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_qos(500, BasicQosOptions::default())
        .await
        .unwrap();
    let (_, mut consumer) = consume_results(&channel, url, id).await;

    let logs = tempfile::tempdir().unwrap();
    let mut victim = start(
        Role::Victim,
        &format!("{id}-victim"),
        &logs.path().join("v.log"),
    );
    let mut successor = None;
    let mut reassembly = Reassembly::new(project.clone());
    let mut kept: BTreeMap<u32, TaskResult> = BTreeMap::new();
    let (mut messages, mut batches, mut largest, mut duplicates) = (0, 0, 0, 0);
    let mut killed_after = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while kept.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} results after 600 s",
            kept.len()
        );
        let Ok(next) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
        else {
            continue;
        };
        let delivery = next.expect("results consumer ended").unwrap();
        let received = tasks::results::parse(&delivery.data).unwrap();
        messages += 1;
        if received.len() > 1 {
            batches += 1;
        }
        largest = largest.max(received.len());
        for r in received {
            let task = project.tasks.get(r.result.index as usize).unwrap();
            assert_eq!(
                r.result.digest,
                Some(task.digest()),
                "answers its exact task"
            );
            match reassembly.record(&r.result) {
                Recorded::New => {
                    kept.insert(r.result.index, r.result);
                }
                Recorded::Duplicate => duplicates += 1,
                Recorded::Unknown => panic!("a result the project does not have: {r:?}"),
            }
        }
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        if killed_after.is_none() {
            let seen = Seen {
                kept: kept.len(),
                count,
                batches,
            };
            if kill_now(&seen).await {
                victim.kill();
                killed_after = Some(kept.len());
                successor = Some(start(
                    Role::Successor,
                    &format!("{id}-successor"),
                    &logs.path().join("s.log"),
                ));
            }
        }
    }
    let killed_after = killed_after.expect("the victim was killed mid-project");
    let result = reassembly.result();
    assert!(result.complete, "{result:?}");
    assert_eq!(
        result.solutions,
        tasks::nqueens::known_count(n),
        "the count is exact: nothing lost, nothing counted twice"
    );
    assert!(
        kept.len() == count && kept.keys().copied().eq(0..count as u32),
        "one kept result per task"
    );
    // The successor answered what the victim left (the victim never finished the project).
    let by_successor = kept
        .values()
        .filter(|r| r.executor.as_deref() == Some(format!("{id}-successor").as_str()))
        .count();
    assert!(by_successor > 0, "the successor answered nothing");
    let _ = conn.close(200, "done".into()).await;
    Run {
        count,
        messages,
        batches,
        largest,
        duplicates,
        killed_after,
        by_successor,
        successor: successor.expect("started with the kill"),
    }
}
