//! Helpers: a real executant in-process or as a process, publishing tasks, collecting results.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use tasks::amqp;
use tasks::{Task, TaskResult};

pub use tasks::test_support::{amqp_url, consume_results, own_vhost, vhost};

/// A project id no other test uses.
pub fn unique_project(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// The executant configuration of the tests: the project's worker image, two tasks at once,
/// and a name of its own. Executants in one process would otherwise share the default name
/// (host-pid), and one stopping would sweep away the containers of another as its own.
pub fn test_config() -> executant::Config {
    let mut config = executant::Config::new(amqp_url());
    config.name = unique_project("test-executant");
    config.concurrency = 2;
    config.shutdown_grace = Duration::from_secs(20);
    // Every test executant allows the same script repositories: they all consume `todo`,
    // and any of them may take a script task of another test.
    config.allowed_script_repos = vec![format!("{}/**", script_repos_root().display())];
    config
}

/// The folder the tests' script repositories are made in (the executants allow it).
pub fn script_repos_root() -> std::path::PathBuf {
    let root = std::env::temp_dir().join("executant-test-script-repos");
    std::fs::create_dir_all(&root).unwrap();
    root.canonicalize().unwrap()
}

/// An executant running in this process until the returned sender is dropped or fired.
pub struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), executant::ExecutantError>>,
}

impl InProcess {
    /// Starts the real executant with `config`.
    pub fn start(config: executant::Config) -> InProcess {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(executant::run(config, async {
            let _ = stopped.await;
        }));
        InProcess {
            stop: Some(stop),
            handle,
        }
    }

    /// Stops it as SIGTERM would and waits for it to return.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.handle.await.unwrap().unwrap();
    }
}

/// Declares the topology and the project's results queue, then publishes every task.
pub async fn publish_tasks(project: &str, tasks: &[Task]) {
    publish_tasks_to(&amqp_url(), project, tasks).await
}

/// [`publish_tasks`] on the broker at `url` (a list of nodes: the first is used, and the
/// results queue is declared as an executant given the same list declares it).
pub async fn publish_tasks_to(url: &str, project: &str, tasks: &[Task]) {
    let first = url.split(',').next().unwrap();
    let conn = amqp::connect(first, "executant tests").await.unwrap();
    let channel = amqp::confirm_channel(&conn).await.unwrap();
    amqp::declare_todo(&channel).await.unwrap();
    amqp::declare_results(&channel, project, &amqp::Nodes::parse(url))
        .await
        .unwrap();
    amqp::publish_tasks(&channel, tasks).await.unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

/// Deletes a project's results queue once a test is done with it (the client deletes it
/// when a project completes; tests stand in for the client).
pub async fn drop_results(project: &str) {
    drop_results_at(&amqp_url(), project).await
}

/// [`drop_results`] on the broker at `url`.
pub async fn drop_results_at(url: &str, project: &str) {
    let conn = amqp::connect(url, "executant tests").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_delete(
            amqp::results_queue(project).as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

/// Publishes raw bytes to `todo`.
pub async fn publish_raw(channel: &lapin::Channel, id: &str, body: &[u8]) {
    amqp::publish_todo(channel, id, body).await.unwrap();
}

/// Collects the results of `project` until every index below `count` has one (duplicates
/// ignored), or panics after `timeout`. Returns them by index, and the number of duplicates.
pub async fn collect_results(
    project: &str,
    count: u32,
    timeout: Duration,
) -> (BTreeMap<u32, TaskResult>, usize) {
    collect_results_from(&amqp_url(), project, count, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`collect_results`] on the broker at `url` (a list of nodes, as for
/// [`publish_tasks_to`]); an error says how many results came.
pub async fn collect_results_from(
    url: &str,
    project: &str,
    count: u32,
    timeout: Duration,
) -> Result<(BTreeMap<u32, TaskResult>, usize), String> {
    let first = url.split(',').next().unwrap();
    let conn = amqp::connect(first, "executant tests").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let (_, mut consumer) = consume_results(&channel, url, project).await;
    let mut results = BTreeMap::new();
    let mut duplicates = 0;
    let deadline = Instant::now() + timeout;
    while (results.len() as u32) < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(next) = tokio::time::timeout(left, consumer.next()).await else {
            return Err(format!(
                "{project}: only {} of {count} results",
                results.len()
            ));
        };
        let delivery = next.expect("results consumer ended").unwrap();
        // One result, or a batch of them.
        for received in tasks::results::parse(&delivery.data).unwrap() {
            let result = received.result;
            assert_eq!(result.project, project);
            if results.insert(result.index, result).is_some() {
                duplicates += 1;
            }
        }
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
    Ok((results, duplicates))
}

/// The broker's pid of every connection named `name` in the tests' vhost.
pub fn connections_named(name: &str) -> Vec<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "--no-table-headers", "list_connections", "-p"])
        .arg(vhost())
        .args(["pid", "client_properties"])
        .output()
        .expect("running rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl list_connections failed");
    // The name a client gives its connection is its `connection_name` client property.
    let wanted = format!("{{\"connection_name\",\"{name}\"}}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, properties)| properties.contains(&wanted))
        .map(|(pid, _)| pid.trim().to_string())
        .collect()
}

/// Closes a connection by its broker pid, as an operator (or a missed heartbeat) would.
pub fn close_connection(pid: &str) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(["-q", "close_connection", pid, "closed by a test"])
        .status()
        .expect("running rabbitmqctl");
    assert!(
        status.success(),
        "rabbitmqctl close_connection {pid} failed"
    );
}

/// Waits until a connection named `name` other than `old` exists; returns its pid.
pub async fn wait_for_connection(name: &str, old: Option<&str>, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let pids = connections_named(name);
        if let Some(pid) = pids.into_iter().find(|p| Some(p.as_str()) != old) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no connection `{name}` (other than {old:?}) within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The message ids in `queue` that start with `prefix` (messages are looked at, not taken).
pub async fn ids_in_queue(queue: &str, prefix: &str) -> Vec<String> {
    let conn = amqp::connect(&amqp_url(), "executant tests").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut ids = Vec::new();
    // Unacked gets return to the queue when the connection closes.
    while let Some(message) = channel
        .basic_get(queue.into(), lapin::options::BasicGetOptions::default())
        .await
        .unwrap()
    {
        let id = message
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        if id.starts_with(prefix) {
            ids.push(id);
        }
    }
    let _ = conn.close(200, "done".into()).await;
    ids
}
