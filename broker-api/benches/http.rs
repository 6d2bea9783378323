//! Publish and get throughput and latency, broker-api against RabbitMQ's management API,
//! under the same bounded load on loopback: `CONCURRENCY` keep-alive connections (32), each
//! sending its next request when the previous one answered, `REQUESTS` requests per op
//! (20,000: first publishes, then gets of what was published).
//!
//!   cargo bench -p broker-api --bench http
//!
//! Then broker-api alone, paced (open loop) at 5x the management API's measured throughput,
//! beside the same paced load sent straight to the broker over AMQP (the floor).
//!
//! Environment: BENCH_REQUESTS, BENCH_CONCURRENCY, BENCH_ROUNDS (4), BENCH_QUEUE_TYPE
//! (`quorum`, the API's default, or `classic`), BENCH_PERSISTENT (1; 0 for transient
//! messages on both sides), AMQP_URL, MANAGEMENT_URL (default http://127.0.0.1:15672, user
//! guest:guest).
//!
//! Both sides publish persistent JSON messages to the same kind of durable queue and get
//! them with an ack (broker-api: `ack_mode: ack`; management: `ack_requeue_false`).
//! broker-api answers a publish only after the broker's confirm.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use reqwest::header::HeaderValue;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};

struct Target {
    name: &'static str,
    publish: Arc<Maker>,
    get: Arc<Maker>,
    /// Checks a get's answer held a message.
    got_message: fn(&Value) -> bool,
}

type Maker = dyn Fn(&Client) -> RequestBuilder + Send + Sync;

struct Row {
    target: &'static str,
    op: &'static str,
    requests: usize,
    throughput: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let requests = env_usize("BENCH_REQUESTS", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 32);
    let amqp_url =
        std::env::var("AMQP_URL").unwrap_or_else(|_| tasks::amqp::DEFAULT_AMQP_URL.to_string());
    let mgmt = std::env::var("MANAGEMENT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".into());

    // broker-api, in this process.
    let token = broker_api::Token::generate().unwrap();
    let config = broker_api::Config::new(
        "127.0.0.1:0".parse().unwrap(),
        amqp_url.clone(),
        token.clone(),
    );
    let server = broker_api::bind(&config).await.expect("bind broker-api");
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));

    let client = Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let suffix: String = {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).unwrap();
        b.iter().map(|x| format!("{x:02x}")).collect()
    };
    let ours = format!("bapi-bench-{suffix}");
    let theirs = format!("bapi-bench-mgmt-{suffix}");

    // Wait for the broker, create both queues (durable classic) through broker-api.
    let start = Instant::now();
    loop {
        let r = client.get(format!("{base}/readyz")).send().await;
        if r.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "broker-api never got ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queue_type = std::env::var("BENCH_QUEUE_TYPE").unwrap_or_else(|_| "quorum".into());
    for q in [&ours, &theirs] {
        let r = client
            .put(format!("{base}/api/queues/{q}"))
            .bearer_auth(token.expose())
            .json(&json!({"type": queue_type}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "create {q}");
    }
    let r = client
        .get(format!("{mgmt}/api/overview"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await;
    assert!(
        r.as_ref().is_ok_and(|r| r.status() == StatusCode::OK),
        "the management API does not answer at {mgmt}: {r:?}"
    );

    let persistent = std::env::var("BENCH_PERSISTENT").map_or(true, |v| v != "0");
    let payload = r#"{"schema":1,"bench":true,"data":"0123456789abcdef0123456789abcdef"}"#;
    // Parsed once: the load generator should cost as little as possible on both sides.
    let url = |s: String| reqwest::Url::parse(&s).unwrap();
    let bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose())).unwrap();
    let basic = HeaderValue::from_static("Basic Z3Vlc3Q6Z3Vlc3Q="); // guest:guest
    let targets = [
        Target {
            name: "broker-api",
            publish: {
                let url = url(format!("{base}/api/queues/{ours}/publish"));
                let auth = bearer.clone();
                let body =
                    serde_json::to_vec(&json!({"payload": payload, "persistent": persistent}))
                        .unwrap();
                Arc::new(move |c: &Client| {
                    c.post(url.clone())
                        .header("authorization", auth.clone())
                        .header("content-type", "application/json")
                        .body(body.clone())
                })
            },
            get: {
                let url = url(format!("{base}/api/queues/{ours}/get"));
                let auth = bearer.clone();
                Arc::new(move |c: &Client| {
                    c.post(url.clone())
                        .header("authorization", auth.clone())
                        .header("content-type", "application/json")
                        .body(r#"{"ack_mode":"ack"}"#)
                })
            },
            got_message: |v| v["empty"] == false,
        },
        Target {
            name: "management",
            publish: {
                let url = url(format!("{mgmt}/api/exchanges/%2F/amq.default/publish"));
                let auth = basic.clone();
                let body = serde_json::to_vec(&json!({
                    "properties": {
                        "delivery_mode": if persistent { 2 } else { 1 },
                        "content_type": "application/json",
                    },
                    "routing_key": theirs,
                    "payload": payload,
                    "payload_encoding": "string",
                }))
                .unwrap();
                Arc::new(move |c: &Client| {
                    c.post(url.clone())
                        .header("authorization", auth.clone())
                        .header("content-type", "application/json")
                        .body(body.clone())
                })
            },
            get: {
                let url = url(format!("{mgmt}/api/queues/%2F/{theirs}/get"));
                let auth = basic.clone();
                Arc::new(move |c: &Client| {
                    c.post(url.clone())
                        .header("authorization", auth.clone())
                        .header("content-type", "application/json")
                        .body(r#"{"count":1,"ackmode":"ack_requeue_false","encoding":"auto"}"#)
                })
            },
            got_message: |v| v.as_array().is_some_and(|a| a.len() == 1),
        },
    ];

    // Warm up the connections with a few round trips.
    for target in &targets {
        run(
            &client,
            concurrency,
            concurrency * 10,
            &target.publish,
            |_| true,
        )
        .await;
        run(&client, concurrency, concurrency * 10, &target.get, |_| {
            true
        })
        .await;
    }
    // The machine may be shared: alternate the targets in rounds so that both see the same
    // background load. Publishes first (every round of both), then the gets of them.
    let rounds = env_usize("BENCH_ROUNDS", 4).max(1);
    let per_round = requests / rounds;
    let requests = per_round * rounds;
    let mut results: Vec<[(Duration, Vec<Duration>); 2]> =
        targets.iter().map(|_| Default::default()).collect();
    for (op, field) in [("publish", 0), ("get", 1)] {
        for _ in 0..rounds {
            for (t, target) in targets.iter().enumerate() {
                let (make, check) = match op {
                    "publish" => (&target.publish, (|_: &Value| true) as fn(&Value) -> bool),
                    _ => (&target.get, target.got_message),
                };
                let (elapsed, lat) = run(&client, concurrency, per_round, make, check).await;
                let acc = &mut results[t][field];
                acc.0 += elapsed;
                acc.1.extend(lat);
            }
        }
    }
    let mut rows = Vec::new();
    for (target, [publish, get]) in targets.iter().zip(results) {
        rows.push(row(target.name, "publish", requests, publish));
        rows.push(row(target.name, "get", requests, get));
    }

    println!(
        "\n{requests} requests per op and target ({rounds} alternating rounds), {concurrency} keep-alive connections, loopback, {} messages\n",
        if persistent { "persistent" } else { "transient" }
    );
    print_header();
    for r in &rows {
        print_row(r, "");
    }
    println!();
    for op in ["publish", "get"] {
        let find = |t: &str| rows.iter().find(|r| r.target == t && r.op == op).unwrap();
        let (a, m) = (find("broker-api"), find("management"));
        println!(
            "{op:<8} broker-api / management: throughput x{:.1}, p99 {:.2} ms vs {:.2} ms",
            a.throughput / m.throughput,
            ms(a.p99),
            ms(m.p99)
        );
    }

    // p99 at the target load: broker-api paced at 5x the management API's throughput just
    // measured (open loop over the same connections), publishes then gets; beside it, the
    // same paced load sent straight to the broker over AMQP (lapin, as many channels as
    // broker-api uses): the floor that no HTTP front can go below.
    println!(
        "\npaced at 5x the management API's throughput (latency from the scheduled send time):\n"
    );
    print_header();
    let direct = Direct::open(&amqp_url, &ours, concurrency).await;
    for op in ["publish", "get"] {
        let mgmt = rows
            .iter()
            .find(|r| r.target == "management" && r.op == op)
            .unwrap();
        let rate = 5.0 * mgmt.throughput;
        let send: Arc<SendOne> = match op {
            "publish" => http_send(&client, &targets[0].publish, |_| true),
            _ => http_send(&client, &targets[0].get, targets[0].got_message),
        };
        let result = paced(concurrency, requests, rate, send).await;
        let offered = format!("   (offered {rate:.0}/s)");
        print_row(&row("broker-api", op, requests, result), &offered);
        let result = paced(
            concurrency,
            requests,
            rate,
            direct.send(op, payload, persistent),
        )
        .await;
        print_row(&row("amqp-direct", op, requests, result), &offered);
    }
    direct.close().await;

    // Clean up the bench's own queues.
    for q in [&ours, &theirs] {
        let _ = client
            .delete(format!("{base}/api/queues/{q}?force=true"))
            .bearer_auth(token.expose())
            .send()
            .await;
    }
    let _ = stop.send(());
    let _ = serving.await;
}

/// One request of a paced run: `send(k)` sends the k-th and checks its answer.
type SendOne = dyn Fn(usize) -> BoxFuture<'static, ()> + Send + Sync;

/// A paced request over HTTP: must answer 200 and pass `check`.
fn http_send(client: &Client, make: &Arc<Maker>, check: fn(&Value) -> bool) -> Arc<SendOne> {
    let (client, make) = (client.clone(), make.clone());
    Arc::new(move |_| {
        let request = make(&client);
        Box::pin(async move {
            let r = request.send().await.expect("request");
            let status = r.status();
            let body = r.bytes().await.expect("body");
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            let value: Value = serde_json::from_slice(&body).expect("JSON answer");
            assert!(check(&value), "unexpected answer {value}");
        })
    })
}

/// The broker itself, over AMQP: publishes with a confirm on shared confirm channels (as
/// broker-api does), gets with `basic.get` then `basic.ack` on one channel per worker slot.
struct Direct {
    conn: lapin::Connection,
    publish: Vec<lapin::Channel>,
    get: Vec<lapin::Channel>,
    queue: String,
}

impl Direct {
    /// Connects, with `getters` channels for gets (one per worker of the paced run).
    async fn open(url: &str, queue: &str, getters: usize) -> Direct {
        let conn = tasks::amqp::connect(url, "broker-api-bench")
            .await
            .expect("AMQP");
        let mut publish = Vec::new();
        for _ in 0..broker_api::DEFAULT_PUBLISH_CHANNELS {
            publish.push(tasks::amqp::confirm_channel(&conn).await.expect("channel"));
        }
        let mut get = Vec::new();
        for _ in 0..getters {
            get.push(conn.create_channel().await.expect("channel"));
        }
        Direct {
            conn,
            publish,
            get,
            queue: queue.to_string(),
        }
    }

    fn send(&self, op: &str, payload: &'static str, persistent: bool) -> Arc<SendOne> {
        let queue = self.queue.clone();
        if op == "publish" {
            let channels = self.publish.clone();
            let props = lapin::BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(if persistent { 2 } else { 1 });
            return Arc::new(move |k| {
                let (channel, queue, props) = (
                    channels[k % channels.len()].clone(),
                    queue.clone(),
                    props.clone(),
                );
                Box::pin(async move {
                    tasks::amqp::publish_with_properties(
                        &channel,
                        "",
                        &queue,
                        payload.as_bytes(),
                        props,
                    )
                    .await
                    .expect("confirmed publish");
                })
            });
        }
        let channels = self.get.clone();
        Arc::new(move |k| {
            let (channel, queue) = (channels[k % channels.len()].clone(), queue.clone());
            Box::pin(async move {
                let message = channel
                    .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                    .await
                    .expect("basic.get")
                    .expect("a message");
                channel
                    .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default())
                    .await
                    .expect("basic.ack");
            })
        })
    }

    async fn close(self) {
        let _ = self.conn.close(200, "bench done".into()).await;
    }
}

/// Sends `total` requests at `rate` per second in all, spread over `concurrency` workers;
/// each latency counts from the request's scheduled time (no coordinated omission).
async fn paced(
    concurrency: usize,
    total: usize,
    rate: f64,
    send: Arc<SendOne>,
) -> (Duration, Vec<Duration>) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let send = send.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut k = w;
                while k < total {
                    let due = start + interval * k as u32;
                    tokio::time::sleep_until(due).await;
                    send(k).await;
                    lat.push(due.elapsed());
                    k += concurrency;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    (start.elapsed(), all)
}

fn print_header() {
    println!(
        "{:<12} {:<8} {:>9} {:>12} {:>9} {:>9} {:>9}",
        "target", "op", "requests", "req/s", "p50 ms", "p99 ms", "max ms"
    );
}

/// One line of a table; `note` follows the figures.
fn print_row(r: &Row, note: &str) {
    println!(
        "{:<12} {:<8} {:>9} {:>12.0} {:>9.2} {:>9.2} {:>9.2}{note}",
        r.target,
        r.op,
        r.requests,
        r.throughput,
        ms(r.p50),
        ms(r.p99),
        ms(r.max)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(
    target: &'static str,
    op: &'static str,
    requests: usize,
    (elapsed, mut lat): (Duration, Vec<Duration>),
) -> Row {
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    Row {
        target,
        op,
        requests,
        throughput: requests as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        max: *lat.last().unwrap(),
    }
}

/// Sends `total` requests over `concurrency` workers (tasks of their own); every answer must
/// be 200 (and pass `check`). Returns the wall time and each request's latency.
async fn run(
    client: &Client,
    concurrency: usize,
    total: usize,
    make: &Arc<Maker>,
    check: fn(&Value) -> bool,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, make) = (client.clone(), next.clone(), make.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(total / concurrency + 1);
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let r = make(&client).send().await.expect("request");
                    let status = r.status();
                    let body = r.bytes().await.expect("body");
                    lat.push(t.elapsed());
                    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                    let value: Value = serde_json::from_slice(&body).expect("JSON answer");
                    assert!(check(&value), "unexpected answer {value}");
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    (start.elapsed(), all)
}
