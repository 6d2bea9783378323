//! TODO deliveries acked together (issue 14): one `basic.ack` with `multiple` for every
//! delivery up to a tag whose outcomes were all confirmed. An executant SIGKILLed while it
//! acks so must lose no task (none acked before its result was confirmed: every task it had
//! not acked comes back and its successor answers it), count none twice (read by task index,
//! the first counting), and leave no delivery unacked behind it: once its successor stopped,
//! `todo` is empty.

use std::collections::HashMap;

use tasks::amqp;

use crate::killed::{killed_mid_project, Executant, Role, Seen};
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
    let q = amqp::inspect(&channel, queue).await.unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_together_lose_nothing_when_the_executant_is_killed() {
    // On a vhost of its own (named after the runner's, so that two runners do not share
    // it): no other test's executant takes these tasks.
    let url = own_vhost(&match vhost().as_str() {
        "/" => "executant-acks".to_string(),
        v => format!("{v}-executant-acks"),
    });
    let id = unique_project("acks");
    let (victim_port, successor_port) = (free_port(), free_port());
    let mut victim_acks = HashMap::new();
    // 5,078 tasks of well under a millisecond: many are confirmed together.
    let run = killed_mid_project(
        &url,
        &id,
        12,
        |role, name, log| {
            let port = match role {
                Role::Victim => victim_port,
                Role::Successor => successor_port,
            };
            let listen = format!("127.0.0.1:{port}");
            Executant::start_with(&url, name, log, &["--metrics-listen", &listen])
        },
        // Killed mid-stream, once it has acked deliveries together.
        async |seen: &Seen| {
            if seen.kept < seen.count / 4 {
                return false;
            }
            let counters = ack_counters(victim_port).await;
            let together = frames(&counters, "together") > 0.0;
            if together {
                victim_acks = counters;
            }
            together
        },
    )
    .await;

    // Every ack the successor sent: together, far fewer frames than deliveries.
    let acks = ack_counters(successor_port).await;
    let together = frames(&acks, "together");
    let alone = frames(&acks, "alone");
    let acked_together = acks
        .get("executant_acked_together_total")
        .copied()
        .unwrap_or(0.0);
    let mut successor = run.successor;
    successor.stop();
    // Stopped: a delivery it never acked would be back in `todo` now.
    let left = ready_in(&url, amqp::TODO_QUEUE).await;
    eprintln!(
        "{} tasks; victim killed after {} results (its acks: {victim_acks:?}); {} answered \
         by its successor, which acked {acked_together} deliveries in {together} frames \
         together and {alone} alone; {} duplicates ignored; {left} left in todo",
        run.count, run.killed_after, run.by_successor, run.duplicates
    );
    assert_eq!(left, 0, "every delivery acked: none back in todo");
    assert!(
        acked_together + alone >= run.by_successor as f64,
        "every task the successor answered was acked"
    );
    assert!(
        together + alone <= (acked_together + alone) / 4.0,
        "acks not sent together: {together} + {alone} frames for {} deliveries",
        acked_together + alone
    );
    drop_results_at(&url, &id).await;
}
