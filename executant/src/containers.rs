//! The Docker side of running tasks: sandboxed containers, created, verified, attached,
//! started, judged on exit, and removed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptions, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWrite;

use crate::config::Config;
use crate::runner::{RunError, MAX_OUTPUT_BYTES};
use crate::sandbox::{self, ContainerSpec};

/// How much of a failing task's standard error goes into its reason.
const STDERR_TAIL: usize = 512;

/// A worker container serving tasks on its standard input, one JSON line each.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    buffer: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) served: u32,
}

/// The engine and the settings containers are made with; cheap to clone.
#[derive(Clone)]
pub(crate) struct Containers {
    pub(crate) docker: Docker,
    pub(crate) config: Arc<Config>,
}

impl Containers {
    /// Starts a worker container that serves up to `--reuse` tasks on its standard input.
    pub(crate) async fn start_session(&self) -> Result<Session, RunError> {
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
    pub(crate) async fn create_and_start(
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

    /// Waits for a container to stop and returns its exit code and whether it ran out of
    /// memory.
    pub(crate) async fn wait_exit(&self, id: &str) -> Result<(i64, bool), RunError> {
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
    pub(crate) async fn exit_verdict(&self, id: &str, stderr: &[u8]) -> Result<String, RunError> {
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

    /// Kills and removes a container, ignoring errors (it may already be gone).
    pub(crate) async fn discard(&self, id: &str) {
        let kill = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let _ = self.docker.kill_container(id, Some(kill)).await;
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self.docker.remove_container(id, Some(remove)).await;
    }

    /// Removes every task container this executant started, and any other executant's task
    /// container that has stopped (left behind by an executant that died).
    pub(crate) async fn remove_leftovers(&self) -> usize {
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
            let Some(id) = c.id else { continue };
            if ours || self.abandoned(&id).await {
                self.discard(&id).await;
                removed += 1;
            }
        }
        removed
    }
}

use time::format_description::well_known::Rfc3339;

impl Containers {
    /// Whether another executant's container was abandoned by an executant that died: it
    /// stopped long enough ago that nobody is about to read its exit status, or it has run
    /// past any task's time limit.
    async fn abandoned(&self, id: &str) -> bool {
        let Ok(inspect) = self.docker.inspect_container(id, None).await else {
            return false;
        };
        let parse = |t: Option<&str>| t.and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok());
        let now = time::OffsetDateTime::now_utc();
        let state = inspect.state.unwrap_or_default();
        if state.running == Some(true) {
            // Its executant would have killed it at the task's timeout: one that runs longer
            // lost its executant (an `exec` command does not stop when its executant dies).
            let limit = self.config.max_timeout + std::time::Duration::from_secs(120);
            let created = parse(inspect.created.as_deref());
            return created.is_some_and(|t| now - t > limit);
        }
        let finished = parse(state.finished_at.as_deref());
        finished.is_some_and(|t| now - t > ABANDONED_AFTER)
    }
}

/// How long a stopped task container may stay before another executant removes it.
const ABANDONED_AFTER: time::Duration = time::Duration::seconds(30);

/// Reads the next line the worker wrote; `None` when its output ended.
pub(crate) async fn read_line(session: &mut Session) -> Result<Option<Vec<u8>>, RunError> {
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

pub(crate) fn keep_tail(buffer: &mut Vec<u8>, message: &[u8]) {
    buffer.extend_from_slice(message);
    if buffer.len() > STDERR_TAIL {
        buffer.drain(..buffer.len() - STDERR_TAIL);
    }
}

pub(crate) fn timeout_reason(timeout: Duration) -> String {
    format!(
        "timed out after {} s (wall-clock limit); the container was killed",
        timeout.as_secs()
    )
}
