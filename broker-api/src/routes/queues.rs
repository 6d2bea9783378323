//! `/api/queues`: list, inspect, create and delete queues.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{JsonOrDefault, QueuePath};
use crate::broker::{QueueStats, QueueType};
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// The body of `PUT /api/queues/{name}` (optional: an empty body creates a quorum queue).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQueue {
    /// The queue type; `quorum` when absent.
    #[serde(default, rename = "type")]
    pub kind: QueueType,
}

/// The answer to a create.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Created {
    /// The queue, as it is now.
    pub queue: QueueStats,
    /// False when the queue already existed (with compatible arguments).
    pub created: bool,
}

/// Options of `DELETE /api/queues/{name}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Delete even if the queue holds messages (they are dropped), and allow deleting the
    /// platform's `todo` and `todo.dead`.
    #[serde(default)]
    pub force: bool,
}

/// The answer to a delete.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Deleted {
    /// The queue deleted.
    pub deleted: String,
    /// How many messages it held.
    pub messages_dropped: u32,
}

/// Lists the queues the service knows (see the README: created or used through the API,
/// `--queue`, the platform's queues and the workspace's results queues) with their depth.
#[utoipa::path(
    get, path = "/api/queues", tag = "queues",
    responses(
        (status = 200, description = "The queues, sorted by name", body = [QueueStats]),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 503, description = "The broker is unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<QueueStats>>, ApiError> {
    let extra = match &state.workspace {
        Some(ws) => crate::projects::read_all(ws.clone())
            .await
            .map(|ps| ps.into_iter().map(|p| p.results_queue).collect())
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "no projects to list queues of");
                Vec::new()
            }),
        None => Vec::new(),
    };
    Ok(Json(state.broker.list(extra).await?))
}

/// One queue's depth and consumers.
#[utoipa::path(
    get, path = "/api/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "The queue name")),
    responses(
        (status = 200, description = "The queue", body = QueueStats),
        (status = 400, description = "Invalid queue name", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 503, description = "The broker is unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn inspect(
    State(state): State<AppState>,
    QueuePath(name): QueuePath,
) -> Result<Json<QueueStats>, ApiError> {
    Ok(Json(state.broker.inspect(&name).await?))
}

/// Creates a durable queue (idempotent: 200 when it already exists with compatible
/// arguments). `todo`, `todo.dead` and `results.<project>` are declared with the platform's
/// arguments.
#[utoipa::path(
    put, path = "/api/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "The queue name")),
    request_body(content = Option<CreateQueue>, description = "Optional; `{\"type\": \"quorum\"}` by default"),
    responses(
        (status = 201, description = "Created", body = Created),
        (status = 200, description = "It already existed", body = Created),
        (status = 400, description = "Invalid name or body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token's scope is too small: `user` at least, `admin` for the platform's queues (todo, todo.delay.*, todo.dead, results.*)", body = ErrorBody),
        (status = 409, description = "It exists with other arguments", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "The broker is unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["user"]))
)]
pub async fn create(
    State(state): State<AppState>,
    QueuePath(name): QueuePath,
    JsonOrDefault(body): JsonOrDefault<CreateQueue>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let (queue, created) = state.broker.declare(&name, body.kind).await?;
    if created {
        tracing::info!(queue = %name, kind = ?body.kind, "queue created");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Created { queue, created })))
}

/// Deletes a queue. Refuses (409) when it holds messages or is one of the platform's
/// work queues, unless `force=true`.
#[utoipa::path(
    delete, path = "/api/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "The queue name"), DeleteParams),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 400, description = "Invalid name or parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token's scope is too small: `user` at least, `admin` for the platform's queues (todo, todo.delay.*, todo.dead, results.*)", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 409, description = "Not empty, or a platform queue, without force", body = ErrorBody),
        (status = 503, description = "The broker is unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["user"]))
)]
pub async fn delete(
    State(state): State<AppState>,
    QueuePath(name): QueuePath,
    params: Result<Query<DeleteParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid(e.body_text()))?;
    let platform =
        tasks::amqp::is_todo_queue(name.as_str()) || name.as_str() == tasks::amqp::DEAD_QUEUE;
    if platform && !params.force {
        return Err(ApiError::Conflict(format!(
            "`{name}` is one of the platform's work queues; delete it with `?force=true` if you really mean it"
        )));
    }
    let dropped = state.broker.delete(&name, params.force).await?;
    tracing::info!(queue = %name, messages_dropped = dropped, "queue deleted");
    Ok(Json(Deleted {
        deleted: name.to_string(),
        messages_dropped: dropped,
    }))
}
