//! `--metrics-listen`: the executant's Prometheus metrics and health checks, scraped while a
//! real project runs through the real broker and engine.

use std::collections::HashMap;
use std::time::Duration;

use tasks::model::ExecSpec;
use tasks::{Outcome, Project, TaskSpec};

use crate::support::*;

/// `name{labels}` -> value, from the Prometheus text format.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_real_project_and_health_checks_answer() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // A vhost of its own: with other tests' executants on `todo`, a task returned by one of
    // them (a closed connection) may run here too and be counted twice, its first result
    // naming the other (a large prefetch returns many).
    let url = own_vhost("executant-tests-metrics");
    let mut config = test_config();
    config.amqp_url = url.clone();
    config.concurrency = 8;
    config.reuse = 16;
    config.metrics_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let name = config.name.clone();
    let executant = InProcess::start(config);
    let started = std::time::Instant::now();
    while get(&format!("{base}/readyz")).await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);

    let nq = tasks::split::nqueens_project(&unique_project("metrics-nq"), 11, 3).unwrap();
    let exec_id = unique_project("metrics-exec");
    let specs: Vec<_> = ["true", "exit 3", "true"]
        .iter()
        .map(|cmd| {
            TaskSpec::Exec(ExecSpec {
                image: "debian:bookworm-slim".into(),
                command: vec!["sh".into(), "-c".into(), cmd.to_string()],
                script: None,
            })
        })
        .collect();
    let exec = Project::from_specs(&exec_id, specs).unwrap();

    // Scrape every 100 ms while the projects run.
    let (stop_sampling, stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn({
        let url = format!("{base}/metrics");
        async move {
            let mut series = Vec::new();
            let mut stopped = stopped;
            loop {
                let (status, text) = get(&url).await;
                assert_eq!(status, 200, "{text}");
                series.push(parse(&text));
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            series
        }
    });
    publish_tasks_to(&url, &nq.id, &nq.tasks.to_vec()).await;
    publish_tasks_to(&url, &exec.id, &exec.tasks.to_vec()).await;
    let collect = |id: String, count: u32, secs: u64| {
        let url = url.clone();
        async move {
            collect_results_from(&url, &id, count, Duration::from_secs(secs))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let (nq_results, _) = collect(nq.id.clone(), nq.tasks.len() as u32, 300).await;
    let (exec_results, _) = collect(exec.id.clone(), 3, 120).await;
    let _ = stop_sampling.send(());
    let series = sampler.await.unwrap();
    let final_text = get(&format!("{base}/metrics")).await.1;
    let m = parse(&final_text);
    executant.stop().await;
    drop_results_at(&url, &nq.id).await;
    drop_results_at(&url, &exec.id).await;
    assert!(
        get(&format!("{base}/healthz")).await.0 == 0,
        "server still up after stop"
    );

    let mine = |results: &std::collections::BTreeMap<u32, tasks::TaskResult>, ok: bool| {
        results
            .values()
            .filter(|r| r.executor.as_deref() == Some(name.as_str()))
            .filter(|r| matches!(r.outcome, Outcome::Ok { .. }) == ok)
            .count() as f64
    };
    let v = |key: &str| {
        m.get(key)
            .copied()
            .unwrap_or_else(|| panic!("{key} missing: {final_text}"))
    };
    // Other executants of this test binary consume `todo` too: count what this one ran.
    assert_eq!(
        v(r#"executant_tasks_succeeded_total{kind="nqueens"}"#),
        mine(&nq_results, true)
    );
    assert_eq!(v(r#"executant_tasks_failed_total{kind="nqueens"}"#), 0.0);
    assert_eq!(
        v(r#"executant_tasks_succeeded_total{kind="exec"}"#),
        mine(&exec_results, true)
    );
    assert_eq!(
        v(r#"executant_tasks_failed_total{kind="exec"}"#),
        mine(&exec_results, false)
    );
    assert!(
        v(r#"executant_tasks_succeeded_total{kind="nqueens"}"#) > 0.0,
        "{final_text}"
    );
    for kind in ["nqueens", "exec"] {
        let ran = v(&format!(
            r#"executant_tasks_started_total{{kind="{kind}"}}"#
        ));
        let done = v(&format!(
            r#"executant_tasks_succeeded_total{{kind="{kind}"}}"#
        )) + v(&format!(r#"executant_tasks_failed_total{{kind="{kind}"}}"#));
        assert_eq!(ran, done, "{kind}: {final_text}");
        assert_eq!(
            v(&format!(
                r#"executant_task_duration_seconds_count{{kind="{kind}"}}"#
            )),
            done
        );
        assert_eq!(
            v(&format!(
                r#"executant_tasks_retried_total{{kind="{kind}"}}"#
            )),
            0.0
        );
    }
    // Every N-queens task went through a reused worker, in batches.
    assert_eq!(
        v("executant_reuse_lane_batch_tasks_total"),
        v(r#"executant_tasks_started_total{kind="nqueens"}"#)
    );
    assert!(v("executant_reuse_lane_batches_total") >= 1.0);
    assert!(v("executant_reuse_lane_batches_total") <= v("executant_reuse_lane_batch_tasks_total"));
    assert_eq!(v("executant_engine_errors_total"), 0.0);
    assert_eq!(
        v(r#"executant_broker_reconnects_total{connection="consume"}"#),
        0.0
    );
    assert_eq!(v("executant_consuming"), 1.0);
    let most_containers = series
        .iter()
        .filter_map(|m| m.get("executant_containers_running").copied())
        .fold(0.0, f64::max);
    assert!(
        most_containers >= 1.0,
        "no container seen running in {} scrapes",
        series.len()
    );
    eprintln!(
        "figures: {} scrapes, at most {most_containers} containers running;",
        series.len()
    );
    eprintln!(
        "figures: nqueens {} ran here of {}, exec {} ok {} failed, {} batches of {} tasks, \
         containers running at the end {}, duration sum {:.2} s",
        v(r#"executant_tasks_started_total{kind="nqueens"}"#),
        nq.tasks.len(),
        v(r#"executant_tasks_succeeded_total{kind="exec"}"#),
        v(r#"executant_tasks_failed_total{kind="exec"}"#),
        v("executant_reuse_lane_batches_total"),
        v("executant_reuse_lane_batch_tasks_total"),
        v("executant_containers_running"),
        v(r#"executant_task_duration_seconds_sum{kind="nqueens"}"#),
    );
}
