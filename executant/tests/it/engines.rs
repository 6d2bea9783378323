//! Many Docker engines (issue 13, item 4): three executants, each on an engine of its own
//! started by `scripts/docker-engines.sh`; one engine's `dockerd` killed with SIGKILL
//! mid-project. Its executant returns the tasks it held to `todo` once `--engine-grace` has
//! passed, the two others run them, and the project's count is exact; when the engine is
//! started again, the executant consumes again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use tasks::{amqp, Reassembly, TaskResult};

use faults::engines::Engines;

use crate::support::*;

const ENGINES: usize = 3;
/// The grace the test executants give an unreachable engine, in seconds.
const GRACE_SECS: u64 = 5;

/// An executant process on one engine, stopped with SIGTERM when dropped.
struct Executant {
    name: String,
    log: PathBuf,
    child: Child,
}

impl Executant {
    fn start(name: String, url: &str, docker_host: &str, logs: &Path) -> Executant {
        let log = logs.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_executant"))
            .args(["--name", &name, "--concurrency", "2"])
            // A container per task, two at a time: the project must outlast the engine's
            // grace after the kill, and the victim must hold deliveries then; reused
            // workers (the default) finish it in moments.
            .args(["--reuse", "1", "--prefetch", "2"])
            .args(["--engine-grace", &GRACE_SECS.to_string()])
            .args(["--shutdown-grace", "10"])
            .env("AMQP_URL", url)
            .env("DOCKER_HOST", docker_host)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Executant { name, log, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Executant {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Waits (polling) until `cond` holds; false after `within`.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_killed_mid_project_costs_a_redelivery_and_the_count_stays_exact() {
    // A vhost of its own: another test's executant on `/` would take its tasks.
    let url = own_vhost("executant-tests-engines");
    let mut engines = Engines::start(ENGINES);
    assert_eq!(engines.hosts.len(), ENGINES, "one DOCKER_HOST per engine");
    let logs = tempfile::tempdir().unwrap();
    let id = unique_project("exec-engines");
    let executants: Vec<Executant> = engines
        .hosts
        .iter()
        .enumerate()
        .map(|(k, host)| Executant::start(format!("{id}-e{}", k + 1), &url, host, logs.path()))
        .collect();
    let victim = &executants[ENGINES - 1];
    let n = 11;
    let project = tasks::split::nqueens_project(&id, n, 3).unwrap();
    let count = project.tasks.len() as u32;
    publish_tasks_to(&url, &id, &project.tasks.to_vec()).await;

    let conn = amqp::connect(&url, "executant tests").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let (_, mut consumer) = consume_results(&channel, &url, &id).await;
    let started = Instant::now();
    let mut results: BTreeMap<u32, TaskResult> = BTreeMap::new();
    let mut duplicates = 0;
    let mut killed_at: Option<Instant> = None;
    let mut returned_after: Option<Duration> = None;
    let mut last_progress = Instant::now();
    let mut longest_stall = Duration::ZERO;
    let deadline = started + Duration::from_secs(600);
    while (results.len() as u32) < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} results after 600 s; the victim's log:\n{}",
            results.len(),
            victim.log()
        );
        if let Ok(next) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
            let delivery = next.expect("results consumer ended").unwrap();
            // One result, or a batch of them.
            for received in tasks::results::parse(&delivery.data).unwrap() {
                let result = received.result;
                if results.insert(result.index, result).is_some() {
                    duplicates += 1;
                } else {
                    longest_stall = longest_stall.max(last_progress.elapsed());
                    last_progress = Instant::now();
                }
            }
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        // Kill the victim's engine once a quarter of the results are in and it has run
        // some of them itself (it holds deliveries now).
        let by_victim = results
            .values()
            .filter(|r| r.executor.as_deref() == Some(victim.name.as_str()))
            .count();
        if killed_at.is_none() && results.len() as u32 >= count / 4 && by_victim > 0 {
            assert!(engines.kill9(ENGINES), "engine {ENGINES} was not running");
            killed_at = Some(Instant::now());
        }
        if let (Some(at), None) = (killed_at, returned_after) {
            if victim.log().contains("past --engine-grace") {
                returned_after = Some(at.elapsed());
            }
        }
    }
    let killed_at = killed_at.expect("the engine was killed mid-project");
    let after_kill = killed_at.elapsed();
    let _ = conn.close(200, "done".into()).await;

    let mut reassembly = Reassembly::new(project.clone());
    for r in results.values() {
        reassembly.record(r);
    }
    let result = reassembly.result();
    let log = victim.log();
    assert!(result.complete, "{result:?}");
    assert_eq!(
        result.solutions,
        tasks::nqueens::known_count(n),
        "the count is exact"
    );
    assert!(
        results
            .values()
            .all(|r| matches!(r.outcome, tasks::Outcome::Ok { .. })),
        "no task failed: {:?}",
        results
            .values()
            .find(|r| !matches!(r.outcome, tasks::Outcome::Ok { .. }))
    );
    let returned_after = returned_after.unwrap_or_else(|| {
        panic!("the victim never returned its tasks past --engine-grace:\n{log}")
    });
    let mut by_executor: HashMap<String, usize> = HashMap::new();
    for r in results.values() {
        *by_executor
            .entry(r.executor.clone().unwrap_or_default())
            .or_default() += 1;
    }
    eprintln!(
        "engines: {count} tasks (N={n}, depth 3), {:.1} s in all, engine {ENGINES} killed at \
         {:.1} s, its executant returned its tasks {:.1} s after the kill (grace {GRACE_SECS} \
         s), project done {:.1} s after the kill; longest time without a new result {:.1} s; \
         {duplicates} duplicate results ignored; results by executant {by_executor:?}",
        started.elapsed().as_secs_f64(),
        (killed_at - started).as_secs_f64(),
        returned_after.as_secs_f64(),
        after_kill.as_secs_f64(),
        longest_stall.as_secs_f64(),
    );
    // The grace, a ping period, and a redelivery: the others never stopped working.
    assert!(
        returned_after < Duration::from_secs(GRACE_SECS + 10),
        "tasks returned {returned_after:?} after the kill"
    );
    assert!(
        longest_stall < Duration::from_secs(GRACE_SECS + 15),
        "{longest_stall:?} without progress"
    );

    // The engine back: its executant consumes again, and runs a project alone.
    engines
        .restart()
        .unwrap_or_else(|e| panic!("restarting the engines: {e}"));
    assert!(
        eventually(Duration::from_secs(60), || victim
            .log()
            .contains("answers again; consuming todo"))
        .await,
        "the victim did not resume:\n{}",
        victim.log()
    );
    let mut executants = executants;
    let victim = executants.pop().unwrap();
    drop(executants);
    let again = format!("{id}-again");
    let small = tasks::split::nqueens_project(&again, 6, 1).unwrap();
    publish_tasks_to(&url, &again, &small.tasks.to_vec()).await;
    let (after, _) = collect_results_from(
        &url,
        &again,
        small.tasks.len() as u32,
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        after
            .values()
            .all(|r| r.executor.as_deref() == Some(victim.name.as_str())),
        "after the restart every task ran on the victim's engine"
    );
    drop_results_at(&url, &id).await;
    drop_results_at(&url, &again).await;
    drop(victim);
    drop(engines);
    // Nothing of the killed engine is left: its containers' shims died with the engines.
    let shims = Command::new("pgrep")
        .args([
            "-f",
            "--",
            &format!("-address /run/docker-engine-{ENGINES}/"),
        ])
        .output()
        .unwrap();
    assert!(
        shims.stdout.is_empty(),
        "shims left behind: {}",
        String::from_utf8_lossy(&shims.stdout)
    );
}
