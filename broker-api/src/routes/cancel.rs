//! `POST /api/projects/{id}/cancel`: the client's `cancel P`, over HTTP. The same code
//! (`commanditaire::cancel`): every executant is told and stops the project's containers,
//! the cancellation is recorded in the workspace's tracking repository with the counts at
//! that moment, and the project's results queue is deleted.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use commanditaire::cancel::{self as client, CancelError, Cancelled};
use commanditaire::tracking::LoadError;
use commanditaire::workspace::Workspace;

use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// Cancels a project: its queued tasks are not run, its running containers are stopped
/// (every executant consuming `todo` is told and answers, or 10 s pass), the tracking
/// repository records the cancellation, a follower of the project exits (code 5), and its
/// results queue is deleted. A project that is complete or already cancelled is a conflict
/// (the client's exit 2).
#[utoipa::path(
    post, path = "/api/projects/{id}/cancel", tag = "projects",
    params(("id" = String, Path, description = "The project id")),
    responses(
        (status = 200, description = "Cancelled: what was recorded", body = Cancelled),
        (status = 400, description = "Unreadable project id", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such project, or no workspace", body = ErrorBody),
        (status = 409, description = "The project is complete, or was already cancelled", body = ErrorBody),
        (status = 503, description = "The broker is unreachable: nothing was recorded", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn cancel(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Cancelled>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::invalid(e.body_text()))?;
    tasks::model::validate_project_id(&id)
        .map_err(|e| ApiError::invalid(format!("project id: {e}")))?;
    let root = state
        .workspace
        .clone()
        .ok_or_else(super::projects::no_workspace)?;
    let url = state.amqp_url.clone();
    // Git work blocks; on its own thread, the cancellation also finishes if the client goes.
    let runtime = tokio::runtime::Handle::current();
    let done = tokio::task::spawn_blocking(move || runtime.block_on(run(&root, &url, &id)))
        .await
        .map_err(|e| ApiError::Internal(format!("cancelling panicked: {e}")))?;
    done.map(Json)
}

async fn run(root: &Arc<std::path::PathBuf>, url: &str, id: &str) -> Result<Cancelled, ApiError> {
    let unknown = || ApiError::NotFound(format!("no project {id:?} in the workspace"));
    // Opening a workspace creates what is missing: an empty one has no project anyway.
    if !FsPath::new(root.as_path())
        .join(tasks::layout::TRACKING)
        .exists()
    {
        return Err(unknown());
    }
    let ws = Workspace::open_or_init(root)
        .map_err(|e| ApiError::Internal(tasks::chain::one_line(&e)))?;
    let cancelled = client::cancel(url, &ws, id).await;
    if let Ok(record) = &cancelled {
        tracing::info!(
            project = id,
            done = record.done,
            not_run = record.not_run,
            "project cancelled"
        );
    }
    cancelled.map_err(|e| match e {
        CancelError::Finished(_) | CancelError::AlreadyCancelled(_) => {
            ApiError::Conflict(e.to_string())
        }
        CancelError::Load(LoadError::Missing { .. }) => unknown(),
        CancelError::Broker { .. } => ApiError::Unavailable(tasks::chain::one_line(&e)),
        e => ApiError::Internal(tasks::chain::one_line(&e)),
    })
}
