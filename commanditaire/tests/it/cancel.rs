//! Issue 15, item 1: `commanditaire cancel P` stops the project's containers on the
//! executants, records the cancellation, makes the follower exit 5, and removes the
//! project's results queue; a finished or unknown project is bad usage. The containers
//! stopped include the warm workers a project took, which carry no project label.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    client, client_at, client_json, client_json_at, own_vhost, wait_for, Executant,
};

/// The running containers of `project` on the local engine.
fn running_containers(project: &str) -> usize {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!("label=taskplatform.project={project}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The running worker containers (`worker serve`) of executant `name` that carry no project
/// label: its warm workers, waiting or taken by a project. Not the short-lived `worker
/// --version` container it runs at start for provenance, which carries no project either.
fn unlabelled_containers(name: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Command}}",
            "--filter",
        ])
        .arg(format!("label=taskplatform.executant={name}"))
        .args(["--filter", "label=taskplatform.project="])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(" serve"))
        .filter_map(|line| line.split_whitespace().next().map(String::from))
        .collect()
}

/// Whether the broker at `url` has queue `name`.
fn queue_exists(url: &str, name: &str) -> bool {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(tasks::test_support::queue_exists(url, name))
}

#[test]
fn cancel_stops_containers_records_counts_and_the_follower_exits_5() {
    // A vhost of its own: on a shared `todo`, another test's executant, its slots busy
    // with long tasks, held this project's deliveries past the wait for its containers.
    let url = own_vhost("commanditaire-tests-cancel");
    let _executant = Executant::start_on(&url, 1, |_| {});
    let ws = tempfile::tempdir().unwrap();
    // Cancellations are kept a week, for every executant: an id of its own each run.
    let id = format!(
        "cancel-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let project = id.as_str();
    let mut follower = client_at(&url, ws.path())
        .args([
            "exec", "--count", "6", "--id", project, "--", "sleep", "120",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the project's containers to run",
        Duration::from_secs(60),
        || running_containers(project) >= 2,
    );

    let (code, record, out) = client_json_at(&url, ws.path(), &["cancel", project]);
    assert_eq!(code, 0, "{record} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(record["tasks"], 6, "{record}");
    assert_eq!(record["done"], 0, "{record}");
    assert_eq!(record["not_run"], 6, "{record}");
    assert!(
        record["containers_stopped"].as_u64().unwrap() >= 2,
        "{record}"
    );
    let expected = record["executants_expected"].as_u64().unwrap();
    assert!(expected >= 1, "{record}");
    assert_eq!(record["executants"].as_u64(), Some(expected), "{record}");
    let stop_ms = record["stop_ms"].as_u64().unwrap();
    assert!(stop_ms < 10_000, "{record}");
    eprintln!("cancel to last container stopped: {stop_ms} ms");

    // The follower exits 5 at once.
    let since = Instant::now();
    let status = loop {
        if let Some(s) = follower.try_wait().unwrap() {
            break s;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the follower did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(5));

    // No container of the project runs, and none starts for the queued tasks.
    assert_eq!(running_containers(project), 0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running_containers(project), 0, "a queued task of P ran");
    assert!(!queue_exists(&url, &tasks::amqp::results_queue(project)));

    let (_, status, _) = client_json_at(&url, ws.path(), &["status", project]);
    assert_eq!(status["projects"][0]["state"], "cancelled", "{status}");
    let log = crate::support::git_log(&ws.path().join("tracking"));
    assert!(
        log[0].starts_with(&format!(
            "Project {project} cancelled: 0/6 tasks done, 0 failed, 6 not run"
        )),
        "{log:?}"
    );

    // Again, or a project that is not there: bad usage; resume says it was cancelled.
    let again = client_at(&url, ws.path())
        .args(["cancel", project])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already cancelled"));
    let unknown = client_at(&url, ws.path())
        .args(["cancel", "no-such"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let resumed = client_at(&url, ws.path())
        .args(["resume", project])
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(5));
}

#[test]
fn cancelling_a_finished_project_is_bad_usage() {
    let ws = tempfile::tempdir().unwrap();
    let (code, _, _) = client_json(ws.path(), &["nqueens", "6", "--local", "--id", "done"]);
    assert_eq!(code, 0);
    let out = client(ws.path()).args(["cancel", "done"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is complete"));
}

#[test]
fn cancel_kills_the_warm_workers_a_project_took() {
    // A vhost of its own, made anew: the tasks an earlier run left in its `todo` (the rest
    // of a project cancelled there) would take the warm workers before this project does.
    let vhost = "commanditaire-tests-cancel-warm";
    let _ = Command::new("rabbitmqctl")
        .args(["-q", "delete_vhost", vhost])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let url = own_vhost(vhost);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let name = format!("test-executant-warm-{}-{stamp}", std::process::id());
    let _executant = Executant::start_on(&url, 10_000, |c| c.name = name.clone());
    // One warm worker per lane a project may open: one per core, at most `--concurrency`.
    let lanes = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    wait_for("the warm workers", Duration::from_secs(60), || {
        unlabelled_containers(&name).len() == lanes
    });
    let warm = unlabelled_containers(&name);

    // Long tasks (N = 18 at depth 1: 9 tasks of seconds each), taken by the warm workers:
    // one taken is replaced by a new one.
    let ws = tempfile::tempdir().unwrap();
    let project = format!("cancel-warm-{stamp}");
    let mut follower = client_at(&url, ws.path())
        .args(["nqueens", "18", "--depth", "1", "--id", &project])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("a warm worker to be taken", Duration::from_secs(60), || {
        unlabelled_containers(&name)
            .iter()
            .any(|id| !warm.contains(id))
    });
    assert_eq!(
        running_containers(&project),
        0,
        "the project's first tasks waited for containers of their own"
    );

    let (code, record, out) = client_json_at(&url, ws.path(), &["cancel", &project]);
    assert_eq!(code, 0, "{record} {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        record["containers_stopped"].as_u64().unwrap() >= 1,
        "{record}"
    );
    wait_for("the follower to exit", Duration::from_secs(10), || {
        follower.try_wait().unwrap().is_some()
    });
    assert_eq!(follower.wait().unwrap().code(), Some(5));
    let running = unlabelled_containers(&name);
    let killed = warm.iter().filter(|id| !running.contains(id)).count();
    assert!(killed >= 1, "no warm worker the project took was killed");
}
