//! Container overhead and throughput of the executant, next to `docker run` and the broker's
//! own ceiling, measured side by side in one run against the real broker and engine.
//!
//!   cargo bench -p executant --bench throughput            (10,000 tasks)
//!   BENCH_TASKS=2000 BENCH_CONCURRENCY=16 cargo bench -p executant --bench throughput
//!   BENCH_ONLY=ceiling cargo bench -p executant --bench throughput   (the broker's ceiling)

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use tasks::amqp::{self, Message};
use tasks::test_support::{amqp_url, consume_results};
use tasks::Task;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tasks = env_or("BENCH_TASKS", 10_000);
    let concurrency = env_or("BENCH_CONCURRENCY", 128) as u16;
    if std::env::var("BENCH_ONLY").as_deref() == Ok("ceiling") {
        let ceiling = runtime.block_on(broker_ceiling(tasks));
        println!("broker ceiling: {ceiling:.0} /s ({tasks} messages)");
        return;
    }
    println!("executant benchmark: trivial N-queens tasks (N = 4), worker image taskplatform/worker:latest");

    let docker_run = docker_run_median(15);
    let (single_tasks, single) = runtime.block_on(per_task(1, 1, 24));
    let (reuse_tasks, reused) = runtime.block_on(per_task(1, 10_000, 400));
    let throughput = runtime.block_on(run_tasks(concurrency, 10_000, tasks));
    let ceiling = runtime.block_on(broker_ceiling(tasks));

    println!();
    println!("{:<58} {:>14}", "measure", "value");
    println!(
        "{:<58} {:>11.1} ms",
        "docker run --rm (median of 15)",
        ms(docker_run)
    );
    println!(
        "{:<58} {:>11.1} ms",
        format!("per task, one container per task ({single_tasks} tasks, sequential)"),
        ms(single)
    );
    println!(
        "{:<58} {:>11.2} ms",
        format!("per task, --reuse ({reuse_tasks} tasks, sequential)"),
        ms(reused)
    );
    println!(
        "{:<58} {:>10.0} /s",
        format!("throughput, --reuse, concurrency {concurrency} ({tasks} tasks)"),
        throughput
    );
    println!(
        "{:<58} {:>10.0} /s",
        format!("broker ceiling: lapin publish-confirm + consume-ack ({tasks})"),
        ceiling
    );
    println!();
    println!(
        "one container per task vs docker run: {:.2}x the time ({})",
        single.as_secs_f64() / docker_run.as_secs_f64(),
        if single < docker_run {
            "below docker run: target met"
        } else {
            "ABOVE docker run: target missed"
        }
    );
    println!(
        "throughput with reuse vs broker ceiling: {:.0}% ({})",
        100.0 * throughput / ceiling,
        if throughput * 2.0 >= ceiling {
            "at least half: target met"
        } else {
            "below half: target missed"
        }
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn docker_run_median(runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let status = std::process::Command::new("docker")
                .args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "taskplatform/worker:latest",
                    "nqueens",
                    "4",
                ])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("running docker");
            assert!(status.success(), "docker run failed");
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn trivial_tasks(project: &str, count: usize) -> Vec<Task> {
    let project = tasks::split::nqueens_project(project, 4, 0).unwrap();
    let template = project.tasks.get(0).expect("a task");
    (0..count as u32)
        .map(|i| Task {
            index: i,
            ..template.clone()
        })
        .collect()
}

/// Runs `count` tasks with one executant at `concurrency`, sequentially when 1; returns the
/// wall time per task.
async fn per_task(concurrency: u16, reuse: u32, count: usize) -> (usize, Duration) {
    // Warm up: the first container of a run pays for cold caches.
    run_tasks(concurrency, reuse, 2).await;
    let rate = run_tasks(concurrency, reuse, count).await;
    (count, Duration::from_secs_f64(1.0 / rate))
}

/// Publishes `count` trivial tasks, runs an executant until every result is back; returns
/// tasks per second from the first publish to the last result.
async fn run_tasks(concurrency: u16, reuse: u32, count: usize) -> f64 {
    let project = format!(
        "bench-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_suffix()
    );
    let tasks = trivial_tasks(&project, count);
    let mut config = executant::Config::new(amqp_url());
    config.concurrency = concurrency;
    config.reuse = reuse;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let executant = tokio::spawn(executant::run(config, async {
        let _ = stopped.await;
    }));

    let conn = amqp::connect(&amqp_url(), "bench client").await.unwrap();
    let publisher = amqp::confirm_channel(&conn).await.unwrap();
    amqp::declare_todo(&publisher).await.unwrap();
    let consumer_channel = conn.create_channel().await.unwrap();
    consumer_channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let (queue, mut consumer) = consume_results(&consumer_channel, &amqp_url(), &project).await;
    let start = Instant::now();
    let publish = async {
        amqp::publish_tasks(&publisher, &tasks).await.unwrap();
    };
    let collect = async {
        let mut seen = std::collections::HashSet::new();
        let mut messages = 0;
        while seen.len() < count {
            let d = tokio::time::timeout(Duration::from_secs(300), consumer.next())
                .await
                .expect("results stopped coming")
                .unwrap()
                .unwrap();
            // One result, or a batch of them.
            for r in tasks::results::parse(&d.data).unwrap() {
                let r = r.result;
                assert!(matches!(r.outcome, tasks::Outcome::Ok { .. }), "{r:?}");
                seen.insert(r.index);
            }
            messages += 1;
            // Like the client, ack in batches (it acks after each tracking commit).
            if messages % 100 == 0 || seen.len() == count {
                d.ack(BasicAckOptions { multiple: true }).await.unwrap();
            }
        }
    };
    tokio::join!(publish, collect);
    let elapsed = start.elapsed();
    let _ = stop.send(());
    executant.await.unwrap().unwrap();
    let _ = publisher
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bench".into()).await;
    count as f64 / elapsed.as_secs_f64()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        & 0xffff_ffff
}

/// The broker's own ceiling: a plain lapin loop publishing with confirms (256 in flight) to a
/// scratch quorum queue while a consumer acks each message, on separate connections.
async fn broker_ceiling(count: usize) -> f64 {
    let queue = format!("bench.ceiling.{}", std::process::id());
    let pub_conn = amqp::connect(&amqp_url(), "bench ceiling publish")
        .await
        .unwrap();
    let sub_conn = amqp::connect(&amqp_url(), "bench ceiling consume")
        .await
        .unwrap();
    let publisher = amqp::confirm_channel(&pub_conn).await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    publisher
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    let channel = sub_conn.create_channel().await.unwrap();
    channel
        .basic_qos(256, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let body = br#"{"schema":1,"project":"ceiling","index":0,"kind":"nqueens","n":4,"prefix":[],"weight":1}"#;
    let start = Instant::now();
    let publish = async {
        for _ in 0..count / 256 + 1 {
            let confirms = (0..256).map(|_| {
                amqp::publish(
                    &publisher,
                    Message {
                        exchange: "",
                        routing_key: &queue,
                        message_id: "ceiling",
                        body,
                        reason: None,
                    },
                )
            });
            for r in futures_util::future::join_all(confirms).await {
                r.unwrap();
            }
        }
    };
    let consume = async {
        for _ in 0..count {
            let d = consumer.next().await.unwrap().unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    };
    tokio::join!(publish, consume);
    let elapsed = start.elapsed();
    let _ = publisher
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = pub_conn.close(200, "bench".into()).await;
    let _ = sub_conn.close(200, "bench".into()).await;
    count as f64 / elapsed.as_secs_f64()
}
