//! `/api/queues/{name}/publish` and `/api/queues/{name}/get`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use base64::Engine;
use lapin::types::{AMQPValue, ShortString};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, QueuePath};
use crate::broker::AckMode;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// How a payload is written in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayloadEncoding {
    /// The payload is the text itself (UTF-8).
    #[default]
    String,
    /// The payload is base64 (standard alphabet, padded): for binary messages.
    Base64,
}

/// A message to publish to a queue (through the default exchange).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The message body, as `payload_encoding` says.
    pub payload: String,
    /// `string` (default) or `base64`.
    #[serde(default)]
    pub payload_encoding: PayloadEncoding,
    /// The AMQP content type; `application/json` by default, in which case the payload must
    /// be JSON (the platform's consumers dead-letter anything else).
    #[serde(default)]
    pub content_type: Option<String>,
    /// The AMQP `message_id` (the platform uses the task id).
    #[serde(default)]
    pub message_id: Option<String>,
    /// Persistent (delivery mode 2, the default) or transient.
    #[serde(default = "yes")]
    pub persistent: bool,
}

fn yes() -> bool {
    true
}

/// The answer to a publish: sent only once the broker confirmed the message.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Published {
    /// Always true: an unconfirmed message is an error answer.
    pub confirmed: bool,
    /// The queue.
    pub queue: String,
}

/// How to get a message.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    /// What happens to the message after it is read: `ack` removes it, `requeue` puts it
    /// back (a peek), `reject` removes it through the queue's dead-letter exchange if any.
    pub ack_mode: AckMode,
}

/// A message read from a queue.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct GotMessage {
    /// The body: the text when it is UTF-8, else base64.
    pub payload: String,
    /// `string` or `base64`.
    pub payload_encoding: PayloadEncoding,
    /// The AMQP content type, if set.
    pub content_type: Option<String>,
    /// The AMQP message id, if set.
    pub message_id: Option<String>,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
    /// Messages left in the queue after this one.
    pub remaining: u32,
    /// The AMQP headers, as JSON (strings, numbers, booleans; other values as text).
    pub headers: BTreeMap<String, serde_json::Value>,
}

/// The answer to a get: `empty` is true, and `message` null, when the queue had none.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct GetResponse {
    /// True when the queue was empty.
    pub empty: bool,
    /// The message, unless empty.
    pub message: Option<GotMessage>,
}

/// Publishes a message to a queue and answers once the broker has confirmed it.
#[utoipa::path(
    post, path = "/api/queues/{name}/publish", tag = "messages",
    params(("name" = String, Path, description = "The queue name")),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Confirmed by the broker", body = Published),
        (status = 400, description = "Invalid name or body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token's scope is too small: `user` at least, `admin` for the platform's queues (todo, todo.delay.*, todo.dead, results.*)", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 502, description = "The broker refused the message (nack)", body = ErrorBody),
        (status = 503, description = "The broker is unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["user"]))
)]
pub async fn publish(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiJson(request): ApiJson<PublishRequest>,
) -> Result<Json<Published>, ApiError> {
    let body = match request.payload_encoding {
        PayloadEncoding::String => request.payload.into_bytes(),
        PayloadEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(request.payload.as_bytes())
            .map_err(|e| ApiError::invalid(format!("the payload is not valid base64: {e}")))?,
    };
    let content_type = request
        .content_type
        .unwrap_or_else(|| tasks::amqp::CONTENT_TYPE.to_string());
    if content_type == tasks::amqp::CONTENT_TYPE {
        serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(|e| {
            ApiError::invalid(format!(
                "the payload is not JSON ({e}); set `content_type` for other messages"
            ))
        })?;
    }
    let mut props = BasicProperties::default()
        .with_content_type(short(&content_type, "content_type")?)
        .with_delivery_mode(if request.persistent { 2 } else { 1 });
    if let Some(id) = &request.message_id {
        props = props.with_message_id(short(id, "message_id")?);
    }
    let result = state.broker.publish(&queue, &body, props).await;
    let outcome = if result.is_ok() {
        "confirmed"
    } else {
        "failed"
    };
    state.metrics.publishes.with_label_values(&[outcome]).inc();
    result?;
    Ok(Json(Published {
        confirmed: true,
        queue: queue.to_string(),
    }))
}

fn short(value: &str, field: &str) -> Result<ShortString, ApiError> {
    if value.len() > 255 {
        return Err(ApiError::invalid(format!(
            "`{field}` is {} bytes long; AMQP allows at most 255",
            value.len()
        )));
    }
    Ok(ShortString::from(value))
}

/// Gets the next message of a queue, settled as `ack_mode` says; `{"empty": true}` when
/// the queue has none.
#[utoipa::path(
    post, path = "/api/queues/{name}/get", tag = "messages",
    params(("name" = String, Path, description = "The queue name")),
    request_body = GetRequest,
    responses(
        (status = 200, description = "The next message, or empty", body = GetResponse),
        (status = 400, description = "Invalid name or body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token's scope is too small: `user` at least, `admin` for the platform's queues (todo, todo.delay.*, todo.dead, results.*)", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "The broker is unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["user"]))
)]
pub async fn get(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiJson(request): ApiJson<GetRequest>,
) -> Result<Json<GetResponse>, ApiError> {
    let result = state.broker.get(&queue, request.ack_mode).await;
    let outcome = match &result {
        Ok(Some(_)) => "message",
        Ok(None) => "empty",
        Err(_) => "failed",
    };
    state.metrics.gets.with_label_values(&[outcome]).inc();
    let Some(got) = result? else {
        return Ok(Json(GetResponse {
            empty: true,
            message: None,
        }));
    };
    let delivery = got.delivery;
    let props = &delivery.properties;
    let (payload, payload_encoding) = match String::from_utf8(delivery.data) {
        Ok(text) => (text, PayloadEncoding::String),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
            PayloadEncoding::Base64,
        ),
    };
    let headers = props
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), header_json(v)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(GetResponse {
        empty: false,
        message: Some(GotMessage {
            payload,
            payload_encoding,
            content_type: props.content_type().as_ref().map(|s| s.to_string()),
            message_id: props.message_id().as_ref().map(|s| s.to_string()),
            redelivered: delivery.redelivered,
            remaining: got.message_count,
            headers,
        }),
    }))
}

fn header_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::ShortString(s) => Value::String(s.to_string()),
        AMQPValue::LongString(s) => Value::String(s.to_string()),
        other => Value::String(format!("{other:?}")),
    }
}
