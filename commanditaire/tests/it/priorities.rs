//! `--priority` and fair share, through the client binary, a real executant, the real broker
//! (a vhost of each test's own: no other test's executant may take these tasks) and real
//! containers. Each test prints the timeline it measured (`--nocapture` shows it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::options::{QueueDeleteOptions, QueuePurgeOptions};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::support::{self, Executant};

/// The big normal project: 2,045 tasks, far more than the test lets run.
const BIG: [&str; 4] = ["nqueens", "10", "--depth", "6"];
/// The small project: 44 tasks, 92 solutions.
const SMALL: [&str; 4] = ["nqueens", "8", "--depth", "3"];
const SMALL_TASKS: usize = 44;
const CONCURRENCY: u16 = 2;

#[test]
fn a_high_project_submitted_behind_a_large_normal_one_starts_within_2_s_and_finishes_first() {
    let url = support::own_vhost("it-priorities");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let normal = format!("prio-normal-{}", std::process::id());
    let high = format!("prio-high-{}", std::process::id());
    clear(&url, &[&normal, &high]);
    let executant = Executant::start_on(&url, 1, |c| c.concurrency = CONCURRENCY);
    // Every normal task published at once, as a client of old would.
    let normal_client = spawn(
        &url,
        &ws,
        &[&BIG[..], &["--id", &normal, "--max-in-flight", "0"]],
    );
    support::wait_for(
        "the normal project published",
        Duration::from_secs(30),
        || ws.join("tracking").join(&normal).join("published").exists(),
    );
    support::wait_for("normal tasks running", Duration::from_secs(30), || {
        !outcomes(&ws, &normal).is_empty()
    });
    let submitted = now();
    let (code, json, out) = client_on(&url, &ws)
        .arg("--json")
        .args(SMALL)
        .args(["--priority", "high", "--id", &high])
        .output()
        .map(parse)
        .unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json["solutions"], 92);
    std::thread::sleep(Duration::from_secs(1));
    drop(normal_client);
    drop(executant);
    clear(&url, &[&normal, &high]);

    let high_runs = outcomes(&ws, &high);
    let normal_runs = outcomes(&ws, &normal);
    assert_eq!(high_runs.len(), SMALL_TASKS);
    let high_first = first_start(&high_runs);
    let high_last = last_end(&high_runs);
    print_timeline(submitted, &[("high", &high_runs), ("normal", &normal_runs)]);
    eprintln!(
        "high: first task started {:.2} s after its submission, last ended {:.2} s after; \
         normal: {} of 2045 outcomes by then",
        high_first - submitted,
        high_last - submitted,
        normal_runs.iter().filter(|r| r.1 <= high_last).count()
    );
    assert!(
        high_first - submitted <= 2.0,
        "the high project's first task started {:.2} s after its submission",
        high_first - submitted
    );
    // The normal project was far from done when the high one finished, and hardly ran
    // meanwhile: the executant started high deliveries first.
    assert!(normal_runs.iter().filter(|r| r.1 <= high_last).count() < 2045);
    let normal_meanwhile = normal_runs
        .iter()
        .filter(|r| r.0 > high_first && r.0 < high_last)
        .count();
    assert!(
        normal_meanwhile <= 2,
        "{normal_meanwhile} normal tasks started while the high project ran"
    );
}

#[test]
fn two_projects_of_one_priority_submitted_one_after_the_other_both_progress() {
    let url = support::own_vhost("it-fair-share");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let first = format!("fair-first-{}", std::process::id());
    let second = format!("fair-second-{}", std::process::id());
    clear(&url, &[&first, &second]);
    let window = 16;
    let executant = Executant::start_on(&url, 1, |c| c.concurrency = CONCURRENCY);
    let max = window.to_string();
    let first_client = spawn(
        &url,
        &ws,
        &[&BIG[..], &["--id", &first, "--max-in-flight", &max]],
    );
    support::wait_for("the first project running", Duration::from_secs(30), || {
        outcomes(&ws, &first).len() >= 4
    });
    let submitted = now();
    let (code, json, out) = client_on(&url, &ws)
        .args(["--json", "--max-in-flight", &max])
        .args(SMALL)
        .args(["--id", &second])
        .output()
        .map(parse)
        .unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json["solutions"], 92);
    drop(first_client);
    drop(executant);
    clear(&url, &[&first, &second]);

    let first_runs = outcomes(&ws, &first);
    let second_runs = outcomes(&ws, &second);
    assert_eq!(second_runs.len(), SMALL_TASKS);
    let (start, end) = (first_start(&second_runs), last_end(&second_runs));
    print_timeline(
        submitted,
        &[("first", &first_runs), ("second", &second_runs)],
    );
    let first_before = first_runs
        .iter()
        .filter(|r| r.0 > submitted && r.0 < start)
        .count();
    let first_meanwhile = first_runs
        .iter()
        .filter(|r| r.0 >= start && r.0 <= end)
        .count();
    eprintln!(
        "second: first task started {:.2} s after its submission ({first_before} tasks of the \
         first ran before it), last ended {:.2} s after; the first project ran {first_meanwhile} \
         tasks meanwhile",
        start - submitted,
        end - submitted
    );
    // The second waited for one window of the first (and what the executant held), not for
    // the first to drain...
    assert!(
        first_before <= window + 2 * usize::from(CONCURRENCY),
        "{first_before} tasks of the first project started before the second's first"
    );
    // ... and the first went on while the second ran: they took turns.
    assert!(
        first_meanwhile >= SMALL_TASKS / 4,
        "the first project ran only {first_meanwhile} tasks while the second ran"
    );
}

/// The client binary on the broker `url`.
fn client_on(url: &str, ws: &Path) -> Command {
    let mut cmd = support::client(ws);
    cmd.env("AMQP_URL", url);
    cmd
}

/// A client running in the background, killed when dropped (a failing test leaves none).
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the client on `url` with `args` (concatenated) and `--json`, in the background.
fn spawn(url: &str, ws: &Path, args: &[&[&str]]) -> Background {
    let child = client_on(url, ws)
        .arg("--json")
        .args(args.concat())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Background(child)
}

fn parse(output: std::process::Output) -> (i32, serde_json::Value, std::process::Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "client printed no JSON ({e}): stderr {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), json, output)
}

/// Seconds since the epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// When each recorded outcome of `project` started and ended (seconds since the epoch, from
/// its provenance), read from the tracking repository's files; a line being written is
/// skipped.
fn outcomes(ws: &Path, project: &str) -> Vec<(f64, f64)> {
    let dir = ws.join("tracking").join(project).join("results");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let at = |v: &serde_json::Value| {
        let t = OffsetDateTime::parse(v.as_str()?, &Rfc3339).ok()?;
        Some((t.unix_timestamp_nanos() as f64) / 1e9)
    };
    let mut runs = Vec::new();
    for entry in entries {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        for line in text.lines() {
            let Ok(result) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let p = &result["provenance"];
            if let (Some(s), Some(e)) = (at(&p["started"]), at(&p["ended"])) {
                runs.push((s, e));
            }
        }
    }
    runs
}

fn first_start(runs: &[(f64, f64)]) -> f64 {
    runs.iter().map(|r| r.0).fold(f64::INFINITY, f64::min)
}

fn last_end(runs: &[(f64, f64)]) -> f64 {
    runs.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max)
}

/// Prints, every second from `t0`, how many outcomes of each project had ended.
fn print_timeline(t0: f64, projects: &[(&str, &[(f64, f64)])]) {
    let end = projects
        .iter()
        .map(|(_, runs)| last_end(runs))
        .fold(t0, f64::max);
    let header: Vec<_> = projects
        .iter()
        .map(|(name, _)| format!("{name:>8}"))
        .collect();
    eprintln!("t(s) {}", header.join(" "));
    let mut t = 0.0;
    while t0 + t <= end + 1.0 {
        let row: Vec<_> = projects
            .iter()
            .map(|(_, runs)| format!("{:>8}", runs.iter().filter(|r| r.1 <= t0 + t).count()))
            .collect();
        eprintln!("{t:4.0} {}", row.join(" "));
        t += 1.0;
    }
}

/// Empties the work queues of the vhost `url` and deletes the projects' results queues, so
/// that an earlier run's leftovers neither run nor stay behind.
fn clear(url: &str, projects: &[&str]) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let conn = tasks::amqp::connect(url, "priorities test").await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        tasks::amqp::declare_todo(&channel).await.unwrap();
        for priority in tasks::Priority::ALL {
            channel
                .queue_purge(
                    tasks::amqp::todo_queue(priority).into(),
                    QueuePurgeOptions::default(),
                )
                .await
                .unwrap();
        }
        for project in projects {
            let queue = tasks::amqp::results_queue(project);
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = conn.close(200, "done".into()).await;
    });
}
