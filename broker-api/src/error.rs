//! The one error type of the HTTP API: every failure becomes a JSON body
//! `{"error": "...", "status": N}` (plus `rule` for invalid input) with a message a person
//! can act on. Client errors are logged at debug level, server errors as warnings.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tasks::amqp::BrokerError;
use utoipa::ToSchema;

use crate::scope::Scope;

/// The JSON body of every error answer.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
    /// The HTTP status, repeated for convenience.
    pub status: u16,
    /// The rule the input broke, for invalid input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The scope the request needs, on a 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token: send `Authorization: Bearer <token>` (the service's tokens are in BROKER_API_READ_TOKEN, BROKER_API_TOKEN and BROKER_API_ADMIN_TOKEN, or their _FILE)")]
    MissingToken,
    /// A token that is not one of the service's.
    #[error("invalid bearer token")]
    WrongToken,
    /// A valid token whose scope is too small for the request.
    #[error("forbidden: {why}")]
    Forbidden {
        /// The scope the request needs.
        needed: Scope,
        /// Why, and which token has it.
        why: String,
    },
    /// Input that breaks a rule.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// The rule, when there is one to state.
        rule: Option<&'static str>,
    },
    /// A body over the limit.
    #[error("request body too large: the limit is {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request that conflicts with the state of the broker.
    #[error("{0}")]
    Conflict(String),
    /// The broker refused the operation for a reason outside the request.
    #[error("{0}")]
    Refused(String),
    /// The broker cannot be reached.
    #[error(
        "the broker is unreachable ({0}); broker-api reconnects in the background, retry shortly"
    )]
    Unavailable(String),
    /// The request took too long.
    #[error("the request took longer than {after:?} and was abandoned; retry, or check the broker's load")]
    Timeout {
        /// The limit.
        after: Duration,
    },
    /// A bug or an unexpected failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::WrongToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Refused(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short label for metrics (`errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::MissingToken => "missing_token",
            ApiError::WrongToken => "wrong_token",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::Invalid { .. } => "invalid",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Refused(_) => "refused",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Invalid input, without a rule to state.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Invalid {
            message: message.into(),
            rule: None,
        }
    }

    /// Maps a broker failure on `queue` to an answer: 404 for a missing queue, 409 for a
    /// declaration that conflicts, 503 for a lost connection.
    pub fn from_broker(error: BrokerError, queue: &str) -> Self {
        // A hard (connection-level) error, such as CONNECTION_FORCED when an operator or a
        // node shutting down closes the connection: the connection is gone, whatever the
        // code, and the service reconnects.
        if closes_connection(&error) {
            return ApiError::Unavailable(error.to_string());
        }
        match error.reply_code() {
            Some(404) => ApiError::NotFound(format!("queue `{queue}` does not exist")),
            Some(405) => ApiError::Conflict(format!(
                "queue `{queue}` is exclusive to another connection"
            )),
            Some(406) => ApiError::Conflict(format!(
                "the broker refused the operation on queue `{queue}`: {}",
                broker_message(&error)
            )),
            Some(403) => ApiError::Refused(format!(
                "the broker refused access to queue `{queue}`: {}",
                broker_message(&error)
            )),
            Some(_) => ApiError::Refused(error.to_string()),
            None => match &error {
                BrokerError::NotConfirmed {
                    why: tasks::amqp::Unconfirmed::Unroutable,
                    ..
                } => {
                    ApiError::NotFound(format!(
                        "queue `{queue}` does not exist (the broker returned the message as unroutable)"
                    ))
                }
                BrokerError::NotConfirmed { .. } => ApiError::Refused(format!(
                    "the broker did not accept the message for `{queue}` (nack): the queue may be full or a resource alarm is on"
                )),
                _ => ApiError::Unavailable(error.to_string()),
            },
        }
    }
}

/// Whether the broker answered with a connection-level (hard) error, which closes the
/// whole connection rather than one channel.
fn closes_connection(error: &BrokerError) -> bool {
    let source = match error {
        BrokerError::Connect { source, .. } | BrokerError::Operation { source, .. } => source,
        BrokerError::NotConfirmed { .. } => return false,
    };
    matches!(
        source.kind(),
        lapin::ErrorKind::ProtocolError(e)
            if matches!(e.kind(), lapin::protocol::AMQPErrorKind::Hard(_))
    )
}

fn broker_message(error: &BrokerError) -> String {
    let source = match error {
        BrokerError::Connect { source, .. } | BrokerError::Operation { source, .. } => source,
        BrokerError::NotConfirmed { .. } => return error.to_string(),
    };
    match source.kind() {
        lapin::ErrorKind::ProtocolError(e) => e.get_message().to_string(),
        _ => source.to_string(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let rule = match &self {
            ApiError::Invalid { rule, .. } => rule.map(str::to_string),
            _ => None,
        };
        let scope = match &self {
            ApiError::Forbidden { needed, .. } => Some(*needed),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            status: status.as_u16(),
            rule,
            scope,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(ErrorKind(self.kind()));
        response
    }
}

/// Marks a response as an error of this kind, for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);
