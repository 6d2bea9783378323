//! TODO deliveries acked together (issue 14): one `basic.ack` with `multiple` for every
//! delivery up to a tag whose outcomes were all confirmed. An executant SIGKILLed while it
//! acks so must lose no task (none acked before its result was confirmed: every task it had
//! not acked comes back and its successor answers it), count none twice (read by task index,
//! the first counting), and leave no delivery unacked behind it: once its successor stopped,
//! `todo` is empty.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tasks::reassemble::Recorded;
use tasks::{amqp, Reassembly, TaskResult};

use crate::batched::Executant;
use crate::support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The executant's counters of acks, by name (`executant_ack_frames_total{how="together"}`).
async fn ack_counters(port: u16) -> HashMap<String, f64> {
    let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return HashMap::new();
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("executant_ack") || l.starts_with("executant_acked"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn frames(counters: &HashMap<String, f64>, how: &str) -> f64 {
    counters
        .get(&format!("executant_ack_frames_total{{how=\"{how}\"}}"))
        .copied()
        .unwrap_or(0.0)
}

/// The messages ready in `queue` (a passive declaration).
async fn ready_in(url: &str, queue: &str) -> u32 {
    let conn = amqp::connect(url, "executant tests acks probe")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let q = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_together_lose_nothing_when_the_executant_is_killed() {
    // On a vhost of its own (named after the runner's, so that two runners do not share
    // it): no other test's executant takes these tasks.
    let name = match vhost().as_str() {
        "/" => "executant-acks".to_string(),
        v => format!("{v}-executant-acks"),
    };
    let url = own_vhost(&name);
    let n = 12;
    let id = unique_project("acks");
    // 5,078 tasks of well under a millisecond: many are confirmed together.
    let project = tasks::split::nqueens_project(&id, n, 5).unwrap();
    let count = project.tasks.len();
    publish_tasks_to(&url, &id, &project.tasks.to_vec()).await;

    let conn = amqp::connect(&url, "executant tests acks").await.unwrap();
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
    let (victim_port, successor_port) = (free_port(), free_port());
    let listen = |port: u16| format!("127.0.0.1:{port}");
    let victim_listen = listen(victim_port);
    let mut victim = Executant::start_with(
        &url,
        &format!("{id}-victim"),
        &logs.path().join("v.log"),
        &["--metrics-listen", &victim_listen],
    );
    let mut successor = None;
    let mut reassembly = Reassembly::new(project.clone());
    let mut kept: BTreeMap<u32, TaskResult> = BTreeMap::new();
    let mut duplicates = 0;
    let mut victim_acks = HashMap::new();
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
        for r in tasks::results::parse(&delivery.data).unwrap() {
            let task = project.tasks.get(r.result.index as usize).unwrap();
            assert_eq!(r.result.digest, Some(task.digest()));
            match reassembly.record(&r.result) {
                Recorded::New => {
                    kept.insert(r.result.index, r.result);
                }
                Recorded::Duplicate => duplicates += 1,
                Recorded::Unknown => panic!("a result the project does not have: {r:?}"),
            }
        }
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        // Kill the victim mid-stream, once it has acked deliveries together.
        if killed_after.is_none() && kept.len() >= count / 4 {
            let counters = ack_counters(victim_port).await;
            if frames(&counters, "together") > 0.0 {
                victim.kill();
                victim_acks = counters;
                killed_after = Some(kept.len());
                let successor_listen = listen(successor_port);
                successor = Some(Executant::start_with(
                    &url,
                    &format!("{id}-successor"),
                    &logs.path().join("s.log"),
                    &["--metrics-listen", &successor_listen],
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
        kept.keys().copied().eq(0..count as u32),
        "one result per task"
    );
    let by_successor = kept
        .values()
        .filter(|r| r.executor.as_deref() == Some(format!("{id}-successor").as_str()))
        .count();
    assert!(by_successor > 0, "the successor answered nothing");

    // Every ack the successor sent: together, far fewer frames than deliveries.
    let acks = ack_counters(successor_port).await;
    let together = frames(&acks, "together");
    let alone = frames(&acks, "alone");
    let acked_together = acks
        .get("executant_acked_together_total")
        .copied()
        .unwrap_or(0.0);
    successor.take().unwrap().stop();
    // Stopped: a delivery it never acked would be back in `todo` now.
    let left = ready_in(&url, amqp::TODO_QUEUE).await;
    eprintln!(
        "{count} tasks; victim killed after {killed_after} results (its acks: {victim_acks:?}); \
         {by_successor} answered by its successor, which acked {acked_together} deliveries in \
         {together} frames together and {alone} alone; {duplicates} duplicates ignored; \
         {left} left in todo"
    );
    assert_eq!(left, 0, "every delivery acked: none back in todo");
    assert!(
        acked_together + alone >= by_successor as f64,
        "every task the successor answered was acked"
    );
    assert!(
        together + alone <= (acked_together + alone) / 4.0,
        "acks not sent together: {together} + {alone} frames for {} deliveries",
        acked_together + alone
    );
    let _ = conn.close(200, "done".into()).await;
    drop_results_at(&url, &id).await;
}
