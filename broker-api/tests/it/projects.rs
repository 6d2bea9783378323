use reqwest::StatusCode;
use serde_json::json;

use crate::support::{write_tracking, Service};

#[tokio::test]
async fn projects_from_the_tracking_repository_at_head() {
    let ws = tempfile::tempdir().unwrap();
    let tracking = ws.path().join("tracking");
    write_tracking(
        &tracking,
        &[("alpha", 8, 3, 1, false), ("beta", 4, 4, 0, true)],
    );
    // An uncommitted change in the working tree is not shown (HEAD is).
    std::fs::write(tracking.join("alpha/progress.json"), "{ half-written").unwrap();
    let ws_path = ws.path().to_path_buf();
    let s = Service::start_with(|c| c.workspace = Some(ws_path)).await;

    let (status, list) = s.get_json("/api/projects").await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["project"], "alpha");
    assert_eq!(list[0]["tasks"], 8);
    assert_eq!(list[0]["done"], 3);
    assert_eq!(list[0]["failed"], 1);
    assert_eq!(list[0]["complete"], false);
    assert_eq!(list[0]["fraction"], 0.375);
    assert_eq!(list[0]["results_queue"], "results.alpha");
    assert_eq!(
        list[0]["spec"],
        json!({"kind": "nqueens", "n": 8, "depth": 2})
    );
    assert_eq!(list[1]["complete"], true);

    let (status, one) = s.get_json("/api/projects/beta").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["fraction"], 1.0);
    let (status, err) = s.get_json("/api/projects/gamma").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].as_str().unwrap().contains("gamma"));

    // A new commit shows at once.
    write_tracking(&tracking, &[("alpha", 8, 5, 1, false)]);
    let (_, one) = s.get_json("/api/projects/alpha").await;
    assert_eq!(one["done"], 5);
}

#[tokio::test]
async fn without_a_workspace_projects_are_404_with_the_fix() {
    let s = Service::start().await;
    let (status, err) = s.get_json("/api/projects").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        err["error"].as_str().unwrap().contains("--workspace"),
        "{err}"
    );
    // A workspace without a tracking repository yet: no projects.
    let ws = tempfile::tempdir().unwrap();
    let ws_path = ws.path().to_path_buf();
    let s = Service::start_with(|c| c.workspace = Some(ws_path)).await;
    let (status, list) = s.get_json("/api/projects").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([]));
}
