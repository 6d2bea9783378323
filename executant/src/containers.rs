//! The Docker side of running tasks: sandboxed containers, created, verified, attached,
//! started, judged on exit, and removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::AttachContainerResults;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptions, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;
use crate::error::RunError;
use crate::metrics::Metrics;
use crate::sandbox::{self, ContainerSpec};
use crate::session::Session;

/// How a container exited, as the engine reports it.
pub(crate) struct Exit {
    /// The exit code (128 + N after signal N).
    pub(crate) code: i64,
    /// Whether the memory limit killed it.
    pub(crate) oom_killed: bool,
    /// When it was created (RFC 3339).
    created: Option<String>,
}

/// The engine and the settings containers are made with; cheap to clone.
#[derive(Clone)]
pub(crate) struct Containers {
    pub(crate) docker: Docker,
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: Arc<Metrics>,
    /// The project of each warm worker taken by one ([`crate::warm`]): its label says none.
    pub(crate) adopted: Arc<Mutex<HashMap<String, String>>>,
}

impl Containers {
    /// Starts a worker container that serves up to `budget` tasks of `project` on its
    /// standard input.
    pub(crate) async fn start_session(
        &self,
        budget: u32,
        project: &str,
    ) -> Result<Session, RunError> {
        let cmd = vec![
            "serve".to_string(),
            "--max-tasks".to_string(),
            budget.to_string(),
        ];
        let spec = ContainerSpec {
            image: &self.config.worker_image,
            cmd,
            stdin: true,
            read_only_binds: vec![],
            executant: &self.config.name,
            project,
        };
        let (id, attached) = self.create_and_start(&spec).await?;
        Ok(Session::new(id, attached))
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
        self.metrics.container_created(&id);
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

    /// Waits for a container to stop and returns how it exited.
    pub(crate) async fn wait_exit(&self, id: &str) -> Result<Exit, RunError> {
        for _ in 0..100 {
            let inspect = self.docker.inspect_container(id, None).await?;
            let state = inspect.state.unwrap_or_default();
            if state.running != Some(true) {
                return Ok(Exit {
                    code: state.exit_code.unwrap_or(-1),
                    oom_killed: state.oom_killed.unwrap_or(false),
                    created: inspect.created,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(RunError::Lost(
            "the container did not stop after its output ended".into(),
        ))
    }

    /// Decides why a container stopped without answering: `Ok(reason)` when the task failed
    /// by itself, `Err` when something outside it killed the container.
    ///
    /// The engine reports the same state (exit code 137, not OOMKilled) for a task that
    /// killed itself with SIGKILL, that exited with 137, and for `docker kill`; only its
    /// event log tells them apart. So a death by signal is an infrastructure fault when the
    /// engine recorded a `kill` of the container (`docker kill`, `stop`, `rm -f`, another
    /// executant's sweep; this executant kills only after deciding), and the task's own
    /// failure otherwise. A signal sent around the engine (`kill -9` of the process on the
    /// host) therefore counts as the task's own.
    pub(crate) async fn exit_verdict(&self, id: &str, stderr: &[u8]) -> Result<String, RunError> {
        let exit = self.wait_exit(id).await?;
        let tail = String::from_utf8_lossy(stderr).trim().to_string();
        let with_tail = |s: String| {
            if tail.is_empty() {
                s
            } else {
                format!("{s}: {tail}")
            }
        };
        if exit.oom_killed {
            return Ok(format!(
                "out of memory (limit {} MiB)",
                self.config.limits.memory_bytes / (1024 * 1024)
            ));
        }
        match exit.code {
            0 => Ok(with_tail(
                "exited with code 0 without answering (a worker writes one result line per task)"
                    .into(),
            )),
            code @ 129..=159 => {
                let signal = code - 128;
                if let Some(sent) = self.engine_kill(id, exit.created.as_deref()).await? {
                    return Err(RunError::Lost(format!(
                        "the container was killed from outside (signal {sent}, sent through the \
                         Docker engine)"
                    )));
                }
                Ok(with_tail(format!(
                    "exited with code {code} (signal {signal}, or the task's own exit status: \
                     nothing killed it through the Docker engine)"
                )))
            }
            code => Ok(with_tail(format!("exited with code {code}"))),
        }
    }

    /// The signal of a `kill` the engine recorded for container `id` since it was created,
    /// if any.
    async fn engine_kill(
        &self,
        id: &str,
        created: Option<&str>,
    ) -> Result<Option<String>, RunError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let since = created
            .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok())
            .map_or(0, |t| t.unix_timestamp() - 1);
        let filters = HashMap::from([
            ("container".to_string(), vec![id.to_string()]),
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["kill".to_string()]),
        ]);
        let options = EventsOptionsBuilder::default()
            .since(&since.to_string())
            .until(&format!("{}.{:09}", now.as_secs(), now.subsec_nanos()))
            .filters(&filters)
            .build();
        let mut events = self.docker.events(Some(options));
        if let Some(event) = events.next().await {
            let event = event?;
            let signal = event
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get("signal").cloned())
                .unwrap_or_else(|| "?".into());
            return Ok(Some(signal));
        }
        Ok(None)
    }

    /// Kills and removes a container, ignoring errors (it may already be gone).
    pub(crate) async fn discard(&self, id: &str) {
        let kill = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let _ = self.docker.kill_container(id, Some(kill)).await;
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self.docker.remove_container(id, Some(remove)).await;
        self.metrics.container_removed(id);
        self.adopted_lock().remove(id);
    }

    /// Records that container `id`, started with no project, now serves `project`.
    pub(crate) fn adopt(&self, id: &str, project: &str) {
        self.adopted_lock()
            .insert(id.to_string(), project.to_string());
    }

    fn adopted_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.adopted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills every running task container of `project` that this executant started, warm
    /// workers it took included (the tasks' handlers then see them die); how many.
    pub(crate) async fn stop_project(&self, project: &str) -> usize {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}=task", sandbox::ROLE_LABEL),
                format!("{}={}", sandbox::EXECUTANT_LABEL, self.config.name),
                format!("{}={project}", sandbox::PROJECT_LABEL),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        let adopted: Vec<String> = self
            .adopted_lock()
            .iter()
            .filter(|(_, p)| *p == project)
            .map(|(id, _)| id.clone())
            .collect();
        let labelled = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list.into_iter().filter_map(|c| c.id).collect(),
            Err(_) => Vec::new(),
        };
        let kill = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let mut stopped = 0;
        for id in labelled.into_iter().chain(adopted) {
            if self
                .docker
                .kill_container(&id, Some(kill.clone()))
                .await
                .is_ok()
            {
                stopped += 1;
            }
        }
        stopped
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

impl Containers {
    /// Whether another executant's container was abandoned by an executant that died: it
    /// stopped long enough ago that nobody is about to read its exit status, or, running and
    /// not a worker on its stdin, it has run past any task's time limit
    /// ([`running_abandoned`]).
    async fn abandoned(&self, id: &str) -> bool {
        let Ok(inspect) = self.docker.inspect_container(id, None).await else {
            return false;
        };
        let parse = |t: Option<&str>| t.and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok());
        let now = time::OffsetDateTime::now_utc();
        let state = inspect.state.unwrap_or_default();
        if state.running == Some(true) {
            let config = inspect.config.unwrap_or_default();
            let serves_stdin = config.open_stdin == Some(true) && config.stdin_once == Some(true);
            let created = parse(inspect.created.as_deref());
            let age = created.map(|t| Duration::try_from(now - t).unwrap_or_default());
            let limit = self.config.max_timeout + Duration::from_secs(120);
            return running_abandoned(serves_stdin, age, limit);
        }
        // A container created and not yet started has no finish time (Docker gives year 1):
        // its executant is probably about to start it, so it counts from its creation.
        let finished = parse(state.finished_at.as_deref()).filter(|t| t.year() > 1);
        let since = finished.or_else(|| parse(inspect.created.as_deref()));
        since.is_some_and(|t| now - t > ABANDONED_AFTER)
    }
}

/// Whether a running task container of another executant, `age` old, was abandoned. A worker
/// serving tasks on its standard input never is: it exits when its executant goes (its
/// stdin closes, `stdin_once`), so one running has a live executant, however long it has
/// served (a reused worker, a warm one waiting). Any other container would have been killed
/// by its executant at the task's time limit: one that has run past `limit` lost it (an
/// `exec` command does not stop when its executant dies).
fn running_abandoned(serves_stdin: bool, age: Option<Duration>, limit: Duration) -> bool {
    !serves_stdin && age.is_some_and(|age| age > limit)
}

/// How long a stopped task container may stay before another executant removes it.
const ABANDONED_AFTER: time::Duration = time::Duration::seconds(30);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::running_abandoned;

    #[test]
    fn a_running_worker_on_stdin_is_never_abandoned_however_old() {
        let limit = Duration::from_secs(1620);
        // A reused or warm worker of a live executant, hours old.
        assert!(!running_abandoned(
            true,
            Some(Duration::from_secs(6 * 3600)),
            limit
        ));
        // An `exec` container past any task's limit lost its executant; one within it did not.
        assert!(running_abandoned(
            false,
            Some(limit + Duration::from_secs(1)),
            limit
        ));
        assert!(!running_abandoned(
            false,
            Some(limit - Duration::from_secs(1)),
            limit
        ));
        // An age the engine did not give is no proof.
        assert!(!running_abandoned(false, None, limit));
    }
}
