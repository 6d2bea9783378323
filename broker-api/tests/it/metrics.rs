use reqwest::{Method, StatusCode};

use crate::support::{unique_queue, Service};

#[tokio::test]
async fn metrics_count_requests_publishes_gets_and_errors() {
    let s = Service::start().await;
    let q = unique_queue("metrics");
    s.create_queue(&q, "classic").await;
    assert_eq!(s.publish(&q, "{}").await.0, StatusCode::OK);
    assert_eq!(s.get(&q, "ack").await.0, StatusCode::OK);
    assert_eq!(s.get(&q, "ack").await.0, StatusCode::OK);
    let r = s.client.get(s.url("/api/queues")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .req(Method::GET, "/api/queues/amq.nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let text = s
        .req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "broker_api_publishes_total{outcome=\"confirmed\"} 1",
        "broker_api_gets_total{outcome=\"message\"} 1",
        "broker_api_gets_total{outcome=\"empty\"} 1",
        "broker_api_errors_total{kind=\"missing_token\"} 1",
        "broker_api_errors_total{kind=\"invalid\"} 1",
        "broker_api_broker_up 1",
        "broker_api_requests_total{method=\"POST\",route=\"/api/queues/{name}/get\",status=\"200\"} 2",
        "broker_api_request_duration_seconds_count{method=\"POST\",route=\"/api/queues/{name}/publish\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
    assert!(!text.contains(&q), "queue names do not make series");
    assert!(!text.contains(&s.token));
}
