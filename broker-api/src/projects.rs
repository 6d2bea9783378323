//! The projects of a workspace, read from `<workspace>/tracking` at HEAD with git2 (the
//! working tree may be mid-write; a commit is whole): each project's progress is its
//! `<project>/progress.json` ([`tasks::progress::Progress`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tasks::layout;
use tasks::progress::Progress;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A project's progress, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectView {
    /// The project id.
    pub project: String,
    /// What the project asked for (`{"kind": "nqueens", "n": .., "depth": ..}` or
    /// `{"kind": "tasks"}`).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Number of tasks.
    pub tasks: u32,
    /// Tasks with an outcome.
    pub done: u32,
    /// Tasks that failed.
    pub failed: u32,
    /// Whether every task has an outcome and the result was written.
    pub complete: bool,
    /// `done / tasks`, from 0 to 1.
    pub fraction: f64,
    /// When the progress was recorded (RFC 3339).
    pub updated: String,
    /// The queue the project's results arrive on.
    pub results_queue: String,
}

impl From<Progress> for ProjectView {
    fn from(p: Progress) -> Self {
        ProjectView {
            fraction: p.fraction(),
            spec: serde_json::to_value(&p.spec).unwrap_or(serde_json::Value::Null),
            results_queue: tasks::amqp::results_queue(&p.project),
            project: p.project,
            tasks: p.tasks,
            done: p.done,
            failed: p.failed,
            complete: p.complete,
            updated: p.updated,
        }
    }
}

/// Every project of the workspace, sorted by id (off the async runtime).
pub async fn read_all(workspace: Arc<PathBuf>) -> Result<Vec<ProjectView>, ApiError> {
    tokio::task::spawn_blocking(move || read_tracking(&workspace.join(layout::TRACKING)))
        .await
        .map_err(|e| ApiError::Internal(format!("reading the tracking repository panicked: {e}")))?
}

/// Every project recorded at HEAD of the tracking repository `repo` (none when the
/// repository does not exist yet or has no commit).
pub fn read_tracking(repo: &Path) -> Result<Vec<ProjectView>, ApiError> {
    if !repo.exists() {
        return Ok(Vec::new());
    }
    let git = |e: git2::Error| {
        ApiError::Internal(format!(
            "cannot read the tracking repository {}: {}",
            repo.display(),
            e.message()
        ))
    };
    let repository = git2::Repository::open(repo).map_err(git)?;
    let head = match repository.head() {
        Ok(head) => head,
        Err(e)
            if e.code() == git2::ErrorCode::UnbornBranch
                || e.code() == git2::ErrorCode::NotFound =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(git(e)),
    };
    let tree = head.peel_to_tree().map_err(git)?;
    let mut projects = Vec::new();
    for entry in tree.iter() {
        if entry.kind() != Some(git2::ObjectType::Tree) {
            continue;
        }
        let Ok(name) = entry.name() else { continue };
        let Ok(file) = tree.get_path(Path::new(&layout::progress(name))) else {
            continue;
        };
        let object = file.to_object(&repository).map_err(git)?;
        let Some(blob) = object.as_blob() else {
            continue;
        };
        match serde_json::from_slice::<Progress>(blob.content()) {
            Ok(progress) => projects.push(ProjectView::from(progress)),
            Err(e) => {
                tracing::warn!(project = name, error = %e, "unreadable progress.json; skipped")
            }
        }
    }
    projects.sort_by(|a, b| a.project.cmp(&b.project));
    Ok(projects)
}
