use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{unique_queue, Service};

#[tokio::test]
async fn publish_then_get_with_each_ack_mode() {
    let s = Service::start().await;
    // Classic: a requeued message keeps its place (a quorum queue puts it at the back).
    let q = unique_queue("msgs");
    s.create_queue(&q, "classic").await;

    let r = s
        .req(Method::POST, &format!("/api/queues/{q}/publish"))
        .json(&json!({"payload": "{\"task\": 1}", "message_id": "t-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"confirmed": true, "queue": q})
    );
    let binary = [0u8, 159, 146, 150];
    let r = s
        .req(Method::POST, &format!("/api/queues/{q}/publish"))
        .json(&json!({
            "payload": base64::engine::general_purpose::STANDARD.encode(binary),
            "payload_encoding": "base64",
            "content_type": "application/octet-stream",
            "persistent": false,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // requeue: a peek, the message stays.
    let (status, got) = s.get(&q, "requeue").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["empty"], false);
    let m = &got["message"];
    assert_eq!(m["payload"], "{\"task\": 1}");
    assert_eq!(m["payload_encoding"], "string");
    assert_eq!(m["content_type"], "application/json");
    assert_eq!(m["message_id"], "t-1");
    assert_eq!(m["redelivered"], false);
    assert_eq!(m["remaining"], 1);

    // ack: the same message again, now redelivered, and removed.
    let (_, got) = s.get(&q, "ack").await;
    assert_eq!(got["message"]["message_id"], "t-1");
    assert_eq!(got["message"]["redelivered"], true);

    // reject: the binary one, removed.
    let (_, got) = s.get(&q, "reject").await;
    let m = &got["message"];
    assert_eq!(m["payload_encoding"], "base64");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(m["payload"].as_str().unwrap())
            .unwrap(),
        binary
    );
    assert_eq!(m["content_type"], "application/octet-stream");
    assert_eq!(m["remaining"], 0);

    // Empty: a clear answer.
    let (status, got) = s.get(&q, "ack").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, json!({"empty": true, "message": null}));
}

#[tokio::test]
async fn missing_queue_is_404_and_does_not_disturb_other_requests() {
    let s = Service::start().await;
    let q = unique_queue("busy");
    s.create_queue(&q, "classic").await;
    let missing = unique_queue("missing");
    // Gets and publishes on a missing queue, interleaved with good publishes: the 404s close
    // leased channels only.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (c, base, token, q, missing) = (
            s.client.clone(),
            s.base.clone(),
            s.token.clone(),
            q.clone(),
            missing.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (target, path) = match i % 4 {
                0 => (missing.clone(), format!("/api/queues/{missing}/get")),
                1 => (missing.clone(), format!("/api/queues/{missing}/publish")),
                _ => (q.clone(), format!("/api/queues/{q}/publish")),
            };
            let r = c
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .json(&if i % 4 == 0 {
                    json!({"ack_mode": "ack"})
                } else {
                    json!({"payload": "{}"})
                })
                .send()
                .await
                .unwrap();
            (target == q, r.status(), r.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (good, status, body) = t.await.unwrap();
        if good {
            assert_eq!(status, StatusCode::OK, "{body}");
        } else {
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
            assert!(body.contains("does not exist"), "{body}");
        }
    }
    let (_, info) = s.get_json(&format!("/api/queues/{q}")).await;
    assert_eq!(info["messages"], 20);
}

/// A publish to a missing queue comes back as a `basic.return`, which lapin hands to the
/// next confirm settled on its channel: with publishes sharing a channel, a 404 went to
/// another request (its message was queued, it answered 404) and the missing queue's publish
/// answered 200 (6 of these 1,000 answers before the fix). One channel, a quorum queue
/// (its confirms come in batches), many concurrent publishes, half of them unroutable:
/// every answer must be its own.
#[tokio::test]
async fn an_unroutable_publish_never_answers_for_another() {
    let s = Service::start_with(|c| c.publish_channels = 1).await;
    let q = unique_queue("shared");
    s.create_queue(&q, "quorum").await;
    let missing = unique_queue("gone");
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (c, base, token) = (s.client.clone(), s.base.clone(), s.token.clone());
        let target = if i % 2 == 0 {
            q.clone()
        } else {
            missing.clone()
        };
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(format!("{base}/api/queues/{target}/publish"))
                .bearer_auth(token)
                .json(&json!({ "payload": format!("{i}") }))
                .send()
                .await
                .unwrap();
            (i % 2 == 0, r.status(), r.text().await.unwrap())
        }));
    }
    let mut wrong = Vec::new();
    for t in tasks {
        let (good, status, body) = t.await.unwrap();
        let expected = if good {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        if status != expected {
            wrong.push(format!(
                "{status} for a publish expecting {expected}: {body}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{} wrong answers: {wrong:?}", wrong.len());
    let (_, info) = s.get_json(&format!("/api/queues/{q}")).await;
    assert_eq!(
        info["messages"], 500,
        "every answered publish queued, no other"
    );
}

#[tokio::test]
async fn bad_bodies_are_400_and_too_large_is_413() {
    let s = Service::start_with(|c| c.body_limit = 4096).await;
    let q = unique_queue("bodies");
    s.create_queue(&q, "classic").await;
    let publish = format!("/api/queues/{q}/publish");
    let get = format!("/api/queues/{q}/get");
    let cases: Vec<(&str, &str, Option<&str>, &str)> = vec![
        (&publish, "{", Some("application/json"), "invalid JSON body"),
        (
            &publish,
            "{}",
            Some("application/json"),
            "missing field `payload`",
        ),
        (
            &publish,
            r#"{"payload": 5}"#,
            Some("application/json"),
            "invalid type",
        ),
        (
            &publish,
            r#"{"payload": "not json"}"#,
            Some("application/json"),
            "the payload is not JSON",
        ),
        (
            &publish,
            r#"{"payload": "%%%", "payload_encoding": "base64"}"#,
            Some("application/json"),
            "not valid base64",
        ),
        (
            &publish,
            r#"{"payload": "{}", "extra": 1}"#,
            Some("application/json"),
            "unknown field",
        ),
        (
            &publish,
            r#"{"payload": "{}"}"#,
            Some("text/plain"),
            "must be JSON",
        ),
        (&publish, r#"{"payload": "{}"}"#, None, "needs a JSON body"),
        (
            &get,
            "{}",
            Some("application/json"),
            "missing field `ack_mode`",
        ),
        (
            &get,
            r#"{"ack_mode": "maybe"}"#,
            Some("application/json"),
            "unknown variant",
        ),
    ];
    for (path, body, ct, expected) in cases {
        let mut r = s.req(Method::POST, path).body(body.to_string());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path} {body}");
        let err: serde_json::Value = r.json().await.unwrap();
        assert!(
            err["error"].as_str().unwrap().contains(expected),
            "{body}: {err}"
        );
    }
    let big = json!({"payload": "x".repeat(5000)});
    let r = s
        .req(Method::POST, &publish)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        err["error"],
        "request body too large: the limit is 4096 bytes"
    );
    let (_, info) = s.get_json(&format!("/api/queues/{q}")).await;
    assert_eq!(info["messages"], 0, "nothing bad was published");
}

#[tokio::test]
async fn quorum_queues_publish_and_get() {
    let s = Service::start().await;
    let q = unique_queue("quorum-msgs");
    s.create_queue(&q, "quorum").await;
    for i in 0..3 {
        assert_eq!(
            s.publish(&q, &format!("{{\"i\": {i}}}")).await.0,
            StatusCode::OK
        );
    }
    for i in 0..3 {
        let (status, got) = s.get(&q, "ack").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got["message"]["payload"], format!("{{\"i\": {i}}}"));
        assert_eq!(got["message"]["remaining"], 2 - i);
    }
    assert_eq!(s.get(&q, "ack").await.1["empty"], true);
}
