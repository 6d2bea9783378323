//! `POST /api/projects/{id}/cancel`: the client's cancellation over HTTP, for the admin
//! token only; an unknown project is 404, a cancelled one 409.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tasks::amqp;
use tasks::test_support::queue_exists;

use crate::support::{amqp_url, random_hex, Service};
use broker_api::auth::Scope;

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_cancels_a_project_once() {
    let dir = tempfile::tempdir().unwrap();
    let ws = commanditaire::workspace::Workspace::open_or_init(dir.path()).unwrap();
    // Cancellations are kept a week and read by every executant: an id of its own.
    let id = format!("bapi-cancel-{}", random_hex(6));
    let project = tasks::split::nqueens_project(&id, 8, 1).unwrap();
    let n_tasks = project.tasks.len() as u64;
    commanditaire::tracking::record_project(&ws, &project, &serde_json::json!({})).unwrap();
    {
        let conn = amqp::connect(&amqp_url(), "bapi cancel test")
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        amqp::declare_results(&channel, &id, &amqp::Nodes::parse(&amqp_url()))
            .await
            .unwrap();
        let _ = conn.close(200, "".into()).await;
    }
    let ws_path = dir.path().to_path_buf();
    let s = Service::start_with(|c| c.workspace = Some(ws_path)).await;
    let path = format!("/api/projects/{id}/cancel");

    for scope in [Scope::Read, Scope::User] {
        let r = s.req_as(scope, Method::POST, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{scope}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["scope"], "admin", "{body}");
    }
    assert!(!commanditaire::cancel::is_cancelled(&ws, &id));

    let r = s
        .req(Method::POST, "/api/projects/no-such-project/cancel")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = s.req(Method::POST, &path).send().await.unwrap();
    let status = r.status();
    let record: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["project"], id.as_str());
    assert_eq!(record["tasks"].as_u64(), Some(n_tasks), "{record}");
    assert_eq!(record["done"], 0, "{record}");
    assert_eq!(record["not_run"].as_u64(), Some(n_tasks), "{record}");
    assert!(record["stop_ms"].as_u64().unwrap() < 10_000, "{record}");
    // Recorded as the client records it (a follower exits 5, `status` says cancelled), and
    // the results queue is gone.
    assert!(commanditaire::cancel::is_cancelled(&ws, &id));
    assert!(!queue_exists(&amqp_url(), &amqp::results_queue(&id)).await);

    let r = s.req(Method::POST, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already cancelled"),
        "{body}"
    );
}
