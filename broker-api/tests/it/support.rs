//! What the tests share: the service started in-process against the real broker, unique
//! queue names with cleanup, a TCP proxy that can cut the broker off, a tracking repository.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_api::{Config, Scope, Token, Tokens};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

pub use tasks::test_support::{amqp_url, vhost};

/// A random hex string.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("randomness");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A queue name no other test (or test suite) uses.
pub fn unique_queue(label: &str) -> String {
    format!("bapi-test-{label}-{}", random_hex(6))
}

/// The service, running in-process on 127.0.0.1:0 until dropped.
pub struct Service {
    pub base: String,
    /// The `admin` scope's token (the platform's queues too).
    pub token: String,
    /// The `user` scope's token.
    pub user_token: String,
    /// The `read` scope's token.
    pub read_token: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    cleanup: Cleanup,
}

impl Service {
    /// Starts with the defaults and a random token, and waits until the broker is reachable.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with a configuration adjusted by `adjust`, and waits until ready.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let service = Self::start_unready(adjust).await;
        service.wait_ready(Duration::from_secs(15)).await;
        service
    }

    /// Starts without waiting for the broker, with a random token for each scope.
    pub async fn start_unready(adjust: impl FnOnce(&mut Config)) -> Self {
        let (token, user_token, read_token) = (random_hex(16), random_hex(16), random_hex(16));
        let tokens = Tokens {
            read: Some(Token::new(&read_token).unwrap()),
            user: Some(Token::new(&user_token).unwrap()),
            admin: Some(Token::new(&token).unwrap()),
        };
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), amqp_url(), tokens);
        adjust(&mut config);
        let server = broker_api::bind(&config).await.expect("bind");
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        Service {
            base: format!("http://{addr}"),
            token,
            user_token,
            read_token,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            cleanup: Cleanup::default(),
        }
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        let start = Instant::now();
        loop {
            let status = self
                .client
                .get(self.url("/readyz"))
                .send()
                .await
                .map(|r| r.status());
            if matches!(status, Ok(StatusCode::OK)) {
                return;
            }
            assert!(
                start.elapsed() < within,
                "broker-api not ready after {within:?} (last: {status:?}); is RabbitMQ running at {}?",
                tasks::amqp::redact_url(&amqp_url())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the `admin` token (every route allows it).
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// The token of `scope`.
    pub fn token_of(&self, scope: Scope) -> &str {
        match scope {
            Scope::Read => &self.read_token,
            Scope::User => &self.user_token,
            Scope::Admin => &self.token,
        }
    }

    /// A request with the token of `scope`.
    pub fn req_as(&self, scope: Scope, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(self.token_of(scope))
    }

    /// Creates a queue through the API (deleted at the end of the test).
    pub async fn create_queue(&self, name: &str, kind: &str) {
        self.cleanup.add(name);
        let r = self
            .req(Method::PUT, &format!("/api/queues/{name}"))
            .json(&serde_json::json!({ "type": kind }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }

    /// Deletes `name` at the end of the test, even if the test fails.
    pub fn delete_later(&self, name: &str) {
        self.cleanup.add(name);
    }

    pub async fn publish(&self, queue: &str, payload: &str) -> (StatusCode, Value) {
        let r = self
            .req(Method::POST, &format!("/api/queues/{queue}/publish"))
            .json(&serde_json::json!({ "payload": payload }))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    pub async fn get(&self, queue: &str, ack_mode: &str) -> (StatusCode, Value) {
        let r = self
            .req(Method::POST, &format!("/api/queues/{queue}/get"))
            .json(&serde_json::json!({ "ack_mode": ack_mode }))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.req(Method::GET, path).send().await.unwrap();
        (r.status(), r.json().await.unwrap())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Queues to delete when the test ends, pass or fail (directly over AMQP, on a thread of
/// its own, since `Drop` cannot await).
#[derive(Default, Clone)]
pub struct Cleanup(Arc<Mutex<Vec<String>>>);

impl Cleanup {
    pub fn add(&self, name: &str) {
        let mut names = self.0.lock().unwrap();
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) > 1 {
            return;
        }
        let names = std::mem::take(&mut *self.0.lock().unwrap());
        if names.is_empty() {
            return;
        }
        for name in &names {
            assert!(
                name.starts_with("bapi-test-") || name.starts_with("results.bapi-test-"),
                "the tests only delete their own queues, not {name}"
            );
        }
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(conn) = tasks::amqp::connect(&amqp_url(), "broker-api-tests-cleanup").await
                else {
                    return;
                };
                for name in names {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(name.as_str().into(), Default::default())
                            .await;
                    }
                }
                let _ = conn.close(200, "done".into()).await;
            });
        })
        .join();
    }
}

/// A TCP forwarder to the broker that a test can cut (every connection dropped, new ones
/// refused) and restore: "broker down" for the service, and for nobody else.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let frozen = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (up2, gen2, frozen2) = (up.clone(), generation.clone(), frozen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = gen2.subscribe();
                let frozen = frozen2.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = pump(client_read, server_write, frozen.clone()) => {}
                        _ = pump(server_read, client_write, frozen) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            frozen,
            generation,
        }
    }

    /// Holds every byte in both directions, connections kept open: a broker that stopped
    /// answering (a half-open connection).
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Forwards the held bytes and what follows.
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }

    /// The AMQP URL through this proxy.
    /// The tests' AMQP URL (same credentials and vhost) with the proxy as the host.
    pub fn amqp_url(&self) -> String {
        let url = amqp_url();
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let creds = authority
            .rsplit_once('@')
            .map(|(c, _)| format!("{c}@"))
            .unwrap_or_default();
        format!("{scheme}://{creds}{}/{path}", self.addr)
    }

    /// Drops every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, holding each chunk while `frozen` is set.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The broker's address, from the AMQP URL.
pub fn broker_addr() -> SocketAddr {
    let url = amqp_url();
    let rest = url.split("://").nth(1).unwrap();
    let host = rest.rsplit('@').next().unwrap().split('/').next().unwrap();
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5672")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host)
        .unwrap()
        .next()
        .unwrap()
}

/// Commits `<project>/progress.json` for each project to a tracking repository at `dir`.
pub fn write_tracking(dir: &Path, projects: &[(&str, u32, u32, u32, bool)]) {
    let repo = git2::Repository::init(dir).unwrap();
    let mut index = repo.index().unwrap();
    for (id, tasks_n, done, failed, complete) in projects {
        let progress = tasks::progress::Progress {
            schema: tasks::SCHEMA_VERSION,
            project: id.to_string(),
            spec: tasks::ProjectSpec::Nqueens { n: 8, depth: 2 },
            tasks: *tasks_n,
            done: *done,
            failed: *failed,
            complete: *complete,
            updated: "2026-01-01T00:00:00Z".into(),
        };
        let rel = tasks::layout::progress(id);
        let path = dir.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec_pretty(&progress).unwrap()).unwrap();
        index.add_path(Path::new(&rel)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("test", "test@example.invalid").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, "progress", &tree, &parents)
        .unwrap();
}

/// True in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
        || std::env::var_os("CI_REQUIRE_SERVICES").is_some()
}
