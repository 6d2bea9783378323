//! A broker given as several node URLs (a RabbitMQ cluster), and failing over between them.
//!
//! `AMQP_URL` (or `--amqp-url`, repeatable) may list node URLs separated by commas. A
//! connection is made to the first reachable node, starting with the node that worked last;
//! when a connection's node is lost ([`Nodes::lost`]), the next attempt starts with the node
//! after it, and the log says which node was lost and which one took over (passwords
//! redacted).
//!
//! One URL is a single node and is connected to exactly as before this module existed: no
//! connect timeout and the heartbeat the URL asks for (the broker's, 60 s, by default). With
//! several nodes, each attempt is bounded by [`NODE_CONNECT_TIMEOUT`] (a node stopped with
//! SIGSTOP accepts TCP connections and never answers), and a URL that names no heartbeat
//! gets [`CLUSTER_HEARTBEAT_SECS`], so that a silent node is given up within seconds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lapin::Connection;

use super::{connect, redact_url, BrokerError};
use crate::backoff::Backoff;

/// How long one connection attempt to one node of a cluster may take.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The heartbeat (seconds) asked for on a cluster's node URLs that name none: a connection
/// to a node that stopped answering is closed after two missed heartbeats (10 s).
pub const CLUSTER_HEARTBEAT_SECS: u16 = 5;

/// The nodes of one broker (one URL, or a cluster's), and which one to try first.
#[derive(Debug)]
pub struct Nodes {
    urls: Vec<String>,
    /// The node tried first by the next connection attempt.
    preferred: AtomicUsize,
    /// The node most recently lost, until another one takes over.
    lost: Mutex<Option<usize>>,
}

/// A connection and the node (its index in the list) it was made to.
#[derive(Debug)]
pub struct Link {
    /// The connection.
    pub connection: Connection,
    /// The node it is connected to (see [`Nodes::shown`]).
    pub node: usize,
}

impl Nodes {
    /// The nodes of `list` (URLs separated by commas, blanks around them ignored). An
    /// empty list stays one (empty) URL, which fails to connect with the usual error.
    pub fn parse(list: &str) -> Nodes {
        let mut urls: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            urls.push(list.trim().to_string());
        }
        if urls.len() > 1 {
            for url in &mut urls {
                *url = with_default_heartbeat(url);
            }
        }
        Nodes {
            urls,
            preferred: AtomicUsize::new(0),
            lost: Mutex::new(None),
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Always false: a list holds at least one URL.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Whether the broker is a cluster (several node URLs): its queues are replicated.
    pub fn is_cluster(&self) -> bool {
        self.urls.len() > 1
    }

    /// Node `node`'s URL, password hidden, for logs.
    pub fn shown(&self, node: usize) -> String {
        self.urls
            .get(node)
            .map_or_else(|| format!("node {node}"), |u| redact_url(u))
    }

    /// Says that the connection to `node` was lost: the next attempt starts with the node
    /// after it (the lost one is tried last).
    pub fn lost(&self, node: usize) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if *lost != Some(node) {
            tracing::warn!(
                node = %self.shown(node),
                nodes = self.urls.len(),
                "lost the connection to broker node {}",
                self.shown(node)
            );
        }
        *lost = Some(node);
        let _ = self.preferred.compare_exchange(
            node,
            (node + 1) % self.urls.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// One pass over the nodes, starting with the preferred one: the first that accepts a
    /// connection, or the last error.
    pub async fn connect(&self, name: &str) -> Result<Link, BrokerError> {
        let start = self.preferred.load(Ordering::Relaxed) % self.urls.len();
        let mut last = None;
        for step in 0..self.urls.len() {
            let node = (start + step) % self.urls.len();
            match self.connect_node(node, name).await {
                Ok(connection) => {
                    self.connected(node);
                    return Ok(Link { connection, node });
                }
                Err(e) => {
                    if self.is_cluster() {
                        tracing::debug!(node = %self.shown(node), error = %e, "broker node unreachable");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("a list holds at least one URL"))
    }

    /// [`Nodes::connect`] again and again, with exponential backoff (0.2 s doubling to 5 s)
    /// between passes, until `deadline` has passed; `None` retries forever.
    pub async fn connect_with_backoff(
        &self,
        name: &str,
        deadline: Option<Duration>,
    ) -> Result<Link, BrokerError> {
        let start = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match self.connect(name).await {
                Ok(link) => return Ok(link),
                Err(e) => {
                    let delay = backoff.next_delay();
                    if deadline.is_some_and(|d| start.elapsed() + delay > d) {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker unreachable");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn connect_node(&self, node: usize, name: &str) -> Result<Connection, BrokerError> {
        let url = &self.urls[node];
        if !self.is_cluster() {
            return connect(url, name).await;
        }
        match tokio::time::timeout(NODE_CONNECT_TIMEOUT, connect(url, name)).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::Connect {
                url: redact_url(url),
                source: lapin::Error::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {NODE_CONNECT_TIMEOUT:?}"),
                )),
            }),
        }
    }

    /// Remembers `node` as the one to try first, and says so if it took over from a node
    /// that was lost.
    fn connected(&self, node: usize) {
        self.preferred.store(node, Ordering::Relaxed);
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gone) = lost.take() {
            tracing::info!(
                node = %self.shown(node),
                lost = %self.shown(gone),
                "broker node {} took over from {}",
                self.shown(node),
                self.shown(gone)
            );
        }
    }
}

/// `url` with `heartbeat=CLUSTER_HEARTBEAT_SECS` added to its query, unless it names one.
fn with_default_heartbeat(url: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q);
    if query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("heartbeat="))) {
        return url.to_string();
    }
    let sep = if query.is_some() { '&' } else { '?' };
    format!("{url}{sep}heartbeat={CLUSTER_HEARTBEAT_SECS}")
}

/// The broker URL list given as a repeatable flag or a comma-separated variable: the
/// values joined with commas (`--amqp-url A --amqp-url B` is `A,B`); `None` when none.
pub fn join_urls(values: &[String]) -> Option<String> {
    (!values.is_empty()).then(|| values.join(","))
}

#[cfg(test)]
mod tests {
    use super::{join_urls, Nodes};

    #[test]
    fn one_url_is_kept_as_it_is() {
        let nodes = Nodes::parse("amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(nodes.len(), 1);
        assert!(!nodes.is_cluster());
        assert_eq!(nodes.urls[0], "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(nodes.shown(0), "amqp://***@127.0.0.1:5672/%2f");
    }

    #[test]
    fn several_urls_get_a_short_heartbeat_unless_they_name_one() {
        let nodes = Nodes::parse(
            " amqp://u:p@a:1/%2f , amqp://u:p@b:2/v?heartbeat=30,,amqp://c:3/?frame_max=8192",
        );
        assert!(nodes.is_cluster());
        assert_eq!(
            nodes.urls,
            [
                "amqp://u:p@a:1/%2f?heartbeat=5",
                "amqp://u:p@b:2/v?heartbeat=30",
                "amqp://c:3/?frame_max=8192&heartbeat=5"
            ]
        );
        assert_eq!(nodes.shown(1), "amqp://***@b:2/v?heartbeat=30");
    }

    #[test]
    fn after_a_loss_the_next_node_is_tried_first() {
        let nodes = Nodes::parse("amqp://a,amqp://b,amqp://c");
        nodes.connected(0);
        nodes.lost(0);
        assert_eq!(
            nodes.preferred.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // A second connection that was on the lost node does not skip the next one.
        nodes.lost(0);
        assert_eq!(
            nodes.preferred.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        nodes.connected(1);
        nodes.lost(2);
        assert_eq!(
            nodes.preferred.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        nodes.lost(1);
        assert_eq!(
            nodes.preferred.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn repeated_flags_join_into_a_list() {
        assert_eq!(join_urls(&[]), None);
        assert_eq!(
            join_urls(&["amqp://a".into(), "amqp://b".into()]).as_deref(),
            Some("amqp://a,amqp://b")
        );
    }
}
