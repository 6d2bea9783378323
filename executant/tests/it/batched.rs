//! Results published in batches (issue 14): the results of a project that are ready together
//! go out in one message. An executant SIGKILLed while its results stream out must lose none
//! (every task it had not acked comes back to `todo` and another executant answers it), and
//! read the way the client reads them (by task index, the first counting), none counts twice.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tasks::reassemble::Recorded;
use tasks::{amqp, Reassembly, TaskResult};

use crate::support::*;

/// An executant process with no flags but its name, killed if the test fails first.
pub(crate) struct Executant(Option<Child>);

impl Executant {
    pub(crate) fn start(url: &str, name: &str, log: &std::path::Path) -> Executant {
        Executant::start_with(url, name, log, &[])
    }

    /// With `args` besides its name.
    pub(crate) fn start_with(
        url: &str,
        name: &str,
        log: &std::path::Path,
        args: &[&str],
    ) -> Executant {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_results_survive_an_executant_killed_mid_stream() {
    // On a vhost of its own: no other test's executant takes these tasks.
    let url = own_vhost("executant-batched");
    let n = 12;
    let id = unique_project("batched");
    // 5,078 tasks of well under a millisecond: results are ready faster than confirms come.
    let project = tasks::split::nqueens_project(&id, n, 5).unwrap();
    let count = project.tasks.len();
    publish_tasks_to(&url, &id, &project.tasks.to_vec()).await;

    let conn = amqp::connect(&url, "executant tests batched")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_qos(500, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            amqp::results_queue(&id).as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let logs = tempfile::tempdir().unwrap();
    let mut victim = Executant::start(&url, &format!("{id}-victim"), &logs.path().join("v.log"));
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
        // Kill the victim while its batches stream out: a quarter of the project in, and
        // batches seen (its lanes hold many deliveries, some published and unacked).
        if killed_after.is_none() && kept.len() >= count / 4 && batches > 0 {
            victim.kill();
            killed_after = Some(kept.len());
            successor = Some(Executant::start(
                &url,
                &format!("{id}-successor"),
                &logs.path().join("s.log"),
            ));
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
    assert!(batches > 0, "no message carried more than one result");
    // The successor answered what the victim left (the victim never finished the project).
    let by_successor = kept
        .values()
        .filter(|r| r.executor.as_deref() == Some(format!("{id}-successor").as_str()))
        .count();
    assert!(by_successor > 0, "the successor answered nothing");
    eprintln!(
        "{count} tasks in {messages} messages ({batches} batches, the largest {largest}); \
         victim killed after {killed_after} results; {by_successor} answered by its \
         successor; {duplicates} duplicates ignored"
    );
    successor.take().unwrap().stop();
    let _ = conn.close(200, "done".into()).await;
    drop_results_at(&url, &id).await;
}
