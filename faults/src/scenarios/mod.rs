//! The scenarios, one file each, and the fixture they share ([`Run`]). Each runs real
//! projects through the real platform while it injects its faults, then checks the record in
//! git against the exact answer.

mod broker_restart;
mod client_kill;
mod connection_close;
mod consumer_timeout;
mod disk_full;
mod engine_kill;
mod executant_kill;
mod hostile;
mod junk_results;
mod last_delivery_kill;
mod node_kill;
mod poison;
mod two_followers;
mod worker_kill;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{self, Env, Proc};
use crate::{Row, Size};

/// A scenario: runs its projects under its faults and reports a row.
pub type Scenario = fn(&Env, Size) -> Row;

/// Every scenario by name, in order.
pub const ALL: [(&str, Scenario); 15] = [
    ("worker-kill", worker_kill::worker_kills),
    ("executant-kill", executant_kill::executant_kills),
    ("broker-restart", broker_restart::broker_restarts),
    ("client-kill", client_kill::client_kills),
    ("poison", poison::poison),
    ("hostile", hostile::hostile),
    ("disk-full", disk_full::disk_full),
    ("publish-close", connection_close::publish_closed),
    ("consume-close", connection_close::consume_closed),
    ("consumer-timeout", consumer_timeout::consumer_timeout),
    ("two-followers", two_followers::two_followers),
    ("last-delivery-kill", last_delivery_kill::last_delivery_kill),
    ("junk-results", junk_results::junk_results),
    ("engine-kill", engine_kill::engine_kills),
    ("node-kill", node_kill::node_kills),
];

/// Runs the scenarios named in `only` (all of them if it is empty), printing each row as it
/// comes.
pub fn run(env: &Env, size: Size, only: &[&str]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, scenario) in ALL {
        if only.is_empty() || only.contains(&name) {
            eprintln!("fault scenario {name}...");
            let row = scenario(env, size);
            crate::print_table(std::slice::from_ref(&row));
            rows.push(row);
        }
    }
    rows
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{:08x}", (nanos as u32) ^ std::process::id())
}

/// A pseudo-random index below `len` (the clock is random enough to pick a victim).
fn pick(len: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    nanos as usize % len.max(1)
}

/// The fixture of every scenario: a workspace, one executant and one client following an
/// N-queens project, both real processes that a fault may replace.
struct Run<'e> {
    env: &'e Env,
    size: Size,
    start: Instant,
    /// Keeps the temporary folder (workspace and logs) alive.
    _dir: tempfile::TempDir,
    logs: PathBuf,
    ws: PathBuf,
    id: String,
    executant_args: Vec<String>,
    executants: usize,
    executant: Proc,
    /// Executants besides the fixture's own (on other Docker engines), stopped with it.
    others: Vec<Proc>,
    client: Proc,
    problems: Vec<String>,
    /// The most tasks the scenario's faults may charge an attempt (tasks recorded with
    /// `provenance.attempt` > 1); `None`: not checked.
    charge_limit: Option<usize>,
}

impl<'e> Run<'e> {
    /// Starts an executant (with `executant_args`) and a client on a new project; the
    /// workspace is `ws` when given (a mount point), else a temporary folder.
    fn start(
        env: &'e Env,
        size: Size,
        prefix: &str,
        executant_args: &[&str],
        ws: Option<PathBuf>,
    ) -> Run<'e> {
        let mut run = Run::new(env, size, prefix, executant_args, ws);
        run.start_executant();
        let args = run.project_args();
        run.follow(&args.iter().map(String::as_str).collect::<Vec<_>>());
        run
    }

    /// Records and publishes a new project with `--detach`: its tasks wait in `todo`, and
    /// neither an executant nor a client runs yet.
    fn detached(env: &'e Env, size: Size, prefix: &str, executant_args: &[&str]) -> Run<'e> {
        let run = Run::new(env, size, prefix, executant_args, None);
        let mut args = run.project_args();
        args.push("--detach".into());
        let out = spawn_client(
            env,
            &run.ws,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .output(size.bound)
        .expect("publishing a detached project");
        assert!(
            out.status.success(),
            "the detached project was not published: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        run
    }

    fn new(
        env: &'e Env,
        size: Size,
        prefix: &str,
        executant_args: &[&str],
        ws: Option<PathBuf>,
    ) -> Run<'e> {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().to_path_buf();
        let ws = ws.unwrap_or_else(|| dir.path().join("ws"));
        let mut executant_args: Vec<String> =
            executant_args.iter().map(|a| a.to_string()).collect();
        // Scripts of this run's workspace only (every executant of the run, respawned ones
        // too): the executant fetches no script repository it was not told about.
        executant_args.push(format!(
            "--allow-script-repo={}",
            ws.join(tasks::layout::TASKS).display()
        ));
        Run {
            env,
            size,
            start: Instant::now(),
            _dir: dir,
            logs,
            ws,
            id: unique(prefix),
            executant_args,
            executants: 0,
            executant: Proc::none(),
            others: Vec::new(),
            client: Proc::none(),
            problems: Vec::new(),
            charge_limit: None,
        }
    }

    /// The client's arguments for the scenario's N-queens project.
    fn project_args(&self) -> Vec<String> {
        [
            "nqueens",
            &self.size.n.to_string(),
            "--depth",
            &self.size.depth.to_string(),
            "--id",
            &self.id,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Starts a new executant (the previous one, if any, must have been stopped or killed).
    fn start_executant(&mut self) {
        self.executant = spawn_executant(
            self.env,
            &self.logs,
            &self.id,
            self.executants,
            &self.executant_args,
        );
        self.executants += 1;
    }

    /// The name of the current executant (its connections are `executant NAME consume` and
    /// `executant NAME publish`).
    fn executant_name(&self) -> String {
        format!("{}-{}", self.id, self.executants.saturating_sub(1))
    }

    /// Starts the client that the scenario waits for, with `args`.
    fn follow(&mut self, args: &[&str]) {
        self.client = spawn_client(self.env, &self.ws, args);
    }

    /// Waits until every task was published (faults that must not hit publishing start after).
    fn wait_published(&self) {
        let tracking = self.ws.join(tasks::layout::TRACKING);
        harness::wait_until(Duration::from_secs(120), || {
            harness::git_log(&tracking)
                .iter()
                .any(|l| l.contains("tasks published"))
        });
    }

    /// Waits until the project's first results are recorded (at most two minutes): with the executants' defaults, a fault then finds worker
    /// lanes busy and the prefetch grown, not containers still starting. Nothing to wait
    /// for with the pin, whose timings the scenarios were written for.
    fn wait_working(&self) {
        if self.env.defaults {
            self.wait_first_results();
        }
    }

    /// Waits until the project's first results are recorded (at most two minutes), whatever
    /// the executants' flags: proof that an executant is consuming and, while tasks remain,
    /// holds deliveries.
    fn wait_first_results(&self) {
        harness::wait_until(Duration::from_secs(120), || {
            harness::progress(&self.ws, &self.id).is_some_and(|(done, _)| done > 0)
        });
    }

    /// Calls `fault` every `pause` until it has injected `target` faults or the project
    /// ended or the size's bound passed; returns how many it injected (`fault` says whether
    /// it injected one).
    fn inject(
        &mut self,
        target: usize,
        pause: Duration,
        mut fault: impl FnMut(&mut Run) -> bool,
    ) -> usize {
        let mut faults = 0;
        while faults < target && !self.client.exited() && self.start.elapsed() < self.size.bound {
            std::thread::sleep(pause);
            if !self.client.exited() && fault(self) {
                faults += 1;
            }
        }
        faults
    }

    /// Kills the executant with SIGKILL and starts a new one.
    fn replace_executant(&mut self) {
        self.executant.kill9();
        self.start_executant();
    }

    /// Kills the client with SIGKILL and starts `resume`.
    fn replace_client(&mut self) {
        self.client.kill9();
        let id = self.id.clone();
        self.follow(&["resume", &id]);
    }

    /// Waits for the client, stops the executant with SIGTERM, checks the project's record
    /// against OEIS and what was left behind. `judge` reads the client's final JSON and its
    /// standard error, and returns the note and any further problem.
    fn finish(
        mut self,
        scenario: &'static str,
        faults: usize,
        extra: Vec<String>,
        judge: impl FnOnce(&serde_json::Value, &str) -> (String, Vec<String>),
    ) -> Row {
        let client = std::mem::replace(&mut self.client, Proc::none());
        let mut problems = std::mem::take(&mut self.problems);
        problems.extend(extra);
        let (json, note, hung) = match client.output(self.size.bound) {
            Some(out) => {
                let json = harness::client_json(&out);
                let stderr = String::from_utf8_lossy(&out.stderr).to_string();
                let (note, more) = judge(&json, &stderr);
                problems.extend(more);
                if out.status.code() != Some(0) {
                    problems.push(format!(
                        "client exited with {:?}: {}",
                        out.status.code(),
                        stderr.lines().last().unwrap_or_default()
                    ));
                }
                (json, note, 0)
            }
            None => {
                problems.push(format!(
                    "the client did not finish within {:?}",
                    self.size.bound
                ));
                (serde_json::Value::Null, "hung".to_string(), 1)
            }
        };
        for executant in std::iter::once(&mut self.executant).chain(&mut self.others) {
            if !executant.terminate(Duration::from_secs(60)) {
                problems.push("an executant did not stop cleanly on SIGTERM".into());
            }
        }
        let verdict = harness::verify(&self.ws, &self.id, Some(harness::oeis(self.size.n)));
        if let Some(limit) = self.charge_limit {
            if verdict.charged > limit {
                problems.push(format!(
                    "{} tasks were charged an attempt, more than the {limit} the faults \
                     may charge",
                    verdict.charged
                ));
            }
        }
        if !verdict.failed.is_empty() {
            problems.push(format!(
                "{} tasks failed: {:?}",
                verdict.failed.len(),
                verdict.failed.first()
            ));
        }
        Row {
            scenario,
            tasks: verdict.tasks,
            faults,
            lost: verdict.lost + verdict.failed.len(),
            duplicated: verdict.duplicated,
            dups_ignored: json["duplicate_results"].as_u64().unwrap_or(0) as usize,
            hung,
            wall: self.start.elapsed(),
            leftovers: harness::leftovers(self.env, &self.id),
            note: format!(
                "{note}; {} tasks charged an attempt (highest attempt {}); solutions {}",
                verdict.charged, verdict.max_attempt, json["solutions"]
            ),
            problems,
        }
    }
}

fn spawn_executant(env: &Env, logs: &Path, id: &str, n: usize, args: &[String]) -> Proc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.executant(
        &format!("{id}-{n}"),
        &args,
        &logs.join(format!("executant-{n}.log")),
    )
}

fn spawn_client(env: &Env, ws: &Path, args: &[&str]) -> Proc {
    let child = env
        .client(ws)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the client");
    Proc::new(child)
}
