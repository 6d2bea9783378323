//! A 3-node cluster of the tests' own, through `scripts/rabbitmq-cluster.sh`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many nodes.
pub const NODES: usize = 3;

/// The tests share the script's ports: one cluster at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A running cluster, stopped when dropped (its paused nodes resumed first).
pub struct Cluster {
    /// The comma-separated node URLs the script printed.
    pub urls: String,
    _serial: MutexGuard<'static, ()>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-cluster.sh")
}

fn nodes_dir() -> PathBuf {
    std::env::var_os("RABBITMQ_NODES_DIR")
        .map_or_else(|| PathBuf::from("/tmp/rabbitmq-nodes"), PathBuf::from)
}

/// Runs the script with `args`; its stdout, or a panic with its stderr.
fn run(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rabbitmq-cluster.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Cluster {
    /// Starts a fresh 3-node cluster.
    pub fn start() -> Cluster {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        // The script keeps a running cluster of exactly these nodes (started again after a
        // test's kill, it is whole) and replaces anything else.
        let urls = run(&["start", &NODES.to_string()]).trim().to_string();
        assert_eq!(urls.split(',').count(), NODES, "{urls}");
        Cluster {
            urls,
            _serial: serial,
        }
    }

    /// Node `k`'s OS pid (1-based).
    pub fn pid(&self, k: usize) -> i32 {
        let file = nodes_dir().join(format!("cluster-{k}/rabbitmq.pid"));
        std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to node `k`'s VM.
    pub fn signal(&self, k: usize, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(k).to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} node {k}");
    }

    /// Starts node `k` again after a kill.
    pub fn restart(&self, k: usize) {
        run(&["start-node", &k.to_string()]);
    }

    /// The node (1-based) leading quorum queue `queue`, as node `asked` sees it; `None`
    /// while it has none (or `asked` does not answer).
    pub fn leader(&self, queue: &str, asked: usize) -> Option<usize> {
        let out = Command::new("bash")
            .arg(script())
            .args([
                "ctl",
                &asked.to_string(),
                "list_queues",
                "-q",
                "--no-table-headers",
            ])
            .args(["name", "leader"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().find_map(|line| {
            let mut cols = line.split_whitespace();
            (cols.next()? == queue).then_some(())?;
            let node = cols.next()?;
            node.strip_prefix("cluster-")?
                .split('@')
                .next()?
                .parse()
                .ok()
        })
    }

    /// Waits until a node other than `old` leads `queue`, asking node `asked`; the time it
    /// took (the election, as seen from outside).
    pub fn wait_new_leader(&self, queue: &str, old: usize, asked: usize) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(leader) = self.leader(queue, asked) {
                if leader != old {
                    return start.elapsed();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no new leader of {queue} within 120 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for k in 1..=NODES {
            let pid = nodes_dir().join(format!("cluster-{k}/rabbitmq.pid"));
            if let Ok(pid) = std::fs::read_to_string(pid) {
                let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
            }
        }
        let _ = Command::new("bash").arg(script()).arg("stop").output();
    }
}
