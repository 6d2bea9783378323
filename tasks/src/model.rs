//! The JSON model: a project, its tasks, a task's result.
//!
//! Every message carries `schema` (the version of this model). Task kinds live in one enum,
//! [`TaskSpec`]: adding a kind means adding a variant there, its validation in
//! [`TaskSpec::validate`], and its output in [`TaskOutput`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod list;

pub use list::{Iter, Tasks};

/// The version of the message model written by this build, carried in every task and result
/// as `schema`. Version 2 added N-queens tasks split by classes of solutions
/// ([`Symmetry::Classes`]); the rest of the model is version 1's.
pub const SCHEMA_VERSION: u32 = 2;

/// The oldest version of the model this build still reads: version 1 tasks (N-queens
/// prefixes with the mirror symmetry, exec tasks) run and count as before, and their results
/// are written in version 1 too.
pub const MIN_SCHEMA_VERSION: u32 = 1;

/// The largest board the N-queens engine accepts (the bitboards are 32 bits wide).
pub const MAX_QUEENS: u8 = 32;

/// Why a task (or result) could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskError {
    /// The bytes are not valid JSON for this model; serde's message names the field.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// The JSON was written for a version of the model this build does not speak.
    #[error(
        "unsupported schema version {found} (this build speaks {MIN_SCHEMA_VERSION} to \
         {SCHEMA_VERSION})"
    )]
    Schema {
        /// The version the message carried.
        found: u32,
    },
    /// A field has a value outside its rule.
    #[error("invalid field `{field}`: {reason}")]
    Invalid {
        /// The path of the field, e.g. `prefix[2]`.
        field: String,
        /// What rule it breaks.
        reason: String,
    },
}

impl TaskError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TaskError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// One unit of work: what the worker computes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    /// The model version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// The project this task belongs to.
    pub project: String,
    /// The task's position in its project, from 0; with `project`, the task's identity.
    pub index: u32,
    /// The wall-clock limit for this task, in seconds; the executant's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// What to compute.
    #[serde(flatten)]
    pub spec: TaskSpec,
}

/// The kinds of task, tagged by `kind` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSpec {
    /// Count the solutions of an N-queens board that begin with a prefix.
    Nqueens {
        /// The board size.
        n: u8,
        /// The columns of the queens already placed on rows 0..prefix.len().
        prefix: Vec<u8>,
        /// How many times the count is taken (2 when the prefix's mirror image was left out).
        weight: u64,
        /// What the count is: the prefix's completions (`mirror`, the default, left out of
        /// the JSON), or the solutions its classes stand for (`classes`, schema 2).
        #[serde(default, skip_serializing_if = "Symmetry::is_mirror")]
        symmetry: Symmetry,
    },
    /// Run a command in a container image; the output is its standard output.
    Exec(ExecSpec),
}

/// What an N-queens task counts, given its prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Symmetry {
    /// Every completion of the prefix ([`crate::nqueens::count_completions`]); the split
    /// leaves out prefixes whose mirror image it keeps, and gives those weight 2.
    #[default]
    Mirror,
    /// Every solution whose class representative under the 8 symmetries of the square
    /// begins with the prefix, counted for the whole class
    /// ([`crate::nqueens::count_class`]); the prefix must be one that search visits.
    Classes,
}

impl Symmetry {
    /// Whether this is [`Symmetry::Mirror`] (the default, left out of the JSON).
    pub fn is_mirror(&self) -> bool {
        *self == Symmetry::Mirror
    }

    /// The oldest schema version that can carry it.
    pub fn min_schema(&self) -> u32 {
        match self {
            Symmetry::Mirror => 1,
            Symmetry::Classes => 2,
        }
    }
}

/// A command to run in a named image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// The image to run (must be on the executant's allowlist).
    pub image: String,
    /// The command and its arguments (no shell unless the command names one).
    pub command: Vec<String>,
    /// A file of the project's tasks repository to mount read-only at `/task/<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<ScriptRef>,
}

/// A file committed to a project's tasks repository, pinned to a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptRef {
    /// Where the executant fetches the repository from (a path or any git URL).
    pub repo: String,
    /// The commit (40 hex digits) the file is read at.
    pub commit: String,
    /// The file's path inside the repository.
    pub path: String,
}

impl Task {
    /// Parses and validates a task from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Task, TaskError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| TaskError::Json(e.to_string()))?;
        check_schema(&value)?;
        let task: Task =
            serde_json::from_value(value).map_err(|e| TaskError::Json(e.to_string()))?;
        task.validate()?;
        Ok(task)
    }

    /// The task's identity across projects: `<project>/<index>` (the AMQP `message_id`).
    pub fn id(&self) -> String {
        format!("{}/{}", self.project, self.index)
    }

    /// Checks every field against its rule.
    pub fn validate(&self) -> Result<(), TaskError> {
        check_version(self.schema)?;
        validate_project_id(&self.project)?;
        if let TaskSpec::Nqueens { symmetry, .. } = &self.spec {
            if self.schema < symmetry.min_schema() {
                return Err(TaskError::invalid(
                    "symmetry",
                    format!("needs schema {} or later", symmetry.min_schema()),
                ));
            }
        }
        if self.timeout_secs == Some(0) {
            return Err(TaskError::invalid("timeout_secs", "must be at least 1"));
        }
        self.spec.validate()
    }

    /// The schema version of the task's results: the task's own (a version 1 client reads
    /// its results), within the versions this build writes.
    pub fn result_schema(&self) -> u32 {
        self.schema.clamp(MIN_SCHEMA_VERSION, SCHEMA_VERSION)
    }

    /// The task as JSON bytes: its canonical form (fields in the model's order, no spaces),
    /// the one that is published, recorded in `tasks.jsonl` and digested.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a task always serializes")
    }

    /// The digest a result of this task must carry: `sha256:` and the hex SHA-256 of the
    /// task's canonical JSON ([`Task::to_json`]).
    pub fn digest(&self) -> String {
        digest_of(&self.to_json())
    }
}

/// `sha256:` and the hex SHA-256 of a task's canonical JSON.
fn digest_of(json: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(json);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

impl TaskSpec {
    /// The kind's name as it appears in JSON (`nqueens`, `exec`).
    pub fn kind(&self) -> &'static str {
        match self {
            TaskSpec::Nqueens { .. } => "nqueens",
            TaskSpec::Exec(_) => "exec",
        }
    }

    /// The oldest schema version that can carry this task: 1, or 2 for an N-queens task
    /// split by classes. Tasks are written in it, so that older executants run what they can.
    pub fn min_schema(&self) -> u32 {
        match self {
            TaskSpec::Nqueens { symmetry, .. } => symmetry.min_schema(),
            TaskSpec::Exec(_) => MIN_SCHEMA_VERSION,
        }
    }

    /// Checks the kind's own fields.
    pub fn validate(&self) -> Result<(), TaskError> {
        match self {
            TaskSpec::Nqueens {
                n,
                prefix,
                weight,
                symmetry,
            } => {
                match symmetry {
                    Symmetry::Mirror => validate_nqueens(*n, prefix)?,
                    Symmetry::Classes => crate::nqueens::validate_class_prefix(*n, prefix)?,
                }
                if *weight == 0 {
                    return Err(TaskError::invalid("weight", "must be at least 1"));
                }
                Ok(())
            }
            TaskSpec::Exec(spec) => spec.validate(),
        }
    }
}

impl ExecSpec {
    fn validate(&self) -> Result<(), TaskError> {
        if self.image.trim().is_empty() {
            return Err(TaskError::invalid("image", "must not be empty"));
        }
        if self.command.is_empty() {
            return Err(TaskError::invalid("command", "must name a program"));
        }
        if let Some(script) = &self.script {
            if script.commit.len() != 40 || !script.commit.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(TaskError::invalid("script.commit", "must be 40 hex digits"));
            }
            let path = std::path::Path::new(&script.path);
            let escapes = path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)));
            if script.path.is_empty() || escapes {
                return Err(TaskError::invalid(
                    "script.path",
                    "must be a relative path inside the repository, without `..`",
                ));
            }
            if script.repo.is_empty() {
                return Err(TaskError::invalid("script.repo", "must not be empty"));
            }
        }
        Ok(())
    }
}

/// Checks an N-queens board size and prefix: `1 <= n <= 32`, every column below `n`, no two
/// queens of the prefix attacking each other.
pub fn validate_nqueens(n: u8, prefix: &[u8]) -> Result<(), TaskError> {
    if n == 0 || n > MAX_QUEENS {
        return Err(TaskError::invalid(
            "n",
            format!("must be between 1 and {MAX_QUEENS}"),
        ));
    }
    if prefix.len() > n as usize {
        return Err(TaskError::invalid("prefix", "is longer than the board"));
    }
    for (row, &col) in prefix.iter().enumerate() {
        if col >= n {
            return Err(TaskError::invalid(
                format!("prefix[{row}]"),
                format!("column {col} is off a board of size {n}"),
            ));
        }
        for (other_row, &other_col) in prefix[..row].iter().enumerate() {
            let dr = row - other_row;
            if other_col == col || (other_col as usize).abs_diff(col as usize) == dr {
                return Err(TaskError::invalid(
                    format!("prefix[{row}]"),
                    format!("queen at column {col} is attacked by the queen of row {other_row}"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a project id: 1 to 64 characters among `a-z`, `0-9`, `-`, `_`, starting with a
/// letter or digit (it becomes a queue name, a routing key and a folder name).
pub fn validate_project_id(id: &str) -> Result<(), TaskError> {
    let ok_start = id
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if id.is_empty() || id.len() > 64 || !ok_start || !ok_chars {
        return Err(TaskError::invalid(
            "project",
            "must be 1 to 64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit",
        ));
    }
    Ok(())
}

/// Accepts the schema versions this build reads, [`MIN_SCHEMA_VERSION`] to
/// [`SCHEMA_VERSION`].
fn check_version(found: u32) -> Result<(), TaskError> {
    if (MIN_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&found) {
        Ok(())
    } else {
        Err(TaskError::Schema { found })
    }
}

pub(crate) fn check_schema(value: &serde_json::Value) -> Result<(), TaskError> {
    match value.get("schema") {
        None => Err(TaskError::Json("missing field `schema`".into())),
        Some(v) => match v.as_u64() {
            Some(found) => check_version(found.min(u32::MAX as u64) as u32),
            None => Err(TaskError::invalid("schema", "must be a whole number")),
        },
    }
}

/// The outcome of one task, as the executant reports it on the project's results queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskResult {
    /// The model version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// The project of the task.
    pub project: String,
    /// The index of the task in its project.
    pub index: u32,
    /// What came of it.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long the task ran, in milliseconds (container start to exit).
    #[serde(default)]
    pub duration_ms: u64,
    /// Who ran it (the executant's name), for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// The digest of the exact task this result answers ([`Task::digest`]): a client refuses
    /// a result whose digest is not its task's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where and how the outcome was produced (absent in records written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Box<crate::provenance::Provenance>>,
}

/// What came of a task, tagged by `status` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The task ran to the end.
    Ok {
        /// Its output.
        output: TaskOutput,
    },
    /// The task failed by itself (non-zero exit, timeout, out of memory, invalid input).
    Failed {
        /// Why, in words a person can act on.
        reason: String,
    },
}

/// The output of a task that succeeded, tagged by `kind` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskOutput {
    /// The number of completions of the prefix (not yet multiplied by the task's weight).
    Nqueens {
        /// Completions counted.
        solutions: u64,
    },
    /// The standard output of the command.
    Exec {
        /// Standard output, as UTF-8 (invalid bytes replaced).
        stdout: String,
    },
}

impl TaskResult {
    /// A successful result for `task`.
    pub fn ok(task: &Task, output: TaskOutput) -> TaskResult {
        TaskResult {
            schema: task.result_schema(),
            project: task.project.clone(),
            index: task.index,
            outcome: Outcome::Ok { output },
            duration_ms: 0,
            executor: None,
            digest: Some(task.digest()),
            provenance: None,
        }
    }

    /// A failed result for `task`, with the reason.
    pub fn failed(task: &Task, reason: impl Into<String>) -> TaskResult {
        TaskResult {
            schema: task.result_schema(),
            project: task.project.clone(),
            index: task.index,
            outcome: Outcome::Failed {
                reason: reason.into(),
            },
            duration_ms: 0,
            executor: None,
            digest: Some(task.digest()),
            provenance: None,
        }
    }

    /// Parses a result from JSON bytes and checks its schema version and project id.
    pub fn from_json(bytes: &[u8]) -> Result<TaskResult, TaskError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| TaskError::Json(e.to_string()))?;
        check_schema(&value)?;
        let result: TaskResult =
            serde_json::from_value(value).map_err(|e| TaskError::Json(e.to_string()))?;
        validate_project_id(&result.project)?;
        Ok(result)
    }

    /// The result as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a result always serializes")
    }
}

/// What a project asked for, kept with the project for the record and for reassembly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProjectSpec {
    /// Count the N-queens solutions of a board, split at a depth.
    Nqueens {
        /// The board size.
        n: u8,
        /// How many rows each task's prefix fixes.
        depth: u8,
    },
    /// Tasks written by hand or command tasks: the result is the outputs in order.
    Tasks,
}

/// A project: what was asked, and its tasks in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// The model version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// The project id (see [`validate_project_id`]).
    pub id: String,
    /// What was asked.
    pub spec: ProjectSpec,
    /// The tasks, the task at position `i` having index `i`; held compactly ([`Tasks`]).
    pub tasks: Tasks,
}

impl Project {
    /// Builds a project of hand-written or command tasks, numbering them in order. The specs
    /// may come one at a time: a million of them are never all held at once.
    pub fn from_specs(
        id: &str,
        specs: impl IntoIterator<Item = TaskSpec>,
    ) -> Result<Project, TaskError> {
        validate_project_id(id)?;
        let tasks = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Task {
                schema: spec.min_schema(),
                project: id.to_string(),
                index: i as u32,
                timeout_secs: None,
                spec,
            })
            .collect();
        let project = Project {
            schema: SCHEMA_VERSION,
            id: id.to_string(),
            spec: ProjectSpec::Tasks,
            tasks,
        };
        project.validate()?;
        Ok(project)
    }

    /// Checks the project id, the numbering and every task.
    pub fn validate(&self) -> Result<(), TaskError> {
        check_version(self.schema)?;
        validate_project_id(&self.id)?;
        for (i, task) in self.tasks.iter().enumerate() {
            if task.index as usize != i || task.project != self.id {
                return Err(TaskError::invalid(
                    format!("tasks[{i}]"),
                    "must carry the project's id and its own position as index",
                ));
            }
            task.validate().map_err(|e| match e {
                TaskError::Invalid { field, reason } => {
                    TaskError::invalid(format!("tasks[{i}].{field}"), reason)
                }
                other => other,
            })?;
        }
        Ok(())
    }
}

/// The JSON Schema of a task message (for clients written in other languages).
pub fn task_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Task)).expect("a schema serializes")
}

/// The JSON Schema of a result message.
pub fn result_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(TaskResult)).expect("a schema serializes")
}
