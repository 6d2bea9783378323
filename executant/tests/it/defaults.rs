//! An executant started with no flags: the platform's worker containers reused, the prefetch
//! grown to short tasks, every task answered once and exact.

use std::time::{Duration, Instant};

use tasks::Reassembly;

use crate::support::*;

/// The containers of `project` on the engine, running or not.
fn containers_of(project: &str) -> usize {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=taskplatform.project={project}"))
        .output()
        .expect("running docker ps");
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_no_flag_executant_reuses_workers_and_grows_its_prefetch() {
    // A vhost of its own: the rate and the containers counted are this executant's alone.
    let url = own_vhost("executant-tests-defaults");
    let id = unique_project("defaults");
    // N = 10 at depth 6: 2,045 tasks of well under a millisecond each.
    let project = tasks::split::nqueens_project(&id, 10, 6).unwrap();
    let count = project.tasks.len() as u32;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut executant = std::process::Command::new(env!("CARGO_BIN_EXE_executant"))
        .env("AMQP_URL", &url)
        .env("RUST_LOG", "info")
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    // In two halves with a pause between: the prefetch grows, shrinks while idle, grows again.
    let half = project.tasks.len() / 2;
    publish_tasks_to(&url, &id, &project.tasks.to_vec()[..half]).await;
    let started = Instant::now();
    let first = collect_results_from(&url, &id, half as u32, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    publish_tasks_to(&url, &id, &project.tasks.to_vec()[half..]).await;
    let collected =
        collect_results_from(&url, &id, count - half as u32, Duration::from_secs(120)).await;
    let lanes = containers_of(&id);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &executant.id().to_string()])
        .status();
    let exit = tokio::task::spawn_blocking(move || executant.wait().unwrap())
        .await
        .unwrap();
    drop_results_at(&url, &id).await;
    let log = std::fs::read_to_string(log.path()).unwrap();
    for line in log.lines().filter(|l| l.contains("prefetch resized")) {
        eprintln!("{line}");
    }
    let (mut results, mut duplicates) = first.unwrap_or_else(|e| panic!("{e}\n{log}"));
    let (rest, more) = collected.unwrap_or_else(|e| panic!("{e}\n{log}"));
    duplicates += more;
    for (index, result) in rest {
        duplicates += usize::from(results.insert(index, result).is_some());
    }
    assert!(exit.success(), "executant exited with {exit:?}\n{log}");

    let mut reassembly = Reassembly::new(project);
    for r in results.values() {
        reassembly.record(r);
    }
    let result = reassembly.result();
    assert_eq!(result.solutions, Some(724), "{:?}", result.missing);
    assert_eq!(duplicates, 0, "no fault, so no task answered twice");
    // One container per task costs a few hundred milliseconds each: 1,022 tasks would take
    // minutes. Reused, a few seconds; 100 a second leaves room for a loaded machine.
    let rate = half as f64 / elapsed.as_secs_f64();
    assert!(rate > 100.0, "{rate:.0} tasks/s in {elapsed:?}\n{log}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        (1..=cores).contains(&lanes),
        "{lanes} containers left for the project: at most one lane per core, kept while idle"
    );
    assert!(
        log.contains("prefetch resized"),
        "the prefetch stayed at --concurrency\n{log}"
    );
    assert!(
        !log.contains("reconnecting"),
        "resizing the prefetch kept the session\n{log}"
    );
}
