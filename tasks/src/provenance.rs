//! Where an outcome came from: the record each result carries so that a project's result can
//! be traced to the code, the image and the machine that produced it.
//!
//! The executant fills in what it knows (itself, its engine, the image, the worker, the
//! times, the attempt); the client adds the tasks-repository commit the task was recorded in
//! before committing the result to tracking.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The provenance of one outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Provenance {
    /// The executant's name (`--name`, by default its host name).
    pub executant: String,
    /// The ID of the Docker engine that ran the container (`docker info`'s `ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_id: Option<String>,
    /// The image the task ran in, as named (a tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// That image's content digest (`sha256:...`, the engine's image ID), not a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The version of the worker binary in that image (`worker --version`); none for `exec`
    /// tasks, which run their own command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_version: Option<String>,
    /// The commit of the tasks repository that recorded the task (added by the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_commit: Option<String>,
    /// For code on demand: the commit the task's script was read at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_commit: Option<String>,
    /// When the executant started the task (RFC 3339, UTC).
    pub started: String,
    /// When the outcome was ready (RFC 3339, UTC).
    pub ended: String,
    /// Which delivery of the task this was: 1 for the first, 1 + the broker's
    /// `x-delivery-count` after that.
    pub attempt: u32,
}
