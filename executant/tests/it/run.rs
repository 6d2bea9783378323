//! Tasks through the real executant: results, failures, sandbox, dead-lettering, shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use tasks::model::ExecSpec;
use tasks::{amqp, Outcome, Project, Reassembly, TaskOutput, TaskResult, TaskSpec};

use crate::support::*;

fn exec(command: &[&str]) -> TaskSpec {
    TaskSpec::Exec(ExecSpec {
        image: "debian:bookworm-slim".into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        script: None,
    })
}

fn outcome(result: &TaskResult) -> Result<String, String> {
    match &result.outcome {
        Outcome::Ok {
            output: TaskOutput::Exec { stdout },
        } => Ok(stdout.clone()),
        Outcome::Ok { output } => Ok(format!("{output:?}")),
        Outcome::Failed { reason } => Err(reason.clone()),
    }
}

async fn run_project(project: &Project, timeout: Duration) -> Vec<TaskResult> {
    let executant = InProcess::start(test_config());
    publish_tasks(&project.id, &project.tasks.to_vec()).await;
    let (results, _) = collect_results(&project.id, project.tasks.len() as u32, timeout).await;
    executant.stop().await;
    drop_results(&project.id).await;
    results.into_values().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nqueens_project_comes_back_exact() {
    let id = unique_project("exec-nq");
    let project = tasks::split::nqueens_project(&id, 10, 2).unwrap();
    let results = run_project(&project, Duration::from_secs(240)).await;
    let mut reassembly = Reassembly::new(project);
    for r in &results {
        reassembly.record(r);
    }
    let result = reassembly.result();
    assert!(result.complete, "{result:?}");
    assert_eq!(result.solutions, Some(724));
    assert!(results.iter().all(|r| r.executor.is_some()));
    // A reused worker answers a small task within the millisecond: only the sum is sure to
    // be above zero.
    assert!(results.iter().map(|r| r.duration_ms).sum::<u64>() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn reused_workers_batch_tasks_and_stay_exact() {
    let id = unique_project("exec-reuse");
    let project = tasks::split::nqueens_project(&id, 11, 3).unwrap();
    let mut config = test_config();
    config.concurrency = 16;
    config.reuse = 20;
    let name = config.name.clone();
    let executant = InProcess::start(config);
    publish_tasks(&id, &project.tasks.to_vec()).await;
    let (results, _) =
        collect_results(&id, project.tasks.len() as u32, Duration::from_secs(240)).await;
    executant.stop().await;
    drop_results(&id).await;
    // Used-up workers, and the successors started ahead of them, are all removed.
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!(
            "label={}={name}",
            executant::sandbox::EXECUTANT_LABEL
        ))
        .output()
        .unwrap();
    assert!(left.status.success());
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "containers left"
    );
    let mut reassembly = Reassembly::new(project);
    for r in results.values() {
        reassembly.record(r);
    }
    let result = reassembly.result();
    assert!(result.complete, "{result:?}");
    assert_eq!(result.solutions, Some(2680));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_tasks_echo_timeout_and_are_contained() {
    let id = unique_project("exec-demo");
    let sentence = format!("project {id} task 0 says hello");
    let specs = vec![
        exec(&["echo", &sentence]),
        exec(&["sleep", "60"]),
        // The network: only the loopback interface exists.
        exec(&["sh", "-c", "ls /sys/class/net"]),
        // The root filesystem is read-only, /tmp is writable.
        exec(&[
            "sh",
            "-c",
            "echo x > /tmp/ok && echo tmp-ok && echo x > /etc/evil",
        ]),
        // A bounded fork storm: the pids limit stops it before 200 processes.
        exec(&[
            "sh",
            "-c",
            "i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done; echo spawned-all",
        ]),
        // Runs as nobody, with no capabilities.
        exec(&["sh", "-c", "id -u; grep CapEff /proc/self/status"]),
    ];
    let mut project = Project::from_specs(&id, specs).unwrap();
    let mut list = project.tasks.to_vec();
    list[1].timeout_secs = Some(2);
    project.tasks = list.into();
    let results = run_project(&project, Duration::from_secs(180)).await;
    assert_eq!(outcome(&results[0]).unwrap(), format!("{sentence}\n"));
    let timeout = outcome(&results[1]).unwrap_err();
    assert!(timeout.contains("timed out after 2 s"), "{timeout}");
    assert_eq!(outcome(&results[2]).unwrap(), "lo\n");
    let write = outcome(&results[3]).unwrap_err();
    assert!(write.contains("Read-only file system"), "{write}");
    match outcome(&results[4]) {
        Ok(out) => assert!(!out.contains("spawned-all"), "{out}"),
        Err(reason) => assert!(
            reason.contains("fork") || reason.contains("exited"),
            "{reason}"
        ),
    }
    let ids = outcome(&results[5]).unwrap();
    assert!(ids.starts_with("65534\n"), "{ids}");
    assert!(ids.contains("CapEff:\t0000000000000000"), "{ids}");
}

#[tokio::test(flavor = "multi_thread")]
async fn images_off_the_allowlist_are_refused() {
    let id = unique_project("exec-allow");
    let spec = TaskSpec::Exec(ExecSpec {
        image: "alpine:3".into(),
        command: vec!["true".into()],
        script: None,
    });
    let project = Project::from_specs(&id, vec![spec]).unwrap();
    let results = run_project(&project, Duration::from_secs(60)).await;
    let reason = outcome(&results[0]).unwrap_err();
    assert!(reason.contains("allowlist"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_are_dead_lettered_and_good_tasks_still_run() {
    let id = unique_project("exec-poison");
    let poison_id = format!("{id}/poison");
    let executant = InProcess::start(test_config());
    let conn = amqp::connect(&amqp_url(), "poison test").await.unwrap();
    let channel = amqp::confirm_channel(&conn).await.unwrap();
    amqp::declare_todo(&channel).await.unwrap();
    publish_raw(&channel, &poison_id, b"{ this is not json").await;
    let project = Project::from_specs(&id, vec![exec(&["echo", "after poison"])]).unwrap();
    publish_tasks(&id, &project.tasks.to_vec()).await;
    let (results, _) = collect_results(&id, 1, Duration::from_secs(60)).await;
    assert_eq!(outcome(&results[&0]).unwrap(), "after poison\n");

    // Find our poison in todo.dead (other tests' messages are put back).
    let reader = conn.create_channel().await.unwrap();
    let mut consumer = reader
        .basic_consume(
            amqp::DEAD_QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let d = consumer.next().await.unwrap().unwrap();
            let mine = d.properties.message_id().as_ref().map(|s| s.to_string())
                == Some(poison_id.clone());
            if mine {
                let reason = amqp::reason_of(&d.properties);
                d.ack(BasicAckOptions::default()).await.unwrap();
                return reason;
            }
            d.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    })
    .await
    .expect("the poison message never reached todo.dead");
    let reason = reason.expect("the dead-lettered message carries a reason");
    assert!(reason.contains("malformed JSON"), "{reason}");
    conn.close(200, "done".into()).await.unwrap();
    executant.stop().await;
    drop_results(&id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_project_loses_nothing() {
    let id = unique_project("exec-term");
    let project = tasks::split::nqueens_project(&id, 11, 2).unwrap();
    let n_tasks = project.tasks.len() as u32;
    publish_tasks(&id, &project.tasks.to_vec()).await;
    let bin = env!("CARGO_BIN_EXE_executant");
    let spawn = |name: &str| {
        std::process::Command::new(bin)
            .args(["--concurrency", "2", "--name", name])
            .env("AMQP_URL", amqp_url())
            .spawn()
            .unwrap()
    };
    let first = spawn(&format!("{id}-a"));
    // Let it take some tasks, then ask it to stop as a service manager would.
    let (partial, _) = collect_results(&id, 3, Duration::from_secs(120)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut first = first;
    let exit = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert!(
        exit.success(),
        "executant exited with {exit:?} after SIGTERM"
    );
    let mut second = spawn(&format!("{id}-b"));
    let (rest, _) = collect_results(&id, 0, Duration::from_secs(1)).await;
    let mut reassembly = Reassembly::new(project);
    for r in partial.values().chain(rest.values()) {
        reassembly.record(r);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !reassembly.finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "project not finished: {:?}",
            reassembly.result().missing
        );
        let (more, _) = collect_results(&id, 1, Duration::from_secs(120)).await;
        for r in more.values() {
            reassembly.record(r);
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || second.wait()).await;
    drop_results(&id).await;
    let result = reassembly.result();
    assert_eq!(result.tasks, n_tasks);
    assert!(result.complete, "{result:?}");
    assert_eq!(result.solutions, Some(2680));
}

#[tokio::test(flavor = "multi_thread")]
async fn task_containers_keep_no_log_and_have_ulimits_and_an_init() {
    let id = unique_project("exec-logs");
    let flood = "head -c 20000000 /dev/zero | tr '\\0' x >&2";
    let specs = vec![
        // 20 MB on stderr, then the limits and PID 1 on stdout; it stays a while to be seen.
        exec(&[
            "sh",
            "-c",
            &format!("{flood}; grep -E 'open files|processes' /proc/self/limits; cat /proc/1/comm; sleep 4"),
        ]),
        // A failure after a flood: the reason carries only a bounded tail of stderr.
        exec(&["sh", "-c", &format!("{flood}; exit 3")]),
    ];
    let project = Project::from_specs(&id, specs).unwrap();
    // A vhost of its own: another test's executant, with a prefetch sized to the work,
    // could take both tasks and this one would never start a container (failed in CI).
    let url = own_vhost("executant-tests-container-settings");
    let mut config = test_config();
    config.amqp_url = url.clone();
    let name = config.name.clone();
    let executant = InProcess::start(config);
    publish_tasks_to(&url, &id, &project.tasks.to_vec()).await;
    // While the first task sleeps, the engine reports its log driver and keeps no log file.
    let inspected = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let ps = std::process::Command::new("docker")
                .args(["ps", "-q", "--filter"])
                .arg(format!(
                    "label={}={name}",
                    executant::sandbox::EXECUTANT_LABEL
                ))
                .output()
                .unwrap();
            let ids = String::from_utf8_lossy(&ps.stdout).trim().to_string();
            if let Some(container) = ids.lines().next() {
                let inspect = std::process::Command::new("docker")
                    .args([
                        "inspect",
                        "-f",
                        "{{.HostConfig.LogConfig.Type}}|{{.LogPath}}|{{.HostConfig.Init}}",
                        container,
                    ])
                    .output()
                    .unwrap();
                if inspect.status.success() {
                    return String::from_utf8_lossy(&inspect.stdout).trim().to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("no task container seen");
    assert_eq!(inspected, "none||true");
    let (results, _) = collect_results_from(&url, &id, 2, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    executant.stop().await;
    drop_results_at(&url, &id).await;

    let out = outcome(&results[&0]).unwrap();
    let limit = |what: &str| -> Vec<String> {
        let line = out.lines().find(|l| l.contains(what)).unwrap_or_default();
        line.split_whitespace()
            .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
            .map(String::from)
            .collect()
    };
    assert_eq!(limit("open files"), ["1024", "1024"], "{out}");
    assert_eq!(limit("processes"), ["4096", "4096"], "{out}");
    assert!(out.ends_with("docker-init\n"), "{out}");
    let reason = outcome(&results[&1]).unwrap_err();
    assert!(reason.starts_with("exited with code 3: xxx"), "{reason}");
    assert!(reason.len() < 1024, "{} bytes of reason", reason.len());
}

/// Finds a running task container of executant `name` and kills it through the engine.
async fn docker_kill_one(name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ps = std::process::Command::new("docker")
            .args(["ps", "-q", "--filter"])
            .arg(format!(
                "label={}={name}",
                executant::sandbox::EXECUTANT_LABEL
            ))
            .output()
            .unwrap();
        let ids = String::from_utf8_lossy(&ps.stdout).trim().to_string();
        if let Some(id) = ids.lines().next() {
            let killed = std::process::Command::new("docker")
                .args(["kill", id])
                .status()
                .unwrap();
            if killed.success() {
                return;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no container to kill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_kill_from_outside_the_task_is_retried() {
    let id = unique_project("exec-kill");
    let specs = vec![
        exec(&["sh", "-c", "exit 137"]),
        exec(&["sh", "-c", "kill -9 $$"]),
        exec(&["sh", "-c", "sleep 4; echo survived"]),
    ];
    let project = Project::from_specs(&id, specs).unwrap();
    // A vhost of its own: the third task must run on this executant, whose container is
    // killed; another test's executant could take it.
    let url = own_vhost("executant-tests-kill-retry");
    let mut config = test_config();
    config.amqp_url = url.clone();
    config.concurrency = 1;
    let name = config.name.clone();
    let executant = InProcess::start(config);
    publish_tasks_to(&url, &id, &project.tasks.to_vec()[..2]).await;
    let collect = |count| collect_results_from(&url, &id, count, Duration::from_secs(120));
    let (first, _) = collect(2).await.unwrap_or_else(|e| panic!("{e}"));
    // The third task is killed through the engine once: it runs again and succeeds.
    publish_tasks_to(&url, &id, &project.tasks.to_vec()[2..]).await;
    docker_kill_one(&name).await;
    let (last, _) = collect(1).await.unwrap_or_else(|e| panic!("{e}"));
    executant.stop().await;
    drop_results_at(&url, &id).await;

    for index in [0, 1] {
        let reason = outcome(&first[&index]).unwrap_err();
        assert!(
            reason.starts_with("exited with code 137 (signal 9"),
            "task {index}: {reason}"
        );
    }
    assert_eq!(outcome(&last[&2]).unwrap(), "survived\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_exiting_without_an_answer_is_the_tasks_failure() {
    // A worker image of this test's own that reads its task and exits 0 without answering.
    let image = "taskplatform-test/silent-worker:exec-robust";
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", image, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    build
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM debian:bookworm-slim\nENTRYPOINT [\"sh\", \"-c\", \"read task; exit 0\", \"worker\"]\n")
        .unwrap();
    assert!(build.wait().unwrap().success(), "docker build failed");

    let id = unique_project("exec-silent");
    let project = tasks::split::nqueens_project(&id, 6, 1).unwrap();
    // A vhost of its own: this executant would fail any other test's task it took, and any
    // other executant would answer this test's task.
    let url = own_vhost("executant-tests-silent-worker");
    let mut config = test_config();
    config.amqp_url = url.clone();
    config.worker_image = image.into();
    let executant = InProcess::start(config);
    publish_tasks_to(&url, &id, &project.tasks.to_vec()[..1]).await;
    let (results, _) = collect_results_from(&url, &id, 1, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    executant.stop().await;
    let reason = outcome(&results[&0]).unwrap_err();
    assert!(
        reason.starts_with("exited with code 0 without answering"),
        "{reason}"
    );
}
