//! Running one task in a sandboxed container, through the Docker Engine API.
//!
//! N-queens tasks go to a worker container that serves tasks on its standard input (one JSON
//! line in, one out); with `reuse > 1` a container serves several tasks of one project before
//! it is replaced. `exec` tasks run their command in their own (allowlisted) image.
//!
//! What comes out is a [`TaskResult`] (the task's own outcome, failed or not) or a
//! [`RunError`]: something outside the task went wrong and it should run again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptions, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use tasks::model::ExecSpec;
use tasks::{Task, TaskOutput, TaskResult, TaskSpec};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::config::Config;
use crate::sandbox::{self, ContainerSpec, SandboxError};
use crate::script::ScriptCache;

/// The most standard output a task may produce (a result must stay a reasonable message).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// How much of a failing task's standard error goes into its reason.
const STDERR_TAIL: usize = 512;

/// Why a task must run again: nothing the task did.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Docker engine could not be reached or refused an operation.
    #[error("Docker engine: {0}")]
    Engine(#[from] bollard::errors::Error),
    /// The container died for a reason outside the task (killed from outside, engine restart).
    #[error("container lost: {0}")]
    Lost(String),
    /// The engine did not apply the sandbox: no task may run here.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The task's script could not be fetched from its repository.
    #[error("fetching the task's script: {0}")]
    Script(String),
}

/// A worker container serving tasks on its standard input.
struct Session {
    id: String,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    buffer: Vec<u8>,
    stderr: Vec<u8>,
    served: u32,
}

/// Runs tasks in containers; shared by every task in flight.
pub struct Runner {
    docker: Docker,
    config: Arc<Config>,
    idle: Mutex<HashMap<String, Vec<Session>>>,
    scripts: ScriptCache,
}

impl Runner {
    /// Connects to the local Docker engine (`DOCKER_HOST` or the default socket) and
    /// negotiates the API version (older engines exist).
    pub async fn connect(config: Arc<Config>) -> Result<Runner, bollard::errors::Error> {
        let docker = Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        Ok(Runner {
            docker,
            config,
            idle: Mutex::new(HashMap::new()),
            scripts: ScriptCache::new(),
        })
    }

    /// Whether the engine answers.
    pub async fn ping(&self) -> bool {
        self.docker.ping().await.is_ok()
    }

    /// Runs `task` with its wall-clock limit.
    pub async fn run(&self, task: &Task) -> Result<TaskResult, RunError> {
        let timeout = task
            .timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(self.config.default_timeout)
            .min(self.config.max_timeout);
        let start = Instant::now();
        let mut result = match &task.spec {
            TaskSpec::Nqueens { .. } => self.run_in_worker(task, timeout).await?,
            TaskSpec::Exec(spec) => self.run_exec(task, spec, timeout).await?,
        };
        result.duration_ms = start.elapsed().as_millis() as u64;
        result.executor = Some(self.config.name.clone());
        Ok(result)
    }

    async fn run_in_worker(&self, task: &Task, timeout: Duration) -> Result<TaskResult, RunError> {
        let mut session = match self.take_idle(&task.project).await {
            Some(s) => s,
            None => self.start_session().await?,
        };
        let mut line = task.to_json();
        line.push(b'\n');
        let exchange = async {
            session
                .input
                .write_all(&line)
                .await
                .map_err(|e| RunError::Lost(format!("writing the task to the worker: {e}")))?;
            session.input.flush().await.ok();
            read_line(&mut session).await
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        match outcome {
            Err(_) => {
                self.discard(&session.id).await;
                Ok(TaskResult::failed(task, timeout_reason(timeout)))
            }
            Ok(Ok(Some(line))) => {
                session.served += 1;
                let result = TaskResult::from_json(&line).map_err(|e| {
                    RunError::Lost(format!("the worker answered something unreadable: {e}"))
                });
                match result {
                    Ok(r) if r.project == task.project && r.index == task.index => {
                        self.give_back(task.project.clone(), session).await;
                        Ok(r)
                    }
                    Ok(_) => {
                        self.discard(&session.id).await;
                        Err(RunError::Lost(
                            "the worker answered for another task".into(),
                        ))
                    }
                    Err(e) => {
                        self.discard(&session.id).await;
                        Err(e)
                    }
                }
            }
            Ok(Ok(None)) => {
                // The worker exited without answering: why decides whose fault it was.
                let verdict = self.exit_verdict(&session.id, &session.stderr).await;
                self.discard(&session.id).await;
                verdict.map(|reason| TaskResult::failed(task, reason))
            }
            Ok(Err(e)) => {
                self.discard(&session.id).await;
                Err(e)
            }
        }
    }

    async fn start_session(&self) -> Result<Session, RunError> {
        let cmd = vec![
            "serve".to_string(),
            "--max-tasks".to_string(),
            self.config.reuse.to_string(),
        ];
        let spec = ContainerSpec {
            image: &self.config.worker_image,
            cmd,
            stdin: true,
            read_only_binds: vec![],
            executant: &self.config.name,
        };
        let (id, attached) = self.create_and_start(&spec).await?;
        Ok(Session {
            id,
            input: attached.input,
            output: attached.output,
            buffer: Vec::new(),
            stderr: Vec::new(),
            served: 0,
        })
    }

    /// Creates a container, checks its sandbox, attaches to it and starts it.
    async fn create_and_start(
        &self,
        spec: &ContainerSpec<'_>,
    ) -> Result<(String, AttachContainerResults), RunError> {
        let body = sandbox::create_body(spec, &self.config.limits);
        let id = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await?
            .id;
        let prepared = async {
            let inspect = self.docker.inspect_container(&id, None).await?;
            sandbox::verify(&inspect, &self.config.limits)?;
            let options = AttachContainerOptionsBuilder::default()
                .stdin(spec.stdin)
                .stdout(true)
                .stderr(true)
                .stream(true)
                .build();
            let attached = self.docker.attach_container(&id, Some(options)).await?;
            self.docker.start_container(&id, None).await?;
            Ok::<_, RunError>(attached)
        }
        .await;
        match prepared {
            Ok(attached) => Ok((id, attached)),
            Err(e) => {
                self.discard(&id).await;
                Err(e)
            }
        }
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
                let dir = self
                    .scripts
                    .materialize(script)
                    .await
                    .map_err(RunError::Script)?;
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
            executant: &self.config.name,
        };
        let (id, attached) = self.create_and_start(&container).await?;
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
            Ok(true) => match self.wait_exit(&id).await {
                Ok((0, _)) => Ok(TaskResult::ok(
                    task,
                    TaskOutput::Exec {
                        stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    },
                )),
                Ok(_) => self
                    .exit_verdict(&id, &stderr)
                    .await
                    .map(|reason| TaskResult::failed(task, reason)),
                Err(e) => Err(e),
            },
        };
        self.discard(&id).await;
        result
    }

    /// Waits for a container to stop and returns its exit code and whether it ran out of
    /// memory.
    async fn wait_exit(&self, id: &str) -> Result<(i64, bool), RunError> {
        for _ in 0..100 {
            let inspect = self.docker.inspect_container(id, None).await?;
            let state = inspect.state.unwrap_or_default();
            if state.running != Some(true) {
                return Ok((
                    state.exit_code.unwrap_or(-1),
                    state.oom_killed.unwrap_or(false),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(RunError::Lost(
            "the container did not stop after its output ended".into(),
        ))
    }

    /// Decides why a container stopped: `Ok(reason)` when the task failed by itself,
    /// `Err` when something outside it killed the container.
    async fn exit_verdict(&self, id: &str, stderr: &[u8]) -> Result<String, RunError> {
        let (code, oom) = self.wait_exit(id).await?;
        let tail = String::from_utf8_lossy(stderr).trim().to_string();
        let with_tail = |s: String| {
            if tail.is_empty() {
                s
            } else {
                format!("{s}: {tail}")
            }
        };
        if oom {
            return Ok(format!(
                "out of memory (limit {} MiB)",
                self.config.limits.memory_bytes / (1024 * 1024)
            ));
        }
        match code {
            // SIGKILL that the memory limit did not cause: docker kill, an engine restart.
            137 => Err(RunError::Lost(
                "the container was killed from outside".into(),
            )),
            0 => Err(RunError::Lost("the worker exited without answering".into())),
            code => Ok(with_tail(format!("exited with code {code}"))),
        }
    }

    async fn take_idle(&self, project: &str) -> Option<Session> {
        self.idle.lock().await.get_mut(project)?.pop()
    }

    async fn give_back(&self, project: String, session: Session) {
        if session.served >= self.config.reuse {
            self.discard(&session.id).await;
            return;
        }
        let mut idle = self.idle.lock().await;
        let total: usize = idle.values().map(Vec::len).sum();
        if total >= self.config.concurrency as usize {
            // Too many idle containers (projects changed): drop one of another project.
            let victim = idle
                .iter_mut()
                .find(|(p, v)| **p != project && !v.is_empty())
                .and_then(|(_, v)| v.pop());
            if let Some(victim) = victim {
                drop(idle);
                self.discard(&victim.id).await;
                idle = self.idle.lock().await;
            }
        }
        idle.entry(project).or_default().push(session);
    }

    /// Kills and removes a container, ignoring errors (it may already be gone).
    async fn discard(&self, id: &str) {
        let kill = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let _ = self.docker.kill_container(id, Some(kill)).await;
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self.docker.remove_container(id, Some(remove)).await;
    }

    /// Removes the idle worker containers (shutdown, reconnect).
    pub async fn drain_idle(&self) {
        let sessions: Vec<Session> = self
            .idle
            .lock()
            .await
            .drain()
            .flat_map(|(_, v)| v)
            .collect();
        for s in sessions {
            self.discard(&s.id).await;
        }
    }

    /// Removes every task container this executant started, and any other executant's task
    /// container that has stopped (left behind by an executant that died).
    pub async fn remove_leftovers(&self) -> usize {
        self.drain_idle().await;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}=task", sandbox::ROLE_LABEL)],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(list) = self.docker.list_containers(Some(options)).await else {
            return 0;
        };
        let mut removed = 0;
        for c in list {
            let ours = c
                .labels
                .as_ref()
                .and_then(|l| l.get(sandbox::EXECUTANT_LABEL))
                .is_some_and(|n| *n == self.config.name);
            let stopped = c.state.as_ref().map(|s| s.to_string()).as_deref() != Some("running");
            if let Some(id) = c.id {
                if ours || stopped {
                    self.discard(&id).await;
                    removed += 1;
                }
            }
        }
        removed
    }
}

async fn read_line(session: &mut Session) -> Result<Option<Vec<u8>>, RunError> {
    loop {
        if let Some(pos) = session.buffer.iter().position(|&b| b == b'\n') {
            let rest = session.buffer.split_off(pos + 1);
            let mut line = std::mem::replace(&mut session.buffer, rest);
            line.pop();
            return Ok(Some(line));
        }
        match session.output.next().await {
            Some(Ok(LogOutput::StdOut { message })) => {
                session.buffer.extend_from_slice(&message);
                if session.buffer.len() > MAX_OUTPUT_BYTES {
                    return Err(RunError::Lost("the worker's answer is too long".into()));
                }
            }
            Some(Ok(LogOutput::StdErr { message })) => keep_tail(&mut session.stderr, &message),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(RunError::Engine(e)),
            None => return Ok(None),
        }
    }
}

fn keep_tail(buffer: &mut Vec<u8>, message: &[u8]) {
    buffer.extend_from_slice(message);
    if buffer.len() > STDERR_TAIL {
        buffer.drain(..buffer.len() - STDERR_TAIL);
    }
}

fn timeout_reason(timeout: Duration) -> String {
    format!(
        "timed out after {} s (wall-clock limit); the container was killed",
        timeout.as_secs()
    )
}
