//! The client: turns a request into a project, records it in git, publishes its tasks,
//! follows their results and reassembles the exact answer.

pub mod broker;
pub mod cancel;
pub mod failpoint;
pub mod follow;
pub mod generate;
pub mod github;
pub mod history;
pub mod inbox;
pub mod local;
pub mod priority;
pub mod project_lock;
pub mod remote;
pub mod replicas;
pub mod status;
pub mod trace;
pub mod tracking;
pub mod verify;
pub mod window;
pub mod workspace;

use std::path::{Path, PathBuf};

use tasks::{Project, ProjectResult};

pub use tracking::{ensure_new, BatchPolicy, ProjectExists, Tracker};
pub use workspace::Workspace;

/// Where a project's tasks run, and whether this client follows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In this process on every core: no broker, no container (`--local`).
    Local,
    /// Published to the broker and followed to the end.
    Broker,
    /// Published to the broker, not followed (`--detach`).
    Detached,
}

/// The exit codes of `commanditaire`: the one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The project completed and its result is exact (or there was nothing to judge).
    Exact = 0,
    /// An error stopped it.
    Error = 1,
    /// Bad usage, including a new project given an id that exists.
    Usage = 2,
    /// Some tasks failed for good.
    TasksFailed = 3,
    /// `verify` found a mismatch.
    Mismatch = 4,
    /// The project was cancelled (`cancel`), seen by its follower or `resume`.
    Cancelled = 5,
}

impl Exit {
    /// The exit code for what a command came to: `Ok(None)` when there is no result to
    /// judge (`status`, a detached run), `Ok(Some(result))` when a project finished, or the
    /// error that stopped it (its whole chain of sources is looked at).
    pub fn of(outcome: Result<Option<&ProjectResult>, &(dyn std::error::Error + 'static)>) -> Exit {
        match outcome {
            Ok(None) => Exit::Exact,
            Ok(Some(result)) if result.complete => Exit::Exact,
            Ok(Some(_)) => Exit::TasksFailed,
            Err(e) if e.is::<MismatchFound>() => Exit::Mismatch,
            Err(e) if std::iter::successors(Some(e), |e| e.source()).any(is_cancelled) => {
                Exit::Cancelled
            }
            Err(e) if std::iter::successors(Some(e), |e| e.source()).any(is_usage) => Exit::Usage,
            Err(_) => Exit::Error,
        }
    }
}

/// `verify` found a mismatch (exit code 4); the mismatches were printed.
#[derive(Debug, thiserror::Error)]
#[error("verify found mismatches")]
pub struct MismatchFound;

/// Whether `e` says the project was cancelled.
fn is_cancelled(e: &(dyn std::error::Error + 'static)) -> bool {
    use broker::FollowError;
    matches!(e.downcast_ref(), Some(FollowError::Cancelled { .. }))
        || matches!(
            e.downcast_ref(),
            Some(ClientError::Follow(FollowError::Cancelled { .. }))
        )
}

/// Whether `e` is bad usage: an id that exists or is no id, a project that is not in the
/// workspace, a request or file that makes no valid project.
fn is_usage(e: &(dyn std::error::Error + 'static)) -> bool {
    use generate::GenerateError as G;
    use project_lock::LockError;
    use tracking::LoadError;
    // `transparent` variants hide their inner error from the chain: match them whole.
    e.is::<ProjectExists>()
        || matches!(e.downcast_ref(), Some(ClientError::Exists(_)))
        || matches!(e.downcast_ref(), Some(LoadError::Missing { .. }))
        || matches!(
            e.downcast_ref(),
            Some(ClientError::Load(LoadError::Missing { .. }))
        )
        || matches!(e.downcast_ref(), Some(LockError::InvalidId { .. }))
        || matches!(
            e.downcast_ref(),
            Some(ClientError::Locked(LockError::InvalidId { .. }))
        )
        || matches!(
            e.downcast_ref(),
            Some(
                cancel::CancelError::Finished(_)
                    | cancel::CancelError::AlreadyCancelled(_)
                    | cancel::CancelError::Load(LoadError::Missing { .. })
            )
        )
        || matches!(
            e.downcast_ref(),
            Some(
                G::Exists(_)
                    | G::Invalid(_)
                    | G::InvalidFile { .. }
                    | G::NotSpecs { .. }
                    | G::ScriptName(_)
            )
        )
}

/// The status of project `id`, or of every project (`None`), as recorded in the tracking
/// repository of the workspace at `root`: a project with no new outcome for
/// `stalled_after` is stalled.
pub fn status(
    root: &Path,
    id: Option<&str>,
    stalled_after: std::time::Duration,
) -> Result<Vec<status::ProjectStatus>, tracking::LoadError> {
    let ws = Workspace::open_or_init(root)?;
    status::status(&ws, id, stalled_after)
}

/// The provenance of project `id` (its tasks commit, images and each counted outcome's
/// provenance), as `status P --json` shows it.
pub fn provenance(root: &Path, id: &str) -> Result<serde_json::Value, tracking::LoadError> {
    let ws = Workspace::open_or_init(root)?;
    history::provenance(&ws, id)
}

/// How a project runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The broker URL.
    pub amqp_url: String,
    /// The workspace folder.
    pub workspace: PathBuf,
    /// Where the tasks run, and whether they are followed.
    pub mode: Mode,
    /// When tracking commits happen.
    pub batch: BatchPolicy,
    /// Where the repositories are pushed (`None`: nowhere).
    pub remote: Option<remote::RemoteOptions>,
    /// On resume: give the failed tasks another run (`resume --retry-failed`).
    pub retry_failed: bool,
    /// Print one JSON line on standard output per batch of results committed
    /// (`--progress-json`, [`tracking::BatchRecorded`]).
    pub progress_json: bool,
    /// A new project: the executants each task runs on (`--replicas N`, 1 to
    /// [`replicas::MAX_REPLICAS`]; 1 is the plain platform). A resumed project keeps the
    /// number it was recorded with.
    pub replicas: u32,
    /// A new project's priority (`--priority`); a resumed one keeps its recorded one.
    pub priority: tasks::Priority,
    /// While following: at most this many of the project's tasks published and without an
    /// outcome (`--max-in-flight`, [`window`]); 0: every task published at once.
    pub max_in_flight: usize,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The project id.
    pub project: String,
    /// Tasks published by this run (a resumed run publishes only what never was, what was
    /// lost, and the failed tasks it was asked to retry).
    pub published: usize,
    /// The reassembled result; `None` when detached.
    pub result: Option<ProjectResult>,
    /// Results this run received for tasks that already had one, and ignored (a task run
    /// twice after a fault is counted once).
    pub duplicates: usize,
    /// Messages of the results queue that were not for this project, dropped.
    pub junk: usize,
    /// A replicated project's runs and disagreements (`result.json`'s `replicas`).
    pub replicas: Option<serde_json::Value>,
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
    #[error(transparent)]
    Load(#[from] tracking::LoadError),
    /// A new project was given the id of one the workspace already has.
    #[error(transparent)]
    Exists(#[from] ProjectExists),
    /// Another client holds the project.
    #[error(transparent)]
    Locked(#[from] project_lock::LockError),
    /// The project is recorded but its tasks could not all be published (the broker was
    /// unreachable, say).
    #[error("project {project} is recorded in {workspace} but its tasks were not all published: `commanditaire resume {project}` will publish them")]
    NotPublished {
        /// The project.
        project: String,
        /// The workspace folder.
        workspace: String,
        /// Why publishing failed.
        #[source]
        source: broker::FollowError,
    },
    /// The remotes could not be prepared (looked up, created): nothing was recorded yet.
    #[error("preparing the remote repositories")]
    RemoteSetup(#[source] remote::RemoteError),
    /// A push failed; the workspace keeps everything.
    #[error("{error}; project {project} is recorded in {workspace} (nothing is lost): fix the remote, then `commanditaire resume {project}` pushes again")]
    Remote {
        /// The project.
        project: String,
        /// The workspace folder.
        workspace: String,
        /// What went wrong.
        error: remote::RemoteError,
    },
}

/// Records a new project, then runs it (see [`resume`]).
pub async fn submit(
    options: &RunOptions,
    project: Project,
    watcher: &dyn broker::Watcher,
) -> Result<RunReport, ClientError> {
    let ws = Workspace::open_or_init(&options.workspace)?;
    let config = serde_json::json!({
        "mode": if options.mode == Mode::Local { "local" } else { "broker" },
        "broker": tasks::amqp::redact_url(&options.amqp_url),
        "worker_image": "taskplatform/worker:latest",
        "exec_images": project.tasks.iter().filter_map(|t| match &t.spec {
            tasks::TaskSpec::Exec(e) => Some(e.image.clone()),
            _ => None,
        }).collect::<std::collections::BTreeSet<_>>(),
        priority::PRIORITY_FIELD: options.priority,
    });
    let mut config = config;
    if options.replicas > 1 {
        // Only a replicated project says so: a plain project's record stays as it was.
        config["replicas"] = options.replicas.into();
    }
    let _lock = project_lock::ProjectLock::acquire(ws.root(), &project.id)?;
    ensure_new(&ws, &project.id)?;
    let targets = resolve_remotes(options).await?;
    tracking::record_project(&ws, &project, &config)?;
    let tracker = Tracker::load(&ws, project, options.batch);
    drive(options, tracker, targets, watcher, follow::Start::Fresh).await
}

/// Picks a recorded project up where it stopped: publishes what was never published (not
/// what already has an outcome), then follows it to the end.
pub async fn resume(
    options: &RunOptions,
    id: &str,
    watcher: &dyn broker::Watcher,
) -> Result<RunReport, ClientError> {
    let ws = Workspace::open_or_init(&options.workspace)?;
    // Held until the project is followed to its end: one follower at a time, and the
    // record is read only once no other client can write to it.
    let _lock = project_lock::ProjectLock::acquire(ws.root(), id)?;
    let project = tracking::load_project(&ws, id)?;
    if cancel::is_cancelled(&ws, id) {
        let project = id.to_string();
        return Err(broker::FollowError::Cancelled { project }.into());
    }
    let targets = resolve_remotes(options).await?;
    let tracker = Tracker::load(&ws, project, options.batch);
    drive(options, tracker, targets, watcher, follow::Start::Resumed).await
}

/// Prints a batch as one JSON line on standard output, at once (scripts read it as it comes).
fn print_batch(batch: &tracking::BatchRecorded) {
    use std::io::Write;
    let mut line = serde_json::to_value(batch).expect("a batch serialises");
    line["event"] = "batch".into();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Looks the remotes up (creating missing GitHub repositories) before anything is pushed.
async fn resolve_remotes(options: &RunOptions) -> Result<Option<Vec<remote::Target>>, ClientError> {
    let Some(remote) = &options.remote else {
        return Ok(None);
    };
    let targets = match remote {
        remote::RemoteOptions::Base { base, token } => {
            Ok(remote::base_targets(base, token.clone()))
        }
        remote::RemoteOptions::GitHub(gh) => github::ensure_repositories(gh).await,
    };
    targets.map(Some).map_err(ClientError::RemoteSetup)
}

fn remote_error(ws: &Workspace, project: &str, error: remote::RemoteError) -> ClientError {
    ClientError::Remote {
        project: project.to_string(),
        workspace: ws.root().display().to_string(),
        error,
    }
}

/// Pushes now on a blocking thread of the runtime (git2 is synchronous).
async fn push_now(
    pusher: &Option<std::sync::Arc<remote::Pusher>>,
    tracker: &Tracker,
) -> Result<(), ClientError> {
    let Some(pusher) = pusher else {
        return Ok(());
    };
    let p = pusher.clone();
    tokio::task::spawn_blocking(move || p.push_now())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        .map_err(|source| {
            let ws = tracker.workspace();
            remote_error(ws, &tracker.project().id, source)
        })
}

async fn drive(
    options: &RunOptions,
    mut tracker: Tracker,
    targets: Option<Vec<remote::Target>>,
    watcher: &dyn broker::Watcher,
    start: follow::Start,
) -> Result<RunReport, ClientError> {
    // The project is recorded: push it before any work is spent on it, then in the
    // background as results are committed, and once more when it is complete.
    let pusher = targets.map(|t| {
        std::sync::Arc::new(remote::Pusher::new(
            tracker.workspace(),
            t,
            remote::PUSH_INTERVAL,
        ))
    });
    push_now(&pusher, &tracker).await?;
    if let Some(p) = &pusher {
        tracker.notify_commits(p.requester());
    }
    if options.progress_json {
        tracker.notify_batches(print_batch);
    }
    watcher.total(tracker.project().tasks.len());
    watcher.progress(tracker.done());
    let mut published = 0;
    let mut junk = 0;
    if options.mode == Mode::Local {
        let todo = tracker.remaining();
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
        let windowed = options.mode == Mode::Broker && options.max_in_flight > 0;
        let mut window = None;
        if !tracker.published() {
            let first = if windowed {
                window::publish_first(&options.amqp_url, &mut tracker, options.max_in_flight)
                    .await
                    .map(|(n, w)| {
                        window = w;
                        n
                    })
            } else {
                broker::publish_missing(&options.amqp_url, &mut tracker).await
            };
            published = first.map_err(|source| ClientError::NotPublished {
                project: tracker.project().id.clone(),
                workspace: tracker.workspace().root().display().to_string(),
                source,
            })?;
        }
        if options.retry_failed {
            let again = tracker.retry_failed()?;
            if !again.is_empty() {
                let id = tracker.project().id.clone();
                let trace = trace::project_trace(tracker.workspace(), &id);
                let priority = priority::project_priority(tracker.workspace(), &id);
                broker::publish(&options.amqp_url, &id, &trace, priority, &again)
                    .await
                    .map_err(broker::FollowError::from)?;
                published += again.len();
                watcher.progress(tracker.done());
            }
        }
        if options.mode == Mode::Detached {
            push_now(&pusher, &tracker).await?;
            return Ok(RunReport {
                project: tracker.project().id.clone(),
                published,
                result: None,
                duplicates: 0,
                junk: 0,
                replicas: None,
            });
        }
        // Tasks this run just published are in `todo`: not lost.
        let start = if published > 0 {
            follow::Start::Fresh
        } else {
            start
        };
        let seen = follow::follow_windowed(&options.amqp_url, &mut tracker, watcher, start, window)
            .await?;
        published += seen.republished + seen.published;
        junk = seen.junk;
    }
    let result = tracker.finish()?;
    push_now(&pusher, &tracker).await?;
    Ok(RunReport {
        project: tracker.project().id.clone(),
        published,
        result: Some(result),
        duplicates: tracker.duplicates(),
        junk,
        replicas: tracker.replicas_report(),
    })
}
