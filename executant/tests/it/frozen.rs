//! A broker node that stops answering without closing the connection (a frozen node, a
//! half-open TCP connection): a TCP proxy on loopback between the executant and RabbitMQ
//! stops forwarding and keeps its sockets open. The executant must give the frozen
//! connection up within its bound on broker operations (`tasks::amqp::OP_TIMEOUT`), finish
//! the project on the other node, and stop within a bounded time even while frozen.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasks::model::ExecSpec;
use tasks::{Project, TaskSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::*;

/// How long stopping may take while the broker does not answer: the consumers' cancel and
/// the closes, each bounded by 10 s (the closes at the same time), and some slack.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A TCP proxy to the broker that can be frozen: it then forwards nothing, in either
/// direction, and keeps every socket open.
struct Proxy {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, _) = watch::channel(false);
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let frozen = frozen.clone();
            let accepted = accepted.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    // A connection opened while frozen is accepted but gets no answer.
                    let Ok(broker) = TcpStream::connect(&target).await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (cr, cw) = client.into_split();
                    let (br, bw) = broker.into_split();
                    tokio::spawn(pump(cr, bw, frozen.subscribe()));
                    tokio::spawn(pump(br, cw, frozen.subscribe()));
                }
            }
        });
        Proxy {
            addr,
            frozen,
            accepted,
            task,
        }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` while not frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let _ = frozen.wait_for(|f| !*f).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let _ = frozen.wait_for(|f| !*f).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its host and port replaced by `addr`.
fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (creds, rest) = rest.rsplit_once('@').unwrap();
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    format!("{scheme}://{creds}@{addr}{path}")
}

/// The host and port of `url`.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let host = rest.split('/').next().unwrap();
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5672")
    }
}

/// Waits until the executant holds at least its consume and publish connections through
/// the proxy.
async fn wait_for_connections(proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.accepted.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the executant never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_node_is_given_up_and_the_project_finishes() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // A heartbeat of 60 s (a cluster's URLs otherwise get 5 s): the heartbeat would notice
    // the freeze only after 120 s, so what gives the node up is the executant's own bound.
    let direct = format!("{}?heartbeat=60", own_vhost("executant-frozen-node"));
    let proxy = Proxy::start(host_port(&direct)).await;
    let id = unique_project("exec-frozen");
    let count = 6u32;
    let specs: Vec<_> = (0..count)
        .map(|i| {
            TaskSpec::Exec(ExecSpec {
                image: "debian:bookworm-slim".into(),
                command: vec!["sh".into(), "-c".into(), format!("sleep 2; echo task-{i}")],
                script: None,
            })
        })
        .collect();
    let project = Project::from_specs(&id, specs).unwrap();
    // The proxy first: the executant starts there, and must move to the broker itself.
    let nodes = format!("{},{direct}", via(&direct, proxy.addr));
    // The test talks to the broker itself, declaring the results queue for two nodes.
    let test_nodes = format!("{direct},{}", via(&direct, proxy.addr));
    publish_tasks_to(&test_nodes, &id, &project.tasks.to_vec()).await;
    let mut config = test_config();
    config.amqp_url = nodes;
    let executant = InProcess::start(config);
    wait_for_connections(&proxy).await;
    // The first two tasks are running: their results, acks and the next deliveries meet
    // a node that no longer answers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.freeze(true);
    let frozen_at = Instant::now();
    // The two deliveries held on the frozen connection stay with the broker until it
    // drops that connection; the other four are run from the other node meanwhile.
    let (first, _) = collect_results_from(&test_nodes, &id, count - 2, Duration::from_secs(45))
        .await
        .unwrap_or_else(|e| panic!("while frozen: {e}"));
    let moved_after = frozen_at.elapsed();
    eprintln!(
        "{} results while frozen, the last {:.1} s after the freeze",
        first.len(),
        moved_after.as_secs_f64()
    );
    // Forwarding again: the broker learns that the old connection is gone and returns
    // its deliveries.
    proxy.freeze(false);
    let (rest, duplicates) = collect_results_from(&test_nodes, &id, 2, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("after the freeze: {e}"));
    let mut indices: Vec<u32> = first.keys().chain(rest.keys()).copied().collect();
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(
        indices,
        (0..count).collect::<Vec<_>>(),
        "{first:?} {rest:?}"
    );
    eprintln!(
        "all {count} results {:.1} s after the freeze ({duplicates} duplicates)",
        frozen_at.elapsed().as_secs_f64()
    );
    let stopping = Instant::now();
    executant.stop().await;
    assert!(
        stopping.elapsed() < STOP_WITHIN,
        "stopping took {:?}",
        stopping.elapsed()
    );
    drop_results_at(&direct, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_while_the_broker_is_frozen_returns_within_the_bound() {
    let direct = format!("{}?heartbeat=60", own_vhost("executant-frozen-stop"));
    let proxy = Proxy::start(host_port(&direct)).await;
    let mut config = test_config();
    config.amqp_url = via(&direct, proxy.addr);
    let executant = InProcess::start(config);
    wait_for_connections(&proxy).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.freeze(true);
    let stopping = Instant::now();
    executant.stop().await;
    eprintln!(
        "stopped {:.1} s after being asked to, the broker frozen",
        stopping.elapsed().as_secs_f64()
    );
    assert!(
        stopping.elapsed() < STOP_WITHIN,
        "stopping took {:?}",
        stopping.elapsed()
    );
    proxy.freeze(false);
}
