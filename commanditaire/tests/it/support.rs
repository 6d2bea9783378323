//! Helpers: an executant in-process, the client binary, OEIS counts.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

// The safety and cluster binaries include this file too, and use only some of it.
#[allow(unused_imports)]
pub use tasks::test_support::{amqp_url, own_vhost};

/// The OEIS A000170 count for `n`.
pub fn oeis(n: u8) -> u64 {
    tasks::nqueens::known_count(n).expect("N in the OEIS table")
}

/// The folder of the workspaces whose scripts the test executants may fetch.
pub fn script_workspaces() -> std::path::PathBuf {
    let root = std::env::temp_dir().join("commanditaire-test-script-workspaces");
    std::fs::create_dir_all(&root).unwrap();
    root.canonicalize().unwrap()
}

/// A real executant, running in a thread of its own until dropped.
pub struct Executant {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Executant {
    /// Starts one with the project's worker image; `reuse` tasks per worker container.
    ///
    /// Each gets a name of its own: executants in one process would otherwise share the
    /// default name (host-pid), and one stopping would sweep away another's containers.
    pub fn start(reuse: u32) -> Executant {
        Executant::start_on(&amqp_url(), reuse, |_| {})
    }

    /// Starts one on the broker at `url`, its configuration changed by `change` (its name
    /// and worker image, say) before it runs.
    pub fn start_on(
        url: &str,
        reuse: u32,
        change: impl FnOnce(&mut executant::Config),
    ) -> Executant {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut config = executant::Config::new(url.to_string());
        config.name = format!(
            "test-executant-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        config.concurrency = 2;
        config.reuse = reuse;
        // Every test executant allows the same script repositories: they all consume
        // `todo`, and any of them may take a script task of another test.
        config.allowed_script_repos = vec![format!("{}/**", script_workspaces().display())];
        change(&mut config);
        Executant::run(config)
    }

    /// Runs one with `config` exactly as given, until dropped.
    pub fn run(config: executant::Config) -> Executant {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime
                .block_on(executant::run(config, async {
                    let _ = stopped.await;
                }))
                .unwrap();
        });
        Executant {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Executant {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.thread.take().unwrap().join();
    }
}

/// The client binary, with the test broker and `workspace`.
pub fn client(workspace: &Path) -> Command {
    client_at(&amqp_url(), workspace)
}

/// The client binary, with the broker at `url` and `workspace`.
pub fn client_at(url: &str, workspace: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_commanditaire"));
    cmd.env("AMQP_URL", url).arg("--workspace").arg(workspace);
    cmd
}

/// Runs the client with `args` and `--json`; returns the exit code and the JSON it printed.
pub fn client_json(workspace: &Path, args: &[&str]) -> (i32, serde_json::Value, Output) {
    client_json_at(&amqp_url(), workspace, args)
}

/// [`client_json`] on the broker at `url`.
pub fn client_json_at(
    url: &str,
    workspace: &Path,
    args: &[&str],
) -> (i32, serde_json::Value, Output) {
    let output = client_at(url, workspace)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "client printed no JSON ({e}): stdout {stdout:?}, stderr {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), value, output)
}

/// The one-line subjects of a repository's history, newest first (none before the first
/// commit: a client polled mid-start may have created the repository only).
pub fn git_log(repo: &Path) -> Vec<String> {
    // A polling test may look before the client has created the repository.
    let Ok(repo) = git2::Repository::open(repo) else {
        return Vec::new();
    };
    let mut walk = repo.revwalk().unwrap();
    if walk.push_head().is_err() {
        return Vec::new();
    }
    walk.map(|oid| {
        repo.find_commit(oid.unwrap())
            .unwrap()
            .summary()
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string()
    })
    .collect()
}

/// Waits until `cond` holds, polling, or panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The log lines of every executant running in this process, captured from the moment
/// [`capture_executant_logs`] is first called.
#[derive(Clone)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per process) a global subscriber that writes the executants' log lines
/// (target `executant`, debug and up) as the binary writes them, without colours.
pub fn capture_executant_logs() -> CapturedLogs {
    static LOGS: std::sync::OnceLock<CapturedLogs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs(Default::default());
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("executant=debug"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
    .clone()
}

/// A file of a repository at HEAD.
pub fn read_at_head(repo: &Path, path: &str) -> Vec<u8> {
    let repo = git2::Repository::open(repo).unwrap();
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let entry = tree.get_path(Path::new(path)).unwrap();
    let blob = repo.find_blob(entry.id()).unwrap();
    blob.content().to_vec()
}
