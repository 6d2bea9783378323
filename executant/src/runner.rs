//! Running one task in a sandboxed container, through the Docker Engine API.
//!
//! N-queens tasks go to a worker container that serves tasks on its standard input (one JSON
//! line in, one out: [`crate::session`]), always through a lane ([`crate::lanes`]): by
//! default each task gets a lane and a container of its own; with `--reuse N` the tasks of a
//! project go to a few long-lived lanes whose containers serve up to N tasks each, in
//! batches. `exec` tasks run their command in their own (allowlisted) image.
//!
//! What comes out is a [`TaskResult`] (the task's own outcome, failed or not) or a
//! [`RunError`]: something outside the task went wrong and it should run again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::Docker;
use futures_util::StreamExt;
use tasks::model::ExecSpec;
use tasks::{Task, TaskOutput, TaskResult, TaskSpec};

use crate::config::Config;
use crate::containers::Containers;
use crate::lanes::{LaneOutcome, Lanes};
use crate::metrics::Metrics;
use crate::provenance::Origins;
use crate::sandbox::ContainerSpec;
use crate::script::{ScriptCache, ScriptError};
use crate::session::{keep_tail, timeout_reason};

pub use crate::error::RunError;
pub use crate::session::MAX_OUTPUT_BYTES;

/// Runs tasks in containers; shared by every task in flight.
pub struct Runner {
    containers: Containers,
    /// Places for containers of their own (`exec` tasks, N-queens tasks not in a reused
    /// lane): `--concurrency` of them, since the prefetch may hold more tasks.
    own_places: tokio::sync::Semaphore,
    lanes: Lanes,
    scripts: ScriptCache,
    origins: Origins,
}

impl Runner {
    /// Connects to the local Docker engine (`DOCKER_HOST` or the default socket) and
    /// negotiates the API version (older engines exist).
    pub async fn connect(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Result<Runner, bollard::errors::Error> {
        let docker = Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        let scripts = ScriptCache::in_dir(
            &config.scripts_dir,
            config.allowed_script_repos.clone(),
            config.script_fetch,
        );
        let containers = Containers {
            docker,
            config,
            metrics,
            adopted: Default::default(),
        };
        Ok(Runner {
            own_places: tokio::sync::Semaphore::new(usize::from(containers.config.concurrency)),
            lanes: Lanes::new(containers.clone()),
            origins: Origins::new(containers.clone()),
            containers,
            scripts,
        })
    }

    /// Whether the engine answers.
    pub async fn ping(&self) -> bool {
        self.containers.docker.ping().await.is_ok()
    }

    /// Runs `task` with its wall-clock limit, finishing before `deadline` (when its delivery
    /// must be settled): a task that would wait for a reused worker past `deadline` less its
    /// limit runs in a fresh container instead.
    pub async fn run(
        &self,
        task: &Task,
        deadline: tokio::time::Instant,
    ) -> Result<TaskResult, RunError> {
        let config = &self.containers.config;
        let timeout = Self::timeout_of(task, config);
        let start = Instant::now();
        let latest_start = deadline.checked_sub(timeout).unwrap_or(deadline);
        let mut result = match &task.spec {
            TaskSpec::Nqueens { .. } if config.reuse > 1 => {
                match self.lanes.run(task.clone(), timeout, latest_start).await {
                    LaneOutcome::Done(result) => result?,
                    LaneOutcome::Withdrawn => {
                        let _place = self.own_place(latest_start).await;
                        self.lanes.run_once(task.clone(), timeout).await?
                    }
                }
            }
            TaskSpec::Nqueens { .. } => {
                let _place = self.own_place(latest_start).await;
                self.lanes.run_once(task.clone(), timeout).await?
            }
            TaskSpec::Exec(spec) => {
                let _place = self.own_place(latest_start).await;
                self.run_exec(task, spec, timeout).await?
            }
        };
        result.duration_ms = start.elapsed().as_millis() as u64;
        result.executor = Some(config.name.clone());
        // The executant vouches for the task it ran, whatever the worker wrote.
        result.digest = Some(task.digest());
        Ok(result)
    }

    /// One of the `--concurrency` places for a container of its own, awaited until
    /// `latest_start` at most: a task that would start later could not finish before its
    /// delivery must be settled, so it then runs at once, above the bound (`None`).
    async fn own_place(
        &self,
        latest_start: tokio::time::Instant,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let place = tokio::time::timeout_at(latest_start, self.own_places.acquire()).await;
        let place = place.ok().and_then(Result::ok);
        if place.is_none() {
            tracing::info!("no place for a container within the task's time: running it at once");
        }
        place
    }

    /// The provenance of an outcome of `task` produced here: this executant, its engine, the
    /// image's digest and worker version, `started` until now, on delivery `attempt`.
    pub async fn provenance(
        &self,
        task: &Task,
        attempt: u32,
        started: time::OffsetDateTime,
    ) -> tasks::provenance::Provenance {
        self.origins.of(task, attempt, started).await
    }

    /// The wall-clock limit of `task` here.
    pub fn timeout_of(task: &Task, config: &Config) -> Duration {
        task.timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(config.default_timeout)
            .min(config.max_timeout)
    }

    /// Starts the warm workers ([`crate::warm`]) in the background, when tasks are served
    /// by reused workers, and reads the worker image's provenance meanwhile.
    pub fn warm_up(self: &Arc<Self>) {
        self.lanes.warm_up();
        let runner = self.clone();
        tokio::spawn(async move { runner.origins.prepare().await });
    }

    /// Removes every task container this executant started (and stopped ones left behind by
    /// executants that died), warm workers included; returns how many.
    pub async fn remove_leftovers(&self) -> usize {
        self.lanes.stop_all().await;
        self.containers.remove_leftovers().await
    }

    /// Kills the running containers of `project` that this executant started; how many.
    pub(crate) async fn stop_project(&self, project: &str) -> usize {
        self.containers.stop_project(project).await
    }

    async fn run_exec(
        &self,
        task: &Task,
        spec: &ExecSpec,
        timeout: Duration,
    ) -> Result<TaskResult, RunError> {
        let mut binds = Vec::new();
        let _script_dir = match &spec.script {
            Some(script) => {
                let dir = match self.scripts.materialize(script).await {
                    Ok(dir) => dir,
                    // The task asked for what this executant refuses: its own failure.
                    Err(ScriptError::Refused(reason)) => {
                        return Ok(TaskResult::failed(task, reason))
                    }
                    Err(e) => return Err(RunError::Script(e)),
                };
                binds.push(format!("{}:/task", dir.path().display()));
                Some(dir)
            }
            None => None,
        };
        let container = ContainerSpec {
            image: &spec.image,
            cmd: spec.command.clone(),
            stdin: false,
            read_only_binds: binds,
            executant: &self.containers.config.name,
            project: &task.project,
        };
        let c = &self.containers;
        let (id, attached) = c.create_and_start(&container).await?;
        let mut output = attached.output;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let collect = async {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) => {
                        stdout.extend_from_slice(&message);
                        if stdout.len() > MAX_OUTPUT_BYTES {
                            return false;
                        }
                    }
                    Ok(LogOutput::StdErr { message }) => keep_tail(&mut stderr, &message),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            true
        };
        let collected = tokio::time::timeout(timeout, collect).await;
        let result = match collected {
            Err(_) => Ok(TaskResult::failed(task, timeout_reason(timeout))),
            Ok(false) => Ok(TaskResult::failed(
                task,
                format!("standard output exceeds {} bytes", MAX_OUTPUT_BYTES),
            )),
            Ok(true) => match c.wait_exit(&id).await {
                Ok(exit) if exit.code == 0 => Ok(TaskResult::ok(
                    task,
                    TaskOutput::Exec {
                        stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    },
                )),
                Ok(_) => c
                    .exit_verdict(&id, &stderr)
                    .await
                    .map(|reason| TaskResult::failed(task, reason)),
                Err(e) => Err(e),
            },
        };
        c.discard(&id).await;
        result
    }
}
