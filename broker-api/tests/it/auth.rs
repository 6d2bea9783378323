use reqwest::{Method, StatusCode};

use crate::support::Service;

/// Every `/api/` route, with a request that would succeed with the token.
fn api_routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/api/queues"),
        (Method::GET, "/api/queues/todo"),
        (Method::PUT, "/api/queues/bapi-test-auth-never-created"),
        (Method::DELETE, "/api/queues/bapi-test-auth-never-created"),
        (Method::POST, "/api/queues/todo/publish"),
        (Method::POST, "/api/queues/todo/get"),
        (Method::GET, "/api/projects"),
        (Method::GET, "/api/projects/p"),
    ]
}

#[tokio::test]
async fn every_api_route_needs_the_token() {
    let s = Service::start().await;
    let wrong = format!("{}x", s.token);
    let short = s.token[..s.token.len() - 1].to_string();
    for (method, path) in api_routes() {
        let cases: Vec<(Option<String>, &str)> = vec![
            (None, "missing bearer token"),
            (
                Some("Basic Z3Vlc3Q6Z3Vlc3Q=".into()),
                "missing bearer token",
            ),
            (Some(format!("Bearer {wrong}")), "invalid bearer token"),
            (Some(format!("Bearer {short}")), "invalid bearer token"),
            // A header value's trailing space is not kept on the wire: this is `Bearer`.
            (Some("Bearer ".into()), "missing bearer token"),
            (
                Some("Bearer  ".to_string() + &s.token[..4]),
                "invalid bearer token",
            ),
        ];
        for (header, expected) in cases {
            let mut r = s.client.request(method.clone(), s.url(path));
            if let Some(h) = &header {
                r = r.header("authorization", h);
            }
            // A body that would be valid, so only the token can fail.
            let r = r
                .json(&serde_json::json!({"payload": "{}", "ack_mode": "requeue"}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {header:?}"
            );
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().starts_with(expected),
                "{body}"
            );
            assert!(
                !body.to_string().contains(&s.token),
                "the token is never echoed"
            );
        }
    }
    // The scheme is case-insensitive.
    let r = s
        .client
        .get(s.url("/api/queues"))
        .header("authorization", format!("bearer {}", s.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn public_routes_need_no_token() {
    let s = Service::start().await;
    for path in ["/", "/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = s.client.get(s.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("/openapi.json"));
}

#[tokio::test]
async fn token_files_and_generated_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
    let token = broker_api::Token::from_file(&file).unwrap();
    assert!(token.matches(b"from-a-file-0123456789"));
    assert!(broker_api::Token::from_file(&dir.path().join("none")).is_err());
    std::fs::write(&file, "\n").unwrap();
    assert!(broker_api::Token::from_file(&file).is_err());
    let s = Service::start_with(|c| {
        c.token = broker_api::Token::new("from-a-file-0123456789").unwrap()
    })
    .await;
    let r = s
        .client
        .get(s.url("/api/queues"))
        .bearer_auth("from-a-file-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn requests_time_out_as_json() {
    // A timeout shorter than any broker round trip: every broker route answers 504 JSON.
    let s = Service::start_with(|c| c.request_timeout = std::time::Duration::from_nanos(1)).await;
    let r = s.req(Method::GET, "/api/queues").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("took longer than"),
        "{body}"
    );
}
