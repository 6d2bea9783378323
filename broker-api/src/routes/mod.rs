//! The routes, one module per group, and what they share: the JSON body extractor that
//! turns every rejection into an [`ApiError`].

pub mod cancel;
pub mod health;
pub mod messages;
pub mod page;
pub mod projects;
pub mod queues;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request};
use axum::http::{header, StatusCode, Uri};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::queue_name::QueueName;
use crate::AppState;

/// The routes that need no token: the page (its HTML and script hold no data; what it
/// shows comes from the API, with a token), health, readiness, the OpenAPI document.
pub fn public_router() -> Router<AppState> {
    Router::new()
        .route("/", get(page::index))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(crate::openapi::serve))
}

/// `/metrics`: protected like the API (any token, the `read` scope is enough).
pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(crate::metrics::serve))
}

/// The token-protected routes, relative to `/api`.
pub fn api_router() -> Router<AppState> {
    Router::new()
        .route("/queues", get(queues::list))
        .route(
            "/queues/{name}",
            get(queues::inspect)
                .put(queues::create)
                .delete(queues::delete),
        )
        .route("/queues/{name}/publish", post(messages::publish))
        .route("/queues/{name}/get", post(messages::get))
        .route("/projects", get(projects::list))
        .route("/projects/{id}", get(projects::one))
        .route("/projects/{id}/cancel", post(cancel::cancel))
}

/// The fallback: a JSON 404.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {}; the routes are listed in /openapi.json",
        uri.path()
    ))
}

/// A queue name from the path, validated.
pub struct QueuePath(pub QueueName);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueuePath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        QueueName::parse(&name).map(QueuePath)
    }
}

/// A JSON request body; an empty body is `T::default()` when `T` allows it (see
/// [`JsonOrDefault`]). Rejections are JSON errors: 413 over the size limit, 415 without a
/// JSON content type, 400 for JSON that does not fit.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state, true).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// Like [`ApiJson`], but an empty body (with or without a content type) means the default.
pub struct JsonOrDefault<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for JsonOrDefault<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state, false).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonOrDefault(T::default()));
        }
        parse(&bytes).map(JsonOrDefault)
    }
}

async fn body_bytes(req: Request, state: &AppState, need_json: bool) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let is_json = content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"));
    if content_type.is_some() && !is_json {
        return Err(ApiError::invalid(
            "the request body must be JSON: send `Content-Type: application/json`",
        ));
    }
    if need_json && !is_json {
        return Err(ApiError::invalid(
            "this route needs a JSON body with `Content-Type: application/json`",
        ));
    }
    Bytes::from_request(req, state).await.map_err(|e| match e {
        e if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge {
            limit: state.body_limit,
        },
        e => ApiError::invalid(format!("cannot read the request body: {}", e.body_text())),
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}
