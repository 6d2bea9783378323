//! The OpenAPI document against the running service: every documented operation answers a
//! valid request with a documented status and a body that fits the documented schema; no
//! operation is undocumented or untested; generated bad input never gets a 5xx, and gets a
//! documented status.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use broker_api::Scope;

use crate::support::{unique_queue, write_tracking, Service};

/// A valid request for each documented operation: (method, path template, concrete path,
/// body).
fn valid_requests(
    q: &str,
    fresh: &str,
    cancel: &str,
) -> Vec<(&'static str, &'static str, String, Option<Value>)> {
    vec![
        ("get", "/healthz", "/healthz".into(), None),
        ("get", "/readyz", "/readyz".into(), None),
        ("get", "/metrics", "/metrics".into(), None),
        ("get", "/api/queues", "/api/queues".into(), None),
        (
            "put",
            "/api/queues/{name}",
            format!("/api/queues/{fresh}"),
            Some(json!({"type": "classic"})),
        ),
        (
            "get",
            "/api/queues/{name}",
            format!("/api/queues/{q}"),
            None,
        ),
        (
            "post",
            "/api/queues/{name}/publish",
            format!("/api/queues/{q}/publish"),
            Some(json!({"payload": "{\"x\": 1}"})),
        ),
        (
            "post",
            "/api/queues/{name}/get",
            format!("/api/queues/{q}/get"),
            Some(json!({"ack_mode": "ack"})),
        ),
        (
            "delete",
            "/api/queues/{name}",
            format!("/api/queues/{fresh}"),
            None,
        ),
        ("get", "/api/projects", "/api/projects".into(), None),
        (
            "get",
            "/api/projects/{id}",
            "/api/projects/walker".into(),
            None,
        ),
        (
            "post",
            "/api/projects/{id}/cancel",
            format!("/api/projects/{cancel}/cancel"),
            None,
        ),
    ]
}

async fn start() -> (Service, Value, tempfile::TempDir) {
    let ws = tempfile::tempdir().unwrap();
    write_tracking(&ws.path().join("tracking"), &[("walker", 10, 4, 0, false)]);
    let path = ws.path().to_path_buf();
    let s = Service::start_with(|c| {
        c.workspace = Some(path);
        c.body_limit = 2048;
    })
    .await;
    let doc: Value = s
        .client
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (s, doc, ws)
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    ops
}

fn documented(op: &Value, status: StatusCode) -> Option<Value> {
    op["responses"].get(status.as_str()).cloned()
}

async fn send(
    s: &Service,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    ct: Option<&str>,
    token: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut r = s.client.request(method, s.url(path));
    if let Some(token) = token {
        r = r.bearer_auth(token);
    }
    if let Some(ct) = ct {
        r = r.header("content-type", ct);
    }
    if let Some(body) = body {
        r = r.body(body);
    }
    let r = r.send().await.unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

/// Checks `value` against a JSON schema of the document (the subset utoipa emits).
fn check_schema(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return check_schema(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(any) = schema
        .get("oneOf")
        .or(schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        return if any.iter().any(|s| check_schema(doc, s, value, at).is_ok()) {
            Ok(())
        } else {
            Err(format!("{at}: {value} matches none of {schema}"))
        };
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check_schema(doc, s, value, at)?;
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => true,
        });
        if !ok {
            return Err(format!("{at}: {value} is not of type {t}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            return Err(format!("{at}: {value} not in {e:?}"));
        }
    }
    if let (Some(obj), true) = (value.as_object(), value.is_object()) {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap();
            if !obj.contains_key(req) {
                return Err(format!("{at}: missing required `{req}` in {value}"));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in obj {
                if let Some(ps) = props.get(k) {
                    check_schema(doc, ps, v, &format!("{at}.{k}"))?;
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check_schema(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn check_response(doc: &Value, op: &Value, what: &str, status: StatusCode, body: &[u8]) {
    let Some(response) = documented(op, status) else {
        panic!(
            "{what}: status {status} is not documented; body {}",
            String::from_utf8_lossy(body)
        );
    };
    if let Some(schema) = response.pointer("/content/application~1json/schema") {
        let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(body))
        });
        check_schema(doc, schema, &value, "$").unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let (s, doc, ws) = start().await;
    let q = unique_queue("walk");
    s.create_queue(&q, "classic").await;
    let fresh = unique_queue("walk-fresh");
    s.delete_later(&fresh);
    // A project recorded as the client does, to cancel (an id of its own: cancellations
    // are kept a week for every executant).
    let cancel = format!("bapi-walk-{}", crate::support::random_hex(6));
    let workspace = commanditaire::workspace::Workspace::open_or_init(ws.path()).unwrap();
    let project = tasks::split::nqueens_project(&cancel, 6, 0).unwrap();
    commanditaire::tracking::record_project(&workspace, &project, &json!({})).unwrap();
    let table = valid_requests(&q, &fresh, &cancel);

    let documented_ops: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let tested: BTreeSet<(String, String)> = table
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented_ops, tested,
        "every documented operation is tested, and only those"
    );

    for (method, template, path, body) in &table {
        let op = doc["paths"][*template][*method].clone();
        let what = format!("{method} {path}");
        let body = body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
        let ct = body.as_ref().map(|_| "application/json");
        // The scope the document says the operation needs (none: a public route).
        let scope = documented_scope(&op);
        if let Some(scope) = scope {
            // A token of the next smaller scope: 403 as documented, naming the scope needed
            // (sent before the valid request, so nothing was done yet).
            if let Some(smaller) = Scope::ALL.iter().rev().find(|s| **s < scope) {
                let (status, bytes) = send(
                    &s,
                    method,
                    path,
                    body.clone(),
                    ct,
                    Some(s.token_of(*smaller)),
                )
                .await;
                let label = format!("{what} with the {smaller} token");
                assert_eq!(status, StatusCode::FORBIDDEN, "{label}");
                check_response(&doc, &op, &label, status, &bytes);
                let answer: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(answer["scope"], scope.name(), "{label}: {answer}");
            }
        }
        let token = scope.map(|scope| s.token_of(scope));
        let (status, bytes) = send(&s, method, path, body, ct, token).await;
        assert!(
            status.is_success(),
            "{what} with the {scope:?} token: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        check_response(&doc, &op, &what, status, &bytes);

        // Secured operations: without the token, 401 as documented.
        if scope.is_some() {
            let (status, bytes) = send(&s, method, path, None, None, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} without token");
            check_response(&doc, &op, &format!("{what} without token"), status, &bytes);
        }
    }
    // The routes the document leaves out on purpose are there too.
    for path in ["/", "/openapi.json"] {
        let (status, _) = send(&s, "get", path, None, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

/// The scope an operation's security requirement names (`[{"bearer": ["user"]}]`).
fn documented_scope(op: &Value) -> Option<Scope> {
    let security = op.get("security")?;
    let roles = security[0]["bearer"].as_array().expect("bearer roles");
    assert_eq!(roles.len(), 1, "one scope per operation: {security}");
    let name = roles[0].as_str().unwrap();
    Some(
        *Scope::ALL
            .iter()
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("unknown scope {name}")),
    )
}

/// Bad values for path parameters (percent-encoded where needed, so they reach the route).
fn bad_params() -> Vec<String> {
    vec![
        "amq.x".into(),
        "a%20b".into(),
        "%00".into(),
        "%C3%A9t%C3%A9".into(),
        "x".repeat(300),
        "a%2Fb".into(),
        "%27%3B--".into(),
        "%F0%9F%92%A9".into(),
        "%FF%FE".into(),
    ]
}

/// A path, a body and a content type.
type BadRequest = (String, Option<Vec<u8>>, Option<&'static str>);

fn bad_bodies() -> Vec<(Vec<u8>, Option<&'static str>)> {
    let j = Some("application/json");
    vec![
        (b"".to_vec(), j),
        (b"{".to_vec(), j),
        (b"null".to_vec(), j),
        (b"[]".to_vec(), j),
        (b"{}".to_vec(), j),
        (b"42".to_vec(), j),
        (br#"{"payload": 5}"#.to_vec(), j),
        (
            br#"{"payload": "{}", "payload_encoding": "rot13"}"#.to_vec(),
            j,
        ),
        (
            br#"{"payload": "AA==", "payload_encoding": "base64"}"#.to_vec(),
            j,
        ),
        (br#"{"payload": "{}", "content_type": ""}"#.to_vec(), j),
        (
            format!(
                r#"{{"payload": "{{}}", "message_id": "{}"}}"#,
                "m".repeat(300)
            )
            .into_bytes(),
            j,
        ),
        (br#"{"ack_mode": 1}"#.to_vec(), j),
        (br#"{"type": "stream"}"#.to_vec(), j),
        (br#"{"type": null}"#.to_vec(), j),
        (vec![0xff, 0xfe, 0x00], j),
        (br#"{"payload": "{}"}"#.to_vec(), Some("text/plain")),
        (br#"{"payload": "{}"}"#.to_vec(), None),
        (
            format!(r#"{{"payload": "{}"}}"#, "x".repeat(4000)).into_bytes(),
            j,
        ),
    ]
}

#[tokio::test]
async fn generated_bad_input_never_gets_a_5xx() {
    let (s, doc, _ws) = start().await;
    // A queue that exists, for bodies to be judged on their own; fresh names for PUT.
    let q = unique_queue("fuzz");
    s.create_queue(&q, "classic").await;
    let mut checked = 0;
    for (method, template, op) in operations(&doc) {
        let has_param = template.contains('{');
        let mut paths: Vec<String> = Vec::new();
        if has_param {
            for p in bad_params() {
                paths.push(template.replace("{name}", &p).replace("{id}", &p));
            }
        }
        let valid_name = if method == "put" || method == "delete" {
            let fresh = unique_queue("fuzz-put");
            s.delete_later(&fresh);
            fresh
        } else {
            q.clone()
        };
        let valid = template
            .replace("{name}", &valid_name)
            .replace("{id}", "walker");
        let mut requests: Vec<BadRequest> = Vec::new();
        for p in &paths {
            requests.push((p.clone(), Some(b"{}".to_vec()), Some("application/json")));
        }
        if op.get("requestBody").is_some() {
            for (body, ct) in bad_bodies() {
                requests.push((valid.clone(), Some(body), ct));
            }
        }
        if method == "delete" {
            for query in [
                "?force=maybe",
                "?force=",
                "?other=1",
                "?force=true&force=false",
            ] {
                requests.push((format!("{valid}{query}"), None, None));
            }
        }
        for (path, body, ct) in requests {
            let what = format!(
                "{method} {} body {:?} ct {ct:?}",
                &path[..path.len().min(80)],
                body.as_ref()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(60)]).to_string())
            );
            let (status, bytes) = send(&s, &method, &path, body, ct, Some(&s.token)).await;
            assert!(
                !status.is_server_error(),
                "{what}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
            check_response(&doc, &op, &what, status, &bytes);
            checked += 1;
        }
        // Whatever happened, clean up a queue a PUT might have created.
        if method == "put" {
            let _ = send(
                &s,
                "delete",
                &format!("/api/queues/{valid_name}?force=true"),
                None,
                None,
                Some(&s.token),
            )
            .await;
        }
    }
    assert!(checked > 100, "only {checked} bad requests");
}
