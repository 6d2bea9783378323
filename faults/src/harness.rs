//! Processes and checks the scenarios share: executants and clients as real processes (so
//! they can be killed with SIGKILL), Docker and RabbitMQ commands, and the verification of a
//! project's record in git.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tasks::layout;

/// The built binaries of the workspace and the broker URL.
#[derive(Debug, Clone)]
pub struct Env {
    /// `executant`.
    pub executant: PathBuf,
    /// `commanditaire`.
    pub client: PathBuf,
    /// The broker.
    pub amqp_url: String,
    /// Executants run with their own defaults (reused worker containers, the prefetch sized
    /// to the work, `--concurrency` = the cores) instead of the pin of [`pinned`]: set by
    /// `FAULTS_DEFAULTS=1` or the binary's `--defaults`.
    pub defaults: bool,
}

impl Env {
    /// Finds the binaries next to the running executable's target folder
    /// (`target/<profile>/`), or in `FAULTS_BIN_DIR`.
    pub fn locate() -> Env {
        let dir = std::env::var_os("FAULTS_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let exe = std::env::current_exe().expect("current exe");
                let parent = exe.parent().expect("exe folder").to_path_buf();
                if parent.ends_with("deps") {
                    parent.parent().expect("profile folder").to_path_buf()
                } else {
                    parent
                }
            });
        let executant = dir.join("executant");
        let client = dir.join("commanditaire");
        for bin in [&executant, &client] {
            assert!(
                bin.exists(),
                "{} is missing: build the workspace first (cargo build --workspace)",
                bin.display()
            );
        }
        Env {
            executant,
            client,
            amqp_url: std::env::var("AMQP_URL")
                .unwrap_or_else(|_| tasks::amqp::DEFAULT_AMQP_URL.to_string()),
            defaults: std::env::var("FAULTS_DEFAULTS").is_ok_and(|v| v == "1"),
        }
    }

    /// This environment with the executants' defaults (`true`) or the pin (`false`).
    pub fn with_defaults(&self, defaults: bool) -> Env {
        Env {
            defaults,
            ..self.clone()
        }
    }

    /// The virtual host of [`Env::amqp_url`] (`/` when the URL names none).
    pub fn vhost(&self) -> String {
        let after_host = self.amqp_url.split_once("://").map_or("", |(_, rest)| rest);
        match after_host.split_once('/') {
            Some((_, v)) if !v.is_empty() => v.replace("%2f", "/").replace("%2F", "/"),
            _ => "/".to_string(),
        }
    }

    /// Starts an executant process with `args` (its log goes to `log`).
    pub fn executant(&self, name: &str, args: &[&str], log: &Path) -> Proc {
        self.executant_on(None, name, args, log)
    }

    /// [`Env::executant`] on the Docker engine at `docker_host` (the host's when `None`).
    pub fn executant_on(
        &self,
        docker_host: Option<&str>,
        name: &str,
        args: &[&str],
        log: &Path,
    ) -> Proc {
        let log = std::fs::File::create(log).expect("executant log");
        let mut command = Command::new(&self.executant);
        if let Some(host) = docker_host {
            command.env("DOCKER_HOST", host);
        }
        command.args(["--name", name]);
        if !self.defaults {
            // A container per task, two at a time, as when the scenarios' timings were set
            // (faults after a fraction of the project); the defaults (reused workers, the
            // prefetch sized to the work) finish a CI-size project in moments, so they run
            // a heavier board ([`crate::Size::ci_defaults`]). A scenario's own `--reuse`
            // or `--prefetch` replaces the pin (a flag given twice is refused).
            command.args(["--concurrency", "2"]).args(pinned(args));
        }
        let child = command
            .args(args)
            .env("AMQP_URL", &self.amqp_url)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting executant");
        Proc { child: Some(child) }
    }

    /// A client command on `workspace`, printing JSON.
    pub fn client(&self, workspace: &Path) -> Command {
        let mut cmd = Command::new(&self.client);
        cmd.env("AMQP_URL", &self.amqp_url)
            .arg("--workspace")
            .arg(workspace)
            .arg("--json");
        cmd
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Wraps a spawned child.
    pub fn new(child: Child) -> Proc {
        Proc { child: Some(child) }
    }

    /// No process (a placeholder for one that was taken away).
    pub fn none() -> Proc {
        Proc { child: None }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills it with SIGKILL, without warning, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `grace` for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
        }
    }

    /// Waits up to `bound` for it to exit and returns its output (stdout must have been
    /// piped); `None` when it did not finish in time (it is then killed).
    pub fn output(mut self, bound: Duration) -> Option<Output> {
        let child = self.child.take().expect("running");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(bound) {
            Ok(out) => Some(out.expect("client output")),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                None
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Parses the client's JSON output (its last line); `Null` when it printed none (the caller
/// reports its exit code and standard error).
pub fn client_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or(serde_json::Value::Null)
}

/// The OEIS A000170 count for `n`.
pub fn oeis(n: u8) -> u64 {
    tasks::nqueens::known_count(n).expect("N in the OEIS table")
}

/// The ids of the running task containers started by executants whose name begins with
/// `owner` (a scenario's project id: its executants are named after it). Other executants
/// on the same engine (another test, another user) are none of a scenario's business: it
/// neither kills their containers nor counts them as its leftovers.
pub fn task_containers(owner: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "--filter",
            "label=taskplatform.role=task",
            "--format",
            "{{.ID}}\t{{.Label \"taskplatform.executant\"}}",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, executant)| executant.starts_with(owner))
        .map(|(id, _)| id.to_string())
        .collect()
}

/// Kills a container as an outsider would (`docker kill`); returns whether it was running.
pub fn docker_kill(id: &str) -> bool {
    Command::new("docker")
        .args(["kill", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Restarts the RabbitMQ node (the whole Erlang VM) and waits until it serves again.
pub fn restart_broker() {
    let ok = Command::new("rabbitmqctl")
        .args(["-q", "shutdown"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "rabbitmqctl shutdown failed");
    let started = Command::new("rabbitmq-server")
        .arg("-detached")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(started, "rabbitmq-server -detached failed");
    wait_for_broker();
}

/// Closes, as an operator or a missed heartbeat would, every broker connection that its
/// client named `name` (`rabbitmqctl close_connection`); returns how many it closed.
pub fn close_connections(name: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_connections",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl list_connections");
    let listing = String::from_utf8_lossy(&out.stdout);
    let wanted = format!("{{\"connection_name\",\"{name}\"}}");
    let pids: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, props)| props.contains(&wanted))
        .map(|(pid, _)| pid)
        .collect();
    pids.into_iter()
        .filter(|pid| {
            Command::new("rabbitmqctl")
                .args(["-q", "close_connection", pid, "fault injected"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .count()
}

/// The consumers of a queue of `vhost`, as the broker counts them.
pub fn queue_consumers(vhost: &str, queue: &str) -> Option<u64> {
    let out = Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "-p",
            vhost,
            "--no-table-headers",
            "name",
            "consumers",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(n, _)| *n == queue)
        .and_then(|(_, c)| c.trim().parse().ok())
}

/// Sets the broker's `consumer_timeout` (milliseconds) for channels opened from now on, and
/// its channel tick to one second (the timeout is evaluated on that tick, once a minute by
/// default); puts both back when dropped.
pub struct ConsumerTimeout {
    previous: Vec<(&'static str, Option<String>)>,
}

impl ConsumerTimeout {
    /// Lowers (or raises) the timeout to `ms`.
    pub fn set(ms: u64) -> ConsumerTimeout {
        let settings = [("consumer_timeout", ms), ("channel_tick_interval", 1000)];
        let previous = settings
            .iter()
            .map(|(key, _)| {
                let value = eval(&format!("application:get_env(rabbit, {key})."));
                let value = value
                    .trim()
                    .strip_prefix("{ok,")
                    .and_then(|v| v.strip_suffix('}'))
                    .map(str::to_string);
                (*key, value)
            })
            .collect();
        for (key, value) in settings {
            eval(&format!("application:set_env(rabbit, {key}, {value})."));
        }
        ConsumerTimeout { previous }
    }
}

impl Drop for ConsumerTimeout {
    fn drop(&mut self) {
        for (key, value) in &self.previous {
            match value {
                Some(v) => eval(&format!("application:set_env(rabbit, {key}, {v}).")),
                None => eval(&format!("application:unset_env(rabbit, {key}).")),
            };
        }
    }
}

/// Evaluates an Erlang expression on the broker node; returns what it printed.
fn eval(expr: &str) -> String {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "eval", expr])
        .output()
        .expect("rabbitmqctl eval");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Sends `signal` (`STOP`, `CONT`, ...) to a process.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// Waits until the broker application is up (at most two minutes).
pub fn wait_for_broker() {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let up = Command::new("rabbitmqctl")
            .args(["-q", "await_startup"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if up {
            return;
        }
        assert!(Instant::now() < deadline, "RabbitMQ did not come back");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// The one-line subjects of a repository's history, newest first (empty if none yet).
pub fn git_log(repo: &Path) -> Vec<String> {
    let Ok(repo) = git2::Repository::open(repo) else {
        return vec![];
    };
    let Ok(mut walk) = repo.revwalk() else {
        return vec![];
    };
    if walk.push_head().is_err() {
        return vec![];
    }
    walk.filter_map(|oid| {
        let commit = repo.find_commit(oid.ok()?).ok()?;
        let summary = commit.summary().ok().flatten()?.to_string();
        Some(summary)
    })
    .collect()
}

/// A project's progress at the tracking repository's HEAD: (tasks done, tasks); `None`
/// before its first record.
pub fn progress(workspace: &Path, project: &str) -> Option<(u32, u32)> {
    let repo = git2::Repository::open(workspace.join(layout::TRACKING)).ok()?;
    let tree = repo.head().ok()?.peel_to_tree().ok()?;
    let entry = tree.get_path(Path::new(&layout::progress(project))).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    let p: tasks::progress::Progress = serde_json::from_slice(blob.content()).ok()?;
    Some((p.done, p.tasks))
}

/// What the record of a finished project says.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Tasks in the project.
    pub tasks: usize,
    /// Tasks with no outcome, or an N-queens total that is not the expected one (then every
    /// task counts as lost: the answer is wrong).
    pub lost: usize,
    /// Task indexes recorded more than once in the tracking repository (beyond the one more
    /// outcome that each retry record naming them allows).
    pub duplicated: usize,
    /// Failed tasks with their reasons.
    pub failed: Vec<(u64, String)>,
    /// Tasks whose recorded outcome came from a later attempt than their first
    /// (`provenance.attempt` > 1): a delivery or an attempt of theirs was spent by a fault.
    pub charged: usize,
    /// The highest `provenance.attempt` recorded (0 when none says).
    pub max_attempt: u64,
}

/// Checks a project's record in the workspace: the result in `results`, every recorded
/// outcome in `tracking` (each task index at most once), against `expected` solutions.
pub fn verify(workspace: &Path, project: &str, expected: Option<u64>) -> Verdict {
    let result_path = workspace
        .join(layout::RESULTS)
        .join(layout::result(project));
    // No result (a client that hung or died): every task without a recorded outcome is lost.
    let result: serde_json::Value = std::fs::read(&result_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let recorded_tasks = std::fs::read_to_string(
        workspace
            .join(layout::TASKS)
            .join(layout::task_list(project)),
    )
    .map_or(0, |t| t.lines().count());
    let tasks = result["tasks"]
        .as_u64()
        .map_or(recorded_tasks, |t| t as usize);
    let missing = result["missing"].as_array().map_or(0, Vec::len);
    let mut lost = missing;
    if let Some(expected) = expected {
        if result["solutions"].as_u64() != Some(expected) {
            lost = tasks.max(1);
        }
    }
    let failed = result["failed"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["index"].as_u64().unwrap_or(u64::MAX),
                        f["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut attempts: HashMap<u64, u64> = HashMap::new();
    let folder = workspace
        .join(layout::TRACKING)
        .join(layout::results_folder(project));
    for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a recorded result");
            let index = v["index"].as_u64().expect("index");
            *seen.entry(index).or_default() += 1;
            let attempt = v["provenance"]["attempt"].as_u64().unwrap_or(0);
            let highest = attempts.entry(index).or_default();
            *highest = (*highest).max(attempt);
        }
    }
    // A retry record (`resume --retry-failed`) gives each task it names one more outcome.
    let mut allowed: HashMap<u64, usize> = HashMap::new();
    let retries = workspace.join("tracking").join(project).join("retries");
    for entry in std::fs::read_dir(&retries).into_iter().flatten().flatten() {
        let record: serde_json::Value = std::fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .expect("a retry record");
        for index in record["retry"].as_array().into_iter().flatten() {
            *allowed.entry(index.as_u64().expect("index")).or_default() += 1;
        }
    }
    let duplicated = seen
        .iter()
        .filter(|(index, &c)| c > 1 + allowed.get(index).copied().unwrap_or(0))
        .count();
    if result.is_null() {
        lost = tasks.saturating_sub(seen.len());
    }
    Verdict {
        tasks,
        lost,
        duplicated,
        failed,
        charged: attempts.values().filter(|&&a| a > 1).count(),
        max_attempt: attempts.values().copied().max().unwrap_or(0),
    }
}

/// Counts what a scenario left behind: running task containers of its own executants (named
/// after `owner`, [`task_containers`]), and live processes of the platform's binaries
/// started from this workspace's target folder whose command line names `owner` (its
/// executants' `--name`, its clients' project id): a test running beside the suite from the
/// same target folder is not the scenario's leftover.
pub fn leftovers(env: &Env, owner: &str) -> usize {
    // Executants remove their containers on the way out; give them a moment.
    wait_until(Duration::from_secs(10), || {
        task_containers(owner).is_empty()
    });
    let containers = task_containers(owner).len();
    let mut processes = 0;
    for bin in [&env.executant, &env.client] {
        let out = Command::new("pgrep")
            .args(["-af", &bin.display().to_string()])
            .output()
            .expect("pgrep");
        processes += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(owner))
            .count();
    }
    containers + processes
}

/// The executant flags the scenarios pin (`--reuse 1`, `--prefetch 2`) that `args` does not
/// set itself.
fn pinned(args: &[&str]) -> Vec<&'static str> {
    [("--reuse", "1"), ("--prefetch", "2")]
        .into_iter()
        .filter(|(flag, _)| !args.contains(flag))
        .flat_map(|(flag, value)| [flag, value])
        .collect()
}
