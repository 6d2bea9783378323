//! Reused worker containers (the default for the platform's worker image) killed from
//! outside: every task the container held comes back and is answered once, and only the
//! task the lane was waiting on may be charged an attempt; tasks merely queued in the
//! container, or sent to a container that had already died, are not.

use std::collections::BTreeMap;
use std::time::Duration;

use tasks::{Project, Reassembly, TaskResult};

use crate::support::*;

/// The running task containers of executant `name`.
fn containers_of(name: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!(
            "label={}={name}",
            executant::sandbox::EXECUTANT_LABEL
        ))
        .output()
        .expect("running docker ps");
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// Kills every running task container of executant `name` through the engine; returns how
/// many it killed.
fn kill_all(name: &str) -> usize {
    containers_of(name)
        .iter()
        .filter(|id| {
            std::process::Command::new("docker")
                .args(["kill", id])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .count()
}

/// The attempt each result says it came from (`provenance.attempt`).
fn attempts(results: &BTreeMap<u32, TaskResult>) -> BTreeMap<u32, u32> {
    results
        .iter()
        .map(|(index, r)| {
            let attempt = r.provenance.as_ref().expect("provenance").attempt;
            (*index, attempt)
        })
        .collect()
}

/// The exact count of `project` from `results`, which must cover every task.
fn solutions(project: &Project, results: &BTreeMap<u32, TaskResult>) -> Option<u64> {
    let mut reassembly = Reassembly::new(project.clone());
    for r in results.values() {
        reassembly.record(r);
    }
    reassembly.result().solutions
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_sent_to_a_reused_worker_killed_while_idle_are_not_charged() {
    // A vhost of its own: the lane killed must be this executant's, and the tasks its own.
    let url = own_vhost("executant-tests-idle-kill");
    let id = unique_project("idle-kill");
    // N = 10 at depth 4: 424 tasks of well under a millisecond.
    let project = tasks::split::nqueens_project(&id, 10, 4).unwrap();
    let mut config = test_config();
    config.amqp_url = url.clone();
    assert!(
        config.reuse > 1,
        "the platform's worker image is reused by default"
    );
    let name = config.name.clone();
    let executant = InProcess::start(config);
    let collect = |count| collect_results_from(&url, &id, count, Duration::from_secs(120));
    // A few tasks start the project's lanes; their containers then wait for more work.
    publish_tasks_to(&url, &id, &project.tasks.to_vec()[..4]).await;
    let (mut results, _) = collect(4).await.unwrap_or_else(|e| panic!("{e}"));
    let killed = kill_all(&name);
    assert!(killed > 0, "no idle worker container to kill");
    // Time for the engine to tear down the killed containers' attached streams.
    tokio::time::sleep(Duration::from_secs(2)).await;
    publish_tasks_to(&url, &id, &project.tasks.to_vec()[4..]).await;
    let rest = collect(project.tasks.len() as u32 - 4).await;
    executant.stop().await;
    drop_results_at(&url, &id).await;
    let (rest, duplicates) = rest.unwrap_or_else(|e| panic!("{e}"));
    results.extend(rest);
    assert_eq!(duplicates, 0);
    assert_eq!(solutions(&project, &results), Some(724));
    let charged: Vec<(u32, u32)> = attempts(&results)
        .into_iter()
        .filter(|(_, a)| *a > 1)
        .collect();
    // The containers died before any of these tasks was sent: none of them ran in one.
    assert!(
        charged.is_empty(),
        "{} tasks charged an attempt for a container killed before they were sent: {:?}",
        charged.len(),
        &charged[..charged.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_worker_killed_mid_batch_charges_at_most_the_task_it_was_running() {
    let url = own_vhost("executant-tests-batch-kill");
    let id = unique_project("batch-kill");
    // N = 14 at depth 3: 506 tasks of some milliseconds each (about a second of work in
    // all on two cores), so a lane holds several when its container is killed.
    let project = tasks::split::nqueens_project(&id, 14, 3).unwrap();
    let count = project.tasks.len() as u32;
    let mut config = test_config();
    config.amqp_url = url.clone();
    let name = config.name.clone();
    let executant = InProcess::start(config);
    publish_tasks_to(&url, &id, &project.tasks.to_vec()).await;
    let collecting = tokio::spawn({
        let (url, id) = (url.clone(), id.clone());
        async move { collect_results_from(&url, &id, count, Duration::from_secs(180)).await }
    });
    // Kill the lanes' containers as soon as they run, twice.
    let mut kills = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while kills < 2 && std::time::Instant::now() < deadline && !collecting.is_finished() {
        let killed = kill_all(&name);
        if killed > 0 {
            kills += killed;
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let collected = collecting.await.unwrap();
    executant.stop().await;
    drop_results_at(&url, &id).await;
    let (results, duplicates) = collected.unwrap_or_else(|e| panic!("{e}"));
    assert!(kills > 0, "no worker container was killed");
    assert_eq!(solutions(&project, &results), Some(365_596));
    assert_eq!(
        duplicates, 0,
        "a task re-run after a kill leaves one result"
    );
    let charged = attempts(&results).values().filter(|&&a| a > 1).count();
    assert!(
        charged <= kills,
        "{charged} tasks charged an attempt for {kills} containers killed"
    );
}
