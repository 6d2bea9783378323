//! The web page in a real browser: headless Chromium loads `/#token=...` (the `read`
//! scope's token: the page needs no more) against the running service with a queue holding
//! messages and a project in flight, and the dumped DOM must show both. Fails (never
//! skips) in CI when Chromium is missing.

use std::process::Command;

use reqwest::StatusCode;

use crate::support::{in_ci, unique_queue, write_tracking, Service};

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_queues_and_projects_in_a_real_browser() {
    let Some(browser) = chromium() else {
        assert!(
            !in_ci(),
            "chromium is missing: install it with scripts/services.sh chromium"
        );
        eprintln!("SKIPPED (not in CI): chromium is not installed");
        return;
    };
    let ws = tempfile::tempdir().unwrap();
    let project = format!("page-{}", crate::support::random_hex(3));
    write_tracking(&ws.path().join("tracking"), &[(&project, 8, 3, 0, false)]);
    let path = ws.path().to_path_buf();
    let s = Service::start_with(|c| c.workspace = Some(path)).await;
    let q = unique_queue("page");
    s.create_queue(&q, "classic").await;
    for _ in 0..2 {
        assert_eq!(s.publish(&q, "{}").await.0, StatusCode::OK);
    }

    let profile = tempfile::tempdir().unwrap();
    let url = format!("{}/#token={}", s.base, s.read_token);
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        &format!("--user-data-dir={}", profile.path().display()),
        "--virtual-time-budget=5000",
        "--dump-dom",
        &url,
    ];
    let browser = browser.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || Command::new(browser).args(&args).output())
        .await
        .unwrap()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expect = [
        format!(r#"data-queue="{q}" data-messages="2""#),
        format!(r#"data-project="{project}" data-done="3" data-tasks="8""#),
        r#"<td class="num done">3/8</td>"#.to_string(),
        "width: 38%".to_string(),
        "running".to_string(),
        "updated ".to_string(),
    ];
    for e in expect {
        assert!(dom.contains(&e), "the page does not show `{e}`:\n{dom}");
    }
    assert!(!dom.contains(r#"id="status" class="error""#), "{dom}");
}
