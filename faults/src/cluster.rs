//! A RabbitMQ cluster on this machine, through `scripts/rabbitmq-cluster.sh`: started,
//! asked which node leads a queue, a node signalled (SIGKILL, SIGSTOP, SIGCONT) and started
//! again, stopped when dropped. The fault suite's `node-kill` scenario and the cluster tests
//! (`commanditaire --test cluster`) share it, each on a [`Place`] of its own.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a cluster lives: its nodes are `NAME-K@host` with AMQP on `127.0.0.1:PORT_BASE + K`
/// (the script's `RABBITMQ_CLUSTER_NAME` and `RABBITMQ_CLUSTER_PORT_BASE`), so clusters with
/// distinct places never share a node, a port or a folder.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    /// The node names' prefix (lowercase letters and digits).
    pub name: &'static str,
    /// Node K's AMQP port is this plus K (its distribution port, that plus 20000).
    pub port_base: u16,
}

/// The cluster tests' place: `cluster-1..`, AMQP on 5701...
pub const TESTS: Place = Place {
    name: "cluster",
    port_base: 5700,
};

/// The fault suite's place: `faults-1..`, AMQP on 5731...
pub const FAULTS: Place = Place {
    name: "faults",
    port_base: 5730,
};

/// One cluster at a time per process (a test binary's tests share their place's ports).
static SERIAL: Mutex<()> = Mutex::new(());

/// A running cluster, stopped when dropped (its paused nodes resumed first).
pub struct Cluster {
    place: Place,
    nodes: usize,
    /// The comma-separated node URLs the script printed (node 1 first).
    pub urls: String,
    _serial: MutexGuard<'static, ()>,
}

fn nodes_dir() -> PathBuf {
    std::env::var_os("RABBITMQ_NODES_DIR")
        .map_or_else(|| PathBuf::from("/tmp/rabbitmq-nodes"), PathBuf::from)
}

/// Runs `scripts/rabbitmq-cluster.sh` on the cluster at `place` with `args`.
fn run_script(place: Place, args: &[&str]) -> Result<String, String> {
    let envs = [
        ("RABBITMQ_CLUSTER_NAME", place.name.to_string()),
        ("RABBITMQ_CLUSTER_PORT_BASE", place.port_base.to_string()),
    ];
    crate::script::script("rabbitmq-cluster.sh", args, &envs)
}

impl Cluster {
    /// Starts a fresh cluster of `nodes` nodes at `place` (the script keeps a running one
    /// of exactly these nodes and replaces anything else); panics if it does not form.
    pub fn start(place: Place, nodes: usize) -> Cluster {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let urls = run_script(place, &["start", &nodes.to_string()])
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_string();
        assert_eq!(urls.split(',').count(), nodes, "{urls}");
        Cluster {
            place,
            nodes,
            urls,
            _serial: serial,
        }
    }

    fn script(&self, args: &[&str]) -> Result<String, String> {
        run_script(self.place, args)
    }

    fn pid_file(&self, k: usize) -> PathBuf {
        nodes_dir().join(format!("{}-{k}/rabbitmq.pid", self.place.name))
    }

    /// Node `k`'s OS pid (1-based), while its pid file names one.
    pub fn pid(&self, k: usize) -> Option<i32> {
        std::fs::read_to_string(self.pid_file(k))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to node `k`'s VM; panics if it cannot.
    pub fn signal(&self, k: usize, signal: &str) {
        let pid = self
            .pid(k)
            .unwrap_or_else(|| panic!("node {k} has no pid file"));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} node {k}");
    }

    /// Starts node `k` again after a kill (on its data: it rejoins the others).
    pub fn restart(&self, k: usize) -> Result<(), String> {
        self.script(&["start-node", &k.to_string()]).map(drop)
    }

    /// The node (1-based) leading quorum queue `queue`, as node `asked` sees it; `None`
    /// while it has none (or `asked` does not answer).
    pub fn leader(&self, queue: &str, asked: usize) -> Option<usize> {
        let listing = self
            .script(&[
                "ctl",
                &asked.to_string(),
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "leader",
            ])
            .ok()?;
        let prefix = format!("{}-", self.place.name);
        listing.lines().find_map(|line| {
            let mut cols = line.split_whitespace();
            (cols.next()? == queue).then_some(())?;
            cols.next()?
                .strip_prefix(&prefix)?
                .split('@')
                .next()?
                .parse()
                .ok()
        })
    }

    /// Waits until a node other than `old` leads `queue`, asking node `asked`, at most
    /// `timeout`; the time it took (the election, as seen from outside).
    pub fn wait_new_leader(
        &self,
        queue: &str,
        old: usize,
        asked: usize,
        timeout: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self
                .leader(queue, asked)
                .is_some_and(|leader| leader != old)
            {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for k in 1..=self.nodes {
            if let Some(pid) = self.pid(k) {
                let _ = Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
        }
        let _ = self.script(&["stop", &self.nodes.to_string()]);
    }
}
