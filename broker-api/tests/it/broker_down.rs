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

/// The broker closes the service's connection (`rabbitmqctl close_connection`, as an
/// operator or a node going into maintenance would): the service notices and reconnects by
/// itself, and publish and get through the API work again within a few seconds.
#[tokio::test]
async fn a_connection_closed_by_the_broker_is_reopened_within_seconds() {
    let s = Service::start().await;
    let q = unique_queue("closed");
    s.create_queue(&q, "quorum").await;
    assert_eq!(s.publish(&q, "{\"n\": 0}").await.0, StatusCode::OK);

    let name = format!("broker-api {}", s.base.trim_start_matches("http://"));
    let closed = close_connections_named(&name);
    assert_eq!(closed, 1, "exactly the service's connection was closed");
    let start = Instant::now();
    // Publish and get until both succeed, as a client would.
    let mut round = 0;
    loop {
        round += 1;
        let (published, body) = s.publish(&q, &format!("{{\"n\": {round}}}")).await;
        if published == StatusCode::OK {
            break;
        }
        assert_eq!(published, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "publish still failing {:?} after the connection was closed: {body}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = start.elapsed();
    let (status, got) = s.get(&q, "ack").await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["message"]["payload"], "{\"n\": 0}");
    let (status, got) = s.get(&q, "ack").await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["message"]["payload"], format!("{{\"n\": {round}}}"));
    eprintln!("publish succeeded again {recovered:?} after the connection was closed");
    assert!(recovered < Duration::from_secs(5));
}

/// Closes, through `rabbitmqctl`, every connection of the tests' vhost named `name`;
/// returns how many.
fn close_connections_named(name: &str) -> usize {
    let vhost = crate::support::vhost();
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "--no-table-headers",
            "list_connections",
            "vhost",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl (the broker's CLI) is needed to close a connection");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One line per connection: vhost, pid, then the client properties as Erlang terms,
    // holding `{"connection_name","<name>"}`.
    let wanted = format!("{{\"connection_name\",\"{name}\"}}");
    let mut closed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(v), Some(pid), Some(props)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if v == vhost && props.contains(&wanted) {
            let out = std::process::Command::new("rabbitmqctl")
                .args(["close_connection", pid, "closed by a broker-api test"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "closing {pid}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            closed += 1;
        }
    }
    closed
}

/// A broker that stops answering without closing anything (the proxy holds every byte): a
/// publish is answered 503 once its confirm is overdue (`confirm_timeout`), well before the
/// request timeout, saying the message may or may not be queued; the service then finds the
/// connection dead (no channel opens) and gives it up; when the broker answers again, it
/// reconnects and publishing works again.
#[tokio::test]
async fn an_overdue_confirm_is_503_not_a_hang() {
    let proxy = Proxy::start(broker_addr()).await;
    let url = proxy.amqp_url();
    let s = Service::start_with(|c| {
        c.amqp_url = url;
        c.confirm_timeout = Duration::from_millis(700);
        c.request_timeout = Duration::from_secs(10);
    })
    .await;
    let q = unique_queue("frozen");
    s.create_queue(&q, "quorum").await;

    proxy.freeze();
    let start = Instant::now();
    let (status, body) = s.publish(&q, "{\"frozen\": true}").await;
    let took = start.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no confirm"),
        "{body}"
    );
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );

    // The connection looks up but does not answer: the service gives it up (not ready)
    // within seconds instead of waiting minutes for heartbeats.
    wait_for(
        &s,
        "/readyz",
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(5),
    )
    .await;
    eprintln!(
        "half-open connection given up {:?} after the publish",
        start.elapsed()
    );

    proxy.thaw();
    s.wait_ready(Duration::from_secs(15)).await;
    let (status, body) = s.publish(&q, "{\"thawed\": true}").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The new message is there; the held one may be too (the 503 said it might).
    let mut payloads = Vec::new();
    for _ in 0..2 {
        let (_, got) = s.get(&q, "ack").await;
        if let Some(payload) = got["message"]["payload"].as_str() {
            payloads.push(payload.to_string());
        }
    }
    assert!(
        payloads.iter().any(|p| p == "{\"thawed\": true}"),
        "{payloads:?}"
    );
}
