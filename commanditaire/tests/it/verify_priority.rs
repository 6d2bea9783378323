//! `verify`'s re-runs wait in the work queue of the project's priority, as every other
//! publish of its tasks does, on the real broker (a vhost of the test's own). The test
//! stands in for the executant: it takes each re-run from the queue it waits in and answers.

use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use tasks::amqp::{self, Message};
use tasks::{Priority, Task};

use commanditaire::history::History;
use commanditaire::verify;

use crate::support::own_vhost;

#[tokio::test(flavor = "multi_thread")]
async fn verify_reruns_go_to_the_work_queue_of_the_projects_priority() {
    let url = own_vhost("commanditaire-verify-priority");
    let conn = amqp::connect(&url, "verify priority test").await.unwrap();
    let channel = amqp::confirm_channel(&conn).await.unwrap();
    amqp::declare_todo(&channel).await.unwrap();
    for queue in Priority::ALL.map(amqp::todo_queue) {
        channel
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await
            .unwrap();
    }
    for priority in Priority::ALL {
        let id = format!("verify-{priority}-{}", std::process::id());
        let project = tasks::split::nqueens_project(&id, 6, 1).unwrap();
        let indexes = [0, 2];
        let history = History::replay(project, Vec::new());
        let rerun = tokio::spawn({
            let url = url.clone();
            async move { verify::rerun(&url, &history, &indexes, priority).await }
        });

        // Each re-run from the queue of `priority`, answered with its computed result.
        let queue = amqp::todo_queue(priority);
        let mut answered = std::collections::BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while answered.len() < indexes.len() {
            assert!(
                Instant::now() < deadline,
                "{priority}: {} of {} re-runs reached {queue} within 30 s",
                answered.len(),
                indexes.len()
            );
            let got = channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .unwrap();
            let Some(message) = got else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let task = Task::from_json(&message.delivery.data).unwrap();
            assert_eq!(task.project, id);
            let result = tasks::compute::compute(&task);
            let body = result.to_json();
            let message_id = format!("{id}/{}", task.index);
            amqp::publish(
                &channel,
                Message {
                    exchange: amqp::RESULTS_EXCHANGE,
                    routing_key: &id,
                    message_id: &message_id,
                    body: &body,
                    reason: None,
                },
            )
            .await
            .unwrap();
            message
                .delivery
                .ack(BasicAckOptions::default())
                .await
                .unwrap();
            answered.insert(task.index, result);
        }
        let again = tokio::time::timeout(Duration::from_secs(30), rerun)
            .await
            .expect("verify's re-run did not end once answered")
            .unwrap()
            .unwrap();
        assert_eq!(answered.keys().copied().collect::<Vec<_>>(), indexes);
        assert_eq!(again.keys().copied().collect::<Vec<_>>(), indexes);
        for (index, sent) in &answered {
            assert_eq!(
                again[index].outcome, sent.outcome,
                "{priority}: task {index}"
            );
        }
        // Nothing of the project went to another work queue.
        for other in Priority::ALL.into_iter().filter(|p| *p != priority) {
            let q = amqp::inspect(&channel, amqp::todo_queue(other))
                .await
                .unwrap();
            assert_eq!(q.message_count(), 0, "{priority}: a re-run in {}", other);
        }
    }
    let _ = conn.close(200, "done".into()).await;
}
