//! `/api/projects`: the platform's projects and their progress, where a workspace is
//! configured.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;

use crate::error::{ApiError, ErrorBody};
use crate::projects::{read_all, ProjectView};
use crate::AppState;

/// The answer of a project route when no workspace is configured.
pub(crate) fn no_workspace() -> ApiError {
    ApiError::NotFound(
        "no workspace is configured: start broker-api with --workspace DIR (env WORKSPACE) to see projects"
            .into(),
    )
}

/// The projects recorded in the workspace's tracking repository, with their progress.
#[utoipa::path(
    get, path = "/api/projects", tag = "projects",
    responses(
        (status = 200, description = "The projects, sorted by id", body = [ProjectView]),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No workspace is configured", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<ProjectView>>, ApiError> {
    let workspace = state.workspace.clone().ok_or_else(no_workspace)?;
    Ok(Json(read_all(workspace).await?))
}

/// One project's progress.
#[utoipa::path(
    get, path = "/api/projects/{id}", tag = "projects",
    params(("id" = String, Path, description = "The project id")),
    responses(
        (status = 200, description = "The project", body = ProjectView),
        (status = 400, description = "Unreadable project id", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such project, or no workspace", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn one(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ProjectView>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::invalid(e.body_text()))?;
    let workspace = state.workspace.clone().ok_or_else(no_workspace)?;
    read_all(workspace)
        .await?
        .into_iter()
        .find(|p| p.project == id)
        .map(Json)
        .ok_or_else(|| {
            let shown: String = id.chars().take(64).collect();
            ApiError::NotFound(format!("no project {shown:?} in the workspace"))
        })
}
