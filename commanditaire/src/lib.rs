//! The client: turns a request into a project, records it in git, publishes its tasks,
//! follows their results and reassembles the exact answer.

pub mod broker;
pub mod local;
pub mod tracking;
pub mod workspace;

use std::path::PathBuf;

use tasks::{Project, ProjectResult};

pub use tracking::{BatchPolicy, Tracker};
pub use workspace::Workspace;

/// How a project runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The broker URL.
    pub amqp_url: String,
    /// The workspace folder.
    pub workspace: PathBuf,
    /// Compute in-process instead of through the broker and containers.
    pub local: bool,
    /// Publish and return without following.
    pub detach: bool,
    /// When tracking commits happen.
    pub batch: BatchPolicy,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The project id.
    pub project: String,
    /// Tasks published by this run (a resumed run publishes only what never was).
    pub published: usize,
    /// The reassembled result; `None` when detached.
    pub result: Option<ProjectResult>,
}

/// Why a project could not run.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The workspace.
    #[error(transparent)]
    Workspace(#[from] workspace::WorkspaceError),
    /// The broker or the tracking while following.
    #[error(transparent)]
    Follow(#[from] broker::FollowError),
    /// A project that is not in the workspace or cannot be read back.
    #[error("{0}")]
    Project(String),
}

/// Records a new project, then runs it (see [`resume`]).
pub async fn submit(
    options: &RunOptions,
    project: Project,
    watcher: &dyn broker::Watcher,
) -> Result<RunReport, ClientError> {
    let ws = Workspace::open_or_init(&options.workspace)?;
    let config = serde_json::json!({
        "mode": if options.local { "local" } else { "broker" },
        "broker": tasks::amqp::redact_url(&options.amqp_url),
        "worker_image": "taskplatform/worker:latest",
        "exec_images": project.tasks.iter().filter_map(|t| match &t.spec {
            tasks::TaskSpec::Exec(e) => Some(e.image.clone()),
            _ => None,
        }).collect::<std::collections::BTreeSet<_>>(),
    });
    tracking::record_project(&ws, &project, &config)?;
    let tracker = Tracker::load(&ws, project, options.batch);
    drive(options, tracker, watcher).await
}

/// Picks a recorded project up where it stopped: publishes what was never published (not
/// what already has an outcome), then follows it to the end.
pub async fn resume(
    options: &RunOptions,
    id: &str,
    watcher: &dyn broker::Watcher,
) -> Result<RunReport, ClientError> {
    let ws = Workspace::open_or_init(&options.workspace)?;
    let project = tracking::load_project(&ws, id).map_err(ClientError::Project)?;
    let tracker = Tracker::load(&ws, project, options.batch);
    drive(options, tracker, watcher).await
}

async fn drive(
    options: &RunOptions,
    mut tracker: Tracker,
    watcher: &dyn broker::Watcher,
) -> Result<RunReport, ClientError> {
    watcher.progress(tracker.done());
    let mut published = 0;
    if options.local {
        let todo: Vec<_> = tracker
            .project()
            .tasks
            .iter()
            .filter(|t| !tracker.has(t.index))
            .cloned()
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut error = None;
        local::compute(&todo, threads, |result| {
            tracker.record(result);
            watcher.progress(tracker.done());
            if tracker.due() {
                if let Err(e) = tracker.flush() {
                    error.get_or_insert(e);
                }
            }
        });
        if let Some(e) = error {
            return Err(e.into());
        }
    } else {
        if !tracker.published() {
            published = broker::publish_missing(&options.amqp_url, &mut tracker).await?;
        }
        if options.detach {
            return Ok(RunReport {
                project: tracker.project().id.clone(),
                published,
                result: None,
            });
        }
        broker::follow(&options.amqp_url, &mut tracker, watcher).await?;
    }
    Ok(RunReport {
        project: tracker.project().id.clone(),
        published,
        result: Some(tracker.finish()?),
    })
}
