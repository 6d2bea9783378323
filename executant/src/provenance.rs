//! The provenance of an outcome ([`tasks::provenance::Provenance`]): the engine's ID, the
//! content digest of the image a task ran in and the version of the worker in it, read from
//! the engine and kept for a short while (an engine call per task would cost throughput).
//!
//! What cannot be read (an engine that does not answer `info`, say) is left out of the
//! record, never guessed, and never fails the task.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tasks::provenance::Provenance;
use tasks::{Task, TaskSpec};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::containers::Containers;
use crate::sandbox::ContainerSpec;

/// How long an image's digest (and the engine's ID) is trusted before it is read again: an
/// image re-tagged meanwhile shows in later records within this delay.
const KEEP_FOR: Duration = Duration::from_secs(10);
/// The longest `worker --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and keeps what the engine says about itself and its images.
pub(crate) struct Origins {
    containers: Containers,
    engine: Mutex<Option<(Instant, Option<String>)>>,
    images: Mutex<HashMap<String, (Instant, Option<String>)>>,
    /// `worker --version` by image digest: an image's content never changes, so a version
    /// read is kept; a failed read (its container killed, say) is tried again after
    /// [`KEEP_FOR`].
    versions: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl Origins {
    pub(crate) fn new(containers: Containers) -> Origins {
        Origins {
            containers,
            engine: Mutex::new(None),
            images: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the digest of the worker image and the version of the worker in it ahead of
    /// any task: the version costs a container run (about 0.25 s), which the first outcome
    /// would otherwise wait for.
    pub(crate) async fn prepare(&self) {
        let image = &self.containers.config.worker_image;
        if let Some(digest) = self.image_digest(image).await {
            self.worker_version(image, &digest).await;
        }
    }

    /// The provenance of an outcome of `task`, started at `started`, on delivery `attempt`.
    pub(crate) async fn of(
        &self,
        task: &Task,
        attempt: u32,
        started: OffsetDateTime,
    ) -> Provenance {
        let config = &self.containers.config;
        let (image, worker, script_commit) = match &task.spec {
            TaskSpec::Nqueens { .. } => (config.worker_image.clone(), true, None),
            TaskSpec::Exec(spec) => (
                spec.image.clone(),
                false,
                spec.script.as_ref().map(|s| s.commit.clone()),
            ),
        };
        let image_digest = self.image_digest(&image).await;
        let worker_version = match (&image_digest, worker) {
            (Some(digest), true) => self.worker_version(&image, digest).await,
            _ => None,
        };
        Provenance {
            executant: config.name.clone(),
            engine_id: self.engine_id().await,
            image: Some(image),
            image_digest,
            worker_version,
            tasks_commit: None,
            script_commit,
            started: rfc3339(started),
            ended: rfc3339(OffsetDateTime::now_utc()),
            attempt,
        }
    }

    async fn engine_id(&self) -> Option<String> {
        let mut engine = self.engine.lock().await;
        if let Some((at, id)) = engine.as_ref() {
            if at.elapsed() < KEEP_FOR {
                return id.clone();
            }
        }
        let id = match self.containers.docker.info().await {
            Ok(info) => info.id.filter(|id| !id.is_empty()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the engine's ID for provenance");
                None
            }
        };
        *engine = Some((Instant::now(), id.clone()));
        id
    }

    async fn image_digest(&self, image: &str) -> Option<String> {
        if let Some((at, digest)) = self.images.lock().await.get(image) {
            if at.elapsed() < KEEP_FOR {
                return digest.clone();
            }
        }
        let digest = match self.containers.docker.inspect_image(image).await {
            Ok(inspect) => inspect.id.filter(|id| id.starts_with("sha256:")),
            Err(e) => {
                tracing::warn!(%image, error = %e, "cannot read the image's digest for provenance");
                None
            }
        };
        self.images
            .lock()
            .await
            .insert(image.to_string(), (Instant::now(), digest.clone()));
        digest
    }

    /// `worker --version` in a sandboxed container of the image, once per image digest.
    async fn worker_version(&self, image: &str, digest: &str) -> Option<String> {
        let mut versions = self.versions.lock().await;
        if let Some((at, version)) = versions.get(digest) {
            if version.is_some() || at.elapsed() < KEEP_FOR {
                return version.clone();
            }
        }
        let version = match tokio::time::timeout(VERSION_TIMEOUT, self.ask_version(image)).await {
            Ok(Some(version)) => Some(version),
            _ => {
                tracing::warn!(%image, "cannot read the worker's version for provenance");
                None
            }
        };
        versions.insert(digest.to_string(), (Instant::now(), version.clone()));
        version
    }

    async fn ask_version(&self, image: &str) -> Option<String> {
        let spec = ContainerSpec {
            image,
            cmd: vec!["--version".into()],
            stdin: false,
            read_only_binds: vec![],
            executant: &self.containers.config.name,
            // No project's: a cancellation never stops it (it ends on its own at once).
            project: "",
        };
        let (id, attached) = self.containers.create_and_start(&spec).await.ok()?;
        let mut output = attached.output;
        let mut stdout = Vec::new();
        while let Some(Ok(item)) = output.next().await {
            if let bollard::container::LogOutput::StdOut { message } = item {
                stdout.extend_from_slice(&message);
            }
            if stdout.len() > 4096 {
                break;
            }
        }
        self.containers.discard(&id).await;
        let text = String::from_utf8_lossy(&stdout);
        // `worker 0.1.0`: the version is the last word of clap's line.
        let version = text.split_whitespace().last()?.to_string();
        Some(version)
    }
}

/// A time as RFC 3339 (UTC).
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}
