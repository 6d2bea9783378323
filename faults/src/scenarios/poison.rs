//! Poison on `todo` beside good tasks.

use std::time::{Duration, Instant};

use tasks::amqp;

use super::Run;
use crate::harness::{self, Env};
use crate::{Row, Size};

/// Poison on `todo` beside good tasks: malformed JSON, unknown kinds, oversized
/// messages, images off the allowlist.
pub fn poison(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-poison", &[], None);
    let image_project = format!("{}-img", run.id);
    let rounds = size.faults.div_ceil(4);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (dead_ids, image_tasks) = runtime.block_on(publish_poison(
        &env.amqp_url,
        &run.id,
        &image_project,
        rounds,
    ));
    let faults = dead_ids.len() + image_tasks;
    // The poison sits behind the project's tasks in `todo`: look for it once they are done.
    harness::wait_until(size.bound, || run.client.exited());
    let found = runtime.block_on(check_poison(
        &env.amqp_url,
        &dead_ids,
        &image_project,
        image_tasks,
    ));
    let (dead_lettered, refused) = (found.dead_lettered, found.refused);
    run.finish("poison", faults, found.problems, |_, _| {
        let note = format!(
            "{dead_lettered} dead-lettered with reasons, {refused} refused with a failed result"
        );
        (note, vec![])
    })
}

/// Publishes `rounds` of each poison kind; returns the message ids that must be
/// dead-lettered and the number of image-refusal tasks.
async fn publish_poison(
    url: &str,
    id: &str,
    image_project: &str,
    rounds: usize,
) -> (Vec<String>, usize) {
    let conn = amqp::connect(url, "faults poison").await.unwrap();
    let channel = amqp::confirm_channel(&conn).await.unwrap();
    amqp::declare_todo(&channel).await.unwrap();
    amqp::declare_results(&channel, image_project, &amqp::Nodes::parse(url))
        .await
        .unwrap();
    let oversized = format!(
        r#"{{"schema":1,"project":"{id}","index":0,"kind":"exec","image":"debian:bookworm-slim","command":["{}"]}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let mut dead = Vec::new();
    for r in 0..rounds {
        let bodies: [(&str, Vec<u8>); 3] = [
            ("malformed", b"{ not json at all".to_vec()),
            (
                "unknown-kind",
                format!(r#"{{"schema":1,"project":"{id}","index":0,"kind":"mine-bitcoin"}}"#)
                    .into_bytes(),
            ),
            ("oversized", oversized.clone().into_bytes()),
        ];
        for (kind, body) in bodies {
            let mid = format!("{id}/poison-{kind}-{r}");
            publish(&channel, &mid, &body).await;
            dead.push(mid);
        }
        let task = tasks::Task {
            schema: tasks::SCHEMA_VERSION,
            project: image_project.to_string(),
            index: r as u32,
            timeout_secs: None,
            spec: tasks::TaskSpec::Exec(tasks::model::ExecSpec {
                image: "evil/miner:latest".into(),
                command: vec!["mine".into()],
                script: None,
            }),
        };
        publish(&channel, &task.id(), &task.to_json()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = conn.close(200, "poisoned".into()).await;
    (dead, rounds)
}

async fn publish(channel: &lapin::Channel, id: &str, body: &[u8]) {
    amqp::publish_todo(channel, id, body).await.unwrap();
}

struct PoisonFound {
    dead_lettered: usize,
    refused: usize,
    problems: Vec<String>,
}

/// Finds each poison message in `todo.dead` with its reason, and each refused image task's
/// failed result.
async fn check_poison(
    url: &str,
    dead_ids: &[String],
    image_project: &str,
    image_tasks: usize,
) -> PoisonFound {
    use futures_util::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, QueueDeleteOptions,
    };
    let conn = amqp::connect(url, "faults poison check").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut problems = Vec::new();
    let mut wanted: std::collections::HashSet<&str> = dead_ids.iter().map(String::as_str).collect();
    let mut dead_lettered = 0;
    let mut consumer = channel
        .basic_consume(
            amqp::DEAD_QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wanted.is_empty() && Instant::now() < deadline {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
        else {
            continue;
        };
        let mid = amqp::message_id_of(&d.properties);
        if wanted.remove(mid.as_str()) {
            match amqp::reason_of(&d.properties) {
                Some(reason) if !reason.is_empty() => dead_lettered += 1,
                _ => problems.push(format!("{mid} was dead-lettered without a reason")),
            }
            d.ack(BasicAckOptions::default()).await.unwrap();
        } else {
            d.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    for mid in wanted {
        problems.push(format!("{mid} never reached todo.dead"));
    }
    let results = amqp::declare_results(&channel, image_project, &amqp::Nodes::parse(url))
        .await
        .unwrap();
    let mut refused = 0;
    let mut consumer = channel
        .basic_consume(
            results.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    while refused < image_tasks {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await
        else {
            problems.push(format!(
                "only {refused} of {image_tasks} image refusals came back"
            ));
            break;
        };
        for r in tasks::results::parse(&d.data).unwrap() {
            match r.result.outcome {
                tasks::Outcome::Failed { reason } if reason.contains("allowlist") => refused += 1,
                other => problems.push(format!("an off-allowlist image task gave {other:?}")),
            }
        }
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = channel
        .queue_delete(results.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "checked".into()).await;
    PoisonFound {
        dead_lettered,
        refused,
        problems,
    }
}
