//! The executant killed (SIGKILL) while it holds tasks on their last allowed delivery: the
//! broker dead-letters them (`delivery_limit`), the client must hear of each as a failed
//! outcome and finish (exit 3), and `resume --retry-failed` must then finish the project
//! with the exact answer.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use tasks::amqp;

use super::Run;
use crate::harness::Env;
use crate::{Row, Size};

/// Kills the executant once, with every task of the project on its last delivery.
pub fn last_delivery_kill(env: &Env, size: Size) -> Row {
    let mut run = Run::detached(env, size, "faults-last-delivery", &[]);
    let id = run.id.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let burnt = runtime.block_on(burn_deliveries(&env.amqp_url, &id));
    run.start_executant();
    run.follow(&["resume", &id]);
    // Let it take tasks, then kill it with deliveries in hand: once the first results are
    // recorded, it is consuming (a fixed pause was not enough: a CI run once killed an
    // executant that had not yet taken any delivery, and nothing was dead-lettered). With
    // the executants' defaults its prefetch has grown by then, and the kill takes many
    // deliveries with it; with the pin, the two it holds.
    run.wait_first_results();
    run.executant.kill9();
    run.start_executant();
    let mut problems = Vec::new();
    let client = std::mem::replace(&mut run.client, crate::harness::Proc::none());
    let mut hung = 0;
    let mut failed_named = 0;
    match client.output(size.bound) {
        None => hung += 1,
        Some(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            let json = crate::harness::client_json(&out);
            let failed = json["failed"].as_array().cloned().unwrap_or_default();
            failed_named = failed.len();
            let with_reason = failed
                .iter()
                .filter(|f| {
                    f["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("delivery_limit"))
                })
                .count();
            match out.status.code() {
                Some(3) if failed_named > 0 && with_reason == failed_named => {}
                Some(0) => problems
                    .push("the killed executant's last deliveries were not reported failed".into()),
                code => problems.push(format!(
                    "the first follower exited {code:?} ({failed_named} failed named): {}",
                    stderr.lines().last().unwrap_or_default()
                )),
            }
        }
    }
    run.follow(&["resume", &id, "--retry-failed"]);
    let mut row = run.finish("last-delivery-kill", 1, problems, move |json, _| {
        (
            format!(
                "{burnt} tasks on their last delivery, {failed_named} dead-lettered and \
                 reported, then retried: {} republished",
                json["published"]
            ),
            vec![],
        )
    });
    row.hung += hung;
    row
}

/// Returns every task of `project` waiting in `todo` until its next delivery is its last
/// (quorum queues count returns; the delivery limit allows that many returns, then one more
/// delivery). Returns how many tasks it prepared.
async fn burn_deliveries(url: &str, project: &str) -> usize {
    let conn = amqp::connect(url, "faults burn deliveries").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_qos(u16::MAX, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            amqp::TODO_QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let prefix = format!("{project}/");
    let mut held = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(3), consumer.next()).await
        else {
            break;
        };
        let mid = amqp::message_id_of(&d.properties);
        let count = amqp::delivery_count(&d.properties);
        if mid.starts_with(&prefix) && count + 1 >= amqp::DELIVERY_LIMIT {
            // One return short of the limit: the next delivery is the last.
            // Kept unacked: closing the channel returns it once more, which leaves it one
            // delivery short of being dead-lettered.
            held.insert(mid);
            continue;
        }
        d.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let _ = channel.close(200, "burnt".into()).await;
    let _ = conn.close(200, "burnt".into()).await;
    held.len()
}
