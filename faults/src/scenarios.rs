//! The seven scenarios. Each runs real projects through the real platform while it injects
//! its faults, then checks the record in git against the exact answer.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tasks::amqp;

use crate::harness::{self, Env, Proc};
use crate::{Row, Size};

/// A scenario: runs its projects under its faults and reports a row.
pub type Scenario = fn(&Env, Size) -> Row;

/// Every scenario by name, in order.
pub const ALL: [(&str, Scenario); 7] = [
    ("worker-kill", worker_kills),
    ("executant-kill", executant_kills),
    ("broker-restart", broker_restarts),
    ("client-kill", client_kills),
    ("poison", poison),
    ("hostile", hostile),
    ("disk-full", disk_full),
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

/// Time a whole project may take, even with faults.
const PROJECT_TIMEOUT: Duration = Duration::from_secs(1800);

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
    client: Proc,
    problems: Vec<String>,
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
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().to_path_buf();
        let ws = ws.unwrap_or_else(|| dir.path().join("ws"));
        let id = unique(prefix);
        let mut executant_args: Vec<String> =
            executant_args.iter().map(|a| a.to_string()).collect();
        // Scripts of this run's workspace only (every executant of the run, respawned ones
        // too): the executant fetches no script repository it was not told about.
        executant_args.push(format!(
            "--allow-script-repo={}",
            ws.join("tasks").display()
        ));
        let executant = spawn_executant(env, &logs, &id, 0, &executant_args);
        let client = spawn_client(
            env,
            &ws,
            &[
                "nqueens",
                &size.n.to_string(),
                "--depth",
                &size.depth.to_string(),
                "--id",
                &id,
            ],
        );
        Run {
            env,
            size,
            start: Instant::now(),
            _dir: dir,
            logs,
            ws,
            id,
            executant_args,
            executants: 1,
            executant,
            client,
            problems: Vec::new(),
        }
    }

    /// Waits until every task was published (faults that must not hit publishing start after).
    fn wait_published(&self) {
        let tracking = self.ws.join("tracking");
        harness::wait_until(Duration::from_secs(120), || {
            harness::git_log(&tracking)
                .iter()
                .any(|l| l.contains("tasks published"))
        });
    }

    /// Calls `fault` every `pause` until it has injected `target` faults or the project
    /// ended; returns how many it injected (`fault` says whether it injected one).
    fn inject(
        &mut self,
        target: usize,
        pause: Duration,
        mut fault: impl FnMut(&mut Run) -> bool,
    ) -> usize {
        let mut faults = 0;
        while faults < target && !self.client.exited() {
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
        self.executant = spawn_executant(
            self.env,
            &self.logs,
            &self.id,
            self.executants,
            &self.executant_args,
        );
        self.executants += 1;
    }

    /// Kills the client with SIGKILL and starts `resume`.
    fn replace_client(&mut self) {
        self.client.kill9();
        self.client = spawn_client(self.env, &self.ws, &["resume", &self.id]);
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
        let out = client.output(PROJECT_TIMEOUT);
        let json = harness::client_json(&out);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let mut problems = std::mem::take(&mut self.problems);
        problems.extend(extra);
        let (note, more) = judge(&json, &stderr);
        problems.extend(more);
        if out.status.code() != Some(0) {
            problems.push(format!(
                "client exited with {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            ));
        }
        if !self.executant.terminate(Duration::from_secs(60)) {
            problems.push("the executant did not stop cleanly on SIGTERM".into());
        }
        let verdict = harness::verify(&self.ws, &self.id, Some(harness::oeis(self.size.n)));
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
            wall: self.start.elapsed(),
            leftovers: harness::leftovers(self.env),
            note: format!("{note}; solutions {}", json["solutions"]),
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

/// Scenario 1: worker containers killed at random with `docker kill` during the project.
pub fn worker_kills(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-workers", &[], None);
    let faults = run.inject(size.faults, Duration::from_millis(700), |run| {
        // A worker container runs for a fraction of a second: watch closely for one.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !run.client.exited() {
            let running = harness::task_containers();
            if !running.is_empty() && harness::docker_kill(&running[pick(running.len())]) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });
    run.finish("worker-kill", faults, vec![], |_, _| {
        (format!("{faults} worker containers killed"), vec![])
    })
}

/// Scenario 2: the executant killed with SIGKILL, and a new one started, again and again.
pub fn executant_kills(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-executant", &[], None);
    let faults = run.inject(size.faults, Duration::from_millis(2500), |run| {
        run.replace_executant();
        true
    });
    run.finish("executant-kill", faults, vec![], |_, _| {
        (format!("{faults} executants killed (SIGKILL)"), vec![])
    })
}

/// Scenario 3: the RabbitMQ node restarted mid-project.
pub fn broker_restarts(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-broker", &[], None);
    run.wait_published();
    // A restart takes about ten seconds: in CI two are enough to prove recovery.
    let target = if size.faults >= 10 { size.faults } else { 2 };
    let faults = run.inject(target, Duration::from_millis(1500), |_| {
        harness::restart_broker();
        true
    });
    run.finish("broker-restart", faults, vec![], |_, _| {
        (format!("{faults} broker node restarts"), vec![])
    })
}

/// Scenario 4: the client killed with SIGKILL, then `resume`d, again and again.
pub fn client_kills(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-client", &[], None);
    run.wait_published();
    let faults = run.inject(size.faults, Duration::from_millis(1500), |run| {
        run.replace_client();
        true
    });
    run.finish("client-kill", faults, vec![], |json, _| {
        let republished = json["published"].as_u64();
        let note = format!(
            "{faults} clients killed (SIGKILL) and resumed, republished {}",
            json["published"]
        );
        // A resumed client must publish nothing: every task was published before the kills.
        let problems = if faults > 0 && republished != Some(0) {
            vec![format!(
                "a resumed client republished {} tasks",
                json["published"]
            )]
        } else {
            vec![]
        };
        (note, problems)
    })
}

/// Scenario 5: poison on `todo` beside good tasks: malformed JSON, unknown kinds, oversized
/// messages, images off the allowlist.
pub fn poison(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-poison", &[], None);
    let image_project = format!("{}-img", run.id);
    let rounds = size.faults.div_ceil(4);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (dead_ids, image_tasks) = runtime.block_on(publish_poison(
        &env.amqp_url,
        &run.id,
        &image_project,
        rounds,
    ));
    let faults = dead_ids.len() + image_tasks;
    // The poison sits behind the project's tasks in `todo`: look for it once they are done.
    harness::wait_until(PROJECT_TIMEOUT, || run.client.exited());
    let found = runtime.block_on(check_poison(
        &env.amqp_url,
        &dead_ids,
        &image_project,
        image_tasks,
    ));
    let (dead_lettered, refused) = (found.dead_lettered, found.refused);
    run.finish("poison", faults, found.problems, |_, _| {
        let note = format!(
            "{dead_lettered} dead-lettered with reasons, {refused} refused with a failed result"
        );
        (note, vec![])
    })
}

/// Publishes `rounds` of each poison kind; returns the message ids that must be
/// dead-lettered and the number of image-refusal tasks.
async fn publish_poison(
    url: &str,
    id: &str,
    image_project: &str,
    rounds: usize,
) -> (Vec<String>, usize) {
    let conn = amqp::connect(url, "faults poison").await.unwrap();
    let channel = amqp::confirm_channel(&conn).await.unwrap();
    amqp::declare_todo(&channel).await.unwrap();
    amqp::declare_results(&channel, image_project)
        .await
        .unwrap();
    let oversized = format!(
        r#"{{"schema":1,"project":"{id}","index":0,"kind":"exec","image":"debian:bookworm-slim","command":["{}"]}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let mut dead = Vec::new();
    for r in 0..rounds {
        let bodies: [(&str, Vec<u8>); 3] = [
            ("malformed", b"{ not json at all".to_vec()),
            (
                "unknown-kind",
                format!(r#"{{"schema":1,"project":"{id}","index":0,"kind":"mine-bitcoin"}}"#)
                    .into_bytes(),
            ),
            ("oversized", oversized.clone().into_bytes()),
        ];
        for (kind, body) in bodies {
            let mid = format!("{id}/poison-{kind}-{r}");
            publish(&channel, &mid, &body).await;
            dead.push(mid);
        }
        let task = tasks::Task {
            schema: tasks::SCHEMA_VERSION,
            project: image_project.to_string(),
            index: r as u32,
            timeout_secs: None,
            spec: tasks::TaskSpec::Exec(tasks::model::ExecSpec {
                image: "evil/miner:latest".into(),
                command: vec!["mine".into()],
                script: None,
            }),
        };
        publish(&channel, &task.id(), &task.to_json()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = conn.close(200, "poisoned".into()).await;
    (dead, rounds)
}

async fn publish(channel: &lapin::Channel, id: &str, body: &[u8]) {
    amqp::publish_todo(channel, id, body).await.unwrap();
}

struct PoisonFound {
    dead_lettered: usize,
    refused: usize,
    problems: Vec<String>,
}

/// Finds each poison message in `todo.dead` with its reason, and each refused image task's
/// failed result.
async fn check_poison(
    url: &str,
    dead_ids: &[String],
    image_project: &str,
    image_tasks: usize,
) -> PoisonFound {
    use futures_util::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, QueueDeleteOptions,
    };
    let conn = amqp::connect(url, "faults poison check").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut problems = Vec::new();
    let mut wanted: std::collections::HashSet<&str> = dead_ids.iter().map(String::as_str).collect();
    let mut dead_lettered = 0;
    let mut consumer = channel
        .basic_consume(
            amqp::DEAD_QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wanted.is_empty() && Instant::now() < deadline {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
        else {
            continue;
        };
        let mid = d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        if wanted.remove(mid.as_str()) {
            match amqp::reason_of(&d.properties) {
                Some(reason) if !reason.is_empty() => dead_lettered += 1,
                _ => problems.push(format!("{mid} was dead-lettered without a reason")),
            }
            d.ack(BasicAckOptions::default()).await.unwrap();
        } else {
            d.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    for mid in wanted {
        problems.push(format!("{mid} never reached todo.dead"));
    }
    let results = channel.create_channel_for_results(image_project).await;
    let mut refused = 0;
    let mut consumer = channel
        .basic_consume(
            results.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    while refused < image_tasks {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await
        else {
            problems.push(format!(
                "only {refused} of {image_tasks} image refusals came back"
            ));
            break;
        };
        let r = tasks::TaskResult::from_json(&d.data).unwrap();
        match r.outcome {
            tasks::Outcome::Failed { reason } if reason.contains("allowlist") => refused += 1,
            other => problems.push(format!("an off-allowlist image task gave {other:?}")),
        }
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = channel
        .queue_delete(results.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "checked".into()).await;
    PoisonFound {
        dead_lettered,
        refused,
        problems,
    }
}

trait ResultsQueue {
    async fn create_channel_for_results(&self, project: &str) -> String;
}

impl ResultsQueue for lapin::Channel {
    async fn create_channel_for_results(&self, project: &str) -> String {
        amqp::declare_results(self, project).await.unwrap()
    }
}

/// Scenario 6: hostile tasks beside a good project: a fork bomb, a memory hog, an infinite
/// loop, a network connection attempt, a write to the root filesystem.
pub fn hostile(env: &Env, size: Size) -> Row {
    let run = Run::start(
        env,
        size,
        "faults-hostile",
        &["--task-timeout", "8", "--memory-mib", "128"],
        None,
    );
    let hostile_id = format!("{}-evil", run.id);
    let kinds: [(&str, &str, &[&str]); 5] = [
        // Each call waits for its two children, so the bomb holds the container until the
        // pids limit starves it or the timeout kills it (the classic `:(){ :|:& };:` returns
        // at once and dies with its container: contained, but not reported as a failure).
        (
            "fork bomb",
            "bomb() { bomb | bomb; }; bomb",
            &["timed out", "exited with code"],
        ),
        (
            "memory hog",
            "head -c 1000000000 /dev/zero | tail",
            &["out of memory"],
        ),
        ("infinite loop", "while :; do :; done", &["timed out"]),
        (
            "network",
            "exec 3<>/dev/tcp/127.0.0.1/5672 && echo connected",
            &["exited with code"],
        ),
        (
            "rootfs write",
            "echo evil > /usr/evil && echo written",
            &["Read-only file system"],
        ),
    ];
    let rounds = size.faults.div_ceil(kinds.len());
    let specs: Vec<serde_json::Value> = (0..rounds)
        .flat_map(|_| kinds.iter())
        .map(|(_, script, _)| {
            serde_json::json!({"kind": "exec", "image": "debian:bookworm-slim", "command": ["bash", "-c", script]})
        })
        .collect();
    let file = run.logs.join("hostile.json");
    std::fs::write(&file, serde_json::to_vec(&specs).unwrap()).unwrap();
    let evil = spawn_client(
        env,
        &run.ws,
        &["submit", file.to_str().unwrap(), "--id", &hostile_id],
    );
    let evil_out = evil.output(PROJECT_TIMEOUT);
    let evil_json = harness::client_json(&evil_out);
    let mut problems = Vec::new();
    if evil_out.status.code() != Some(3) {
        problems.push(format!(
            "the hostile project exited {:?}, not 3 (tasks failed)",
            evil_out.status.code()
        ));
    }
    let verdict = harness::verify(&run.ws, &hostile_id, None);
    let mut contained = 0;
    for (index, reason) in &verdict.failed {
        let (name, _, expected) = kinds[*index as usize % kinds.len()];
        if expected.iter().any(|e| reason.contains(e)) {
            contained += 1;
        } else {
            problems.push(format!(
                "{name} (task {index}) failed with an unexpected reason: {reason}"
            ));
        }
    }
    if verdict.failed.len() != specs.len() {
        problems.push(format!(
            "{} of {} hostile tasks did not fail: outputs {}",
            specs.len() - verdict.failed.len(),
            specs.len(),
            evil_json["outputs"]
        ));
    }
    let total = specs.len();
    run.finish("hostile", total, problems, |_, _| {
        let note = format!(
            "{contained}/{total} hostile tasks contained (failed with the expected reason)"
        );
        (note, vec![])
    })
}

/// Scenario 7: the workspace disk (a small tmpfs) filled up during the tracking commits,
/// again and again, then freed.
pub fn disk_full(env: &Env, size: Size) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("ws");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mounting a tmpfs workspace needs root");
    let unmount = Unmount(mount.clone());
    let mut run = Run::start(env, size, "faults-disk", &[], Some(mount.clone()));
    run.wait_published();
    let faults = run.inject(size.faults, Duration::from_millis(800), |run| {
        let filler = run.ws.join("filler");
        fill(&filler);
        std::thread::sleep(Duration::from_millis(2500));
        let _ = std::fs::remove_file(&filler);
        true
    });
    let row = run.finish("disk-full", faults, vec![], |_, stderr| {
        let warned = stderr.contains("cannot record results yet");
        let note = format!(
            "{faults} disk-full episodes ({})",
            if warned {
                "the client said so and kept the results"
            } else {
                "no commit hit them"
            }
        );
        (note, vec![])
    });
    drop(unmount);
    row
}

/// Writes zeros to `path` until the disk is full.
fn fill(path: &Path) {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    let block = vec![0u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    let mut small = [0u8; 4096];
    small.fill(0);
    while f.write_all(&small).is_ok() {}
    let _ = f.flush();
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
