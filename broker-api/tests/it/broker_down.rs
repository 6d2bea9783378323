use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{broker_addr, unique_queue, Proxy, Service};

/// The broker "goes down" (a proxy between the service and RabbitMQ drops every connection
/// and refuses new ones): routes that need it answer 503 JSON, readiness fails, health does
/// not; when it is back, the service reconnects by itself.
#[tokio::test]
async fn broker_down_is_503_and_the_service_recovers() {
    let proxy = Proxy::start(broker_addr()).await;
    let url = proxy.amqp_url();
    let s = Service::start_with(|c| c.amqp_url = url).await;
    let q = unique_queue("down");
    s.create_queue(&q, "classic").await;
    assert_eq!(s.publish(&q, "{\"before\": true}").await.0, StatusCode::OK);

    proxy.cut();
    wait_for(
        &s,
        "/readyz",
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(5),
    )
    .await;
    let requests = [
        (Method::GET, "/api/queues".to_string(), None),
        (Method::GET, format!("/api/queues/{q}"), None),
        (
            Method::PUT,
            format!("/api/queues/{q}"),
            Some(json!({"type": "classic"})),
        ),
        (Method::DELETE, format!("/api/queues/{q}"), None),
        (
            Method::POST,
            format!("/api/queues/{q}/publish"),
            Some(json!({"payload": "{}"})),
        ),
        (
            Method::POST,
            format!("/api/queues/{q}/get"),
            Some(json!({"ack_mode": "ack"})),
        ),
    ];
    for (method, path, body) in &requests {
        let mut r = s.req(method.clone(), path);
        if let Some(body) = body {
            r = r.json(body);
        }
        let r = r.send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}"
        );
        assert_eq!(r.headers()["retry-after"], "1");
        let body: serde_json::Value = r.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("broker is unreachable"), "{body}");
        assert!(!error.contains("guest:guest"), "no password in errors");
    }
    let r = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "alive while the broker is down");
    let metrics = s
        .req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("broker_api_broker_up 0"));

    proxy.restore();
    s.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(s.publish(&q, "{\"after\": true}").await.0, StatusCode::OK);
    let (_, got) = s.get(&q, "ack").await;
    assert_eq!(got["message"]["payload"], "{\"before\": true}");
    let (_, got) = s.get(&q, "ack").await;
    assert_eq!(got["message"]["payload"], "{\"after\": true}");
}

async fn wait_for(s: &Service, path: &str, want: StatusCode, within: Duration) {
    let start = Instant::now();
    loop {
        let status = s.client.get(s.url(path)).send().await.unwrap().status();
        if status == want {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{path} still {status} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
