//! Recording a project and its results in the workspace's repositories.
//!
//! Results are committed to the tracking repository in batches (by count and by age), never
//! one commit per result; the last commit of a project says it is complete.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tasks::layout::{self, CONFIG, RESULTS, TASKS, TRACKING};
use tasks::progress::Progress;
use tasks::reassemble::Recorded;
use tasks::{Project, ProjectResult, Reassembly, TaskError, TaskResult, SCHEMA_VERSION};

use crate::replicas::{Offer, Quorum};
use crate::workspace::{Workspace, WorkspaceError};

/// When a batch of results is committed.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Commit when this many results wait.
    pub max_results: usize,
    /// Commit when the oldest waiting result is this old.
    pub max_age: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_results: 500,
            max_age: Duration::from_secs(2),
        }
    }
}

/// Records a new project: its tasks in `tasks`, its settings in `config`, its (empty)
/// progress in `tracking`.
pub fn record_project(
    ws: &Workspace,
    project: &Project,
    config: &serde_json::Value,
) -> Result<(), WorkspaceError> {
    let id = &project.id;
    let header = serde_json::json!({
        "schema": SCHEMA_VERSION,
        "id": id,
        "spec": project.spec,
        "tasks": project.tasks.len(),
        crate::trace::TRACE_FIELD: crate::trace::new_trace_id().to_string(),
    });
    // The list as the project holds it: `tasks.jsonl` is its bytes, written without a copy.
    let tasks_commit = ws.commit_slices(
        TASKS,
        &[
            (
                layout::project_header(id).as_str(),
                pretty(&header).as_slice(),
            ),
            (layout::task_list(id).as_str(), project.tasks.jsonl()),
        ],
        &format!(
            "Project {id}: {}, {} tasks",
            describe(project),
            project.tasks.len()
        ),
    )?;
    // The commit every outcome's provenance names as the one its task came from.
    let mut config = config.clone();
    config["tasks_commit"] = tasks_commit.to_string().into();
    ws.commit(
        CONFIG,
        &[(layout::config(id), pretty(&config))],
        &format!("Project {id}: images and limits"),
    )?;
    let progress = progress_of(project, 0, 0, false);
    ws.commit(
        TRACKING,
        &[(layout::progress(id), pretty(&progress))],
        &format!(
            "Project {id}: started, 0/{} tasks done",
            project.tasks.len()
        ),
    )?;
    Ok(())
}

/// Whether project `id` is already recorded in the workspace (its tasks or its progress).
pub fn project_exists(ws: &Workspace, id: &str) -> bool {
    ws.read_at_head(TASKS, &layout::project_header(id))
        .is_some()
        || ws.read_at_head(TRACKING, &layout::progress(id)).is_some()
}

/// A new project was given the id of one the workspace already has (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("project {project} already exists in {workspace}: choose another --id (or `commanditaire resume {project}` to finish that one)")]
pub struct ProjectExists {
    /// The project id.
    pub project: String,
    /// The workspace folder.
    pub workspace: String,
}

/// Refuses an id the workspace already has: a new project never mixes with an old one.
pub fn ensure_new(ws: &Workspace, id: &str) -> Result<(), ProjectExists> {
    if project_exists(ws, id) {
        return Err(ProjectExists {
            project: id.to_string(),
            workspace: ws.root().display().to_string(),
        });
    }
    Ok(())
}

/// Why a recorded project could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The project is not recorded in that repository.
    #[error("project {project} is not in {}", repo.display())]
    Missing {
        /// The project id.
        project: String,
        /// The repository looked in.
        repo: PathBuf,
    },
    /// A recorded file is missing.
    #[error("{0} is missing")]
    MissingFile(String),
    /// `project.json` is not JSON, or its spec is not one.
    #[error("{file}")]
    Header {
        /// The file (and field), relative to the tasks repository.
        file: String,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A recorded task is invalid.
    #[error("{file}")]
    Task {
        /// The file, relative to the tasks repository.
        file: String,
        /// What is wrong.
        #[source]
        source: TaskError,
    },
    /// The project read back is invalid.
    #[error(transparent)]
    Invalid(#[from] TaskError),
    /// The workspace could not be opened.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

/// Reads a recorded project back from the tasks repository.
pub fn load_project(ws: &Workspace, id: &str) -> Result<Project, LoadError> {
    let header = ws
        .read_at_head(TASKS, &layout::project_header(id))
        .ok_or_else(|| LoadError::Missing {
            project: id.to_string(),
            repo: ws.repo_path(TASKS),
        })?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|source| LoadError::Header {
            file: layout::project_header(id),
            source,
        })?;
    let spec =
        serde_json::from_value(header["spec"].clone()).map_err(|source| LoadError::Header {
            file: format!("{}: spec", layout::project_header(id)),
            source,
        })?;
    // Streamed from git and parsed a line at a time into the compact list: the file is never
    // held whole beside it.
    let file = layout::task_list(id);
    let mut lines = TaskLines::default();
    ws.read_chunks(TASKS, &file, |chunk| lines.feed(chunk))
        .ok_or_else(|| LoadError::MissingFile(file.clone()))?;
    let tasks = lines
        .finish()
        .map_err(|source| LoadError::Task { file, source })?;
    let project = Project {
        schema: SCHEMA_VERSION,
        id: id.to_string(),
        spec,
        tasks,
    };
    project.validate()?;
    Ok(project)
}

/// A task list read a piece at a time: each whole line parsed, validated and stored.
#[derive(Default)]
struct TaskLines {
    tasks: tasks::Tasks,
    /// The start of a line whose end has not come yet.
    carry: Vec<u8>,
    /// The first line that is not a valid task.
    error: Option<TaskError>,
}

impl TaskLines {
    fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            if self.carry.is_empty() {
                self.line(&chunk[..end]);
            } else {
                let mut line = std::mem::take(&mut self.carry);
                line.extend_from_slice(&chunk[..end]);
                self.line(&line);
                line.clear();
                self.carry = line;
            }
            chunk = &chunk[end + 1..];
        }
        self.carry.extend_from_slice(chunk);
    }

    fn line(&mut self, line: &[u8]) {
        if line.is_empty() || self.error.is_some() {
            return;
        }
        match tasks::Task::from_json(line) {
            Ok(task) => self.tasks.push(&task),
            Err(e) => self.error = Some(e),
        }
    }

    fn finish(mut self) -> Result<tasks::Tasks, TaskError> {
        let last = std::mem::take(&mut self.carry);
        self.line(&last);
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.tasks),
        }
    }
}

/// The progress of project `id`, or of every project (`None`), oldest update first.
pub fn progress(ws: &Workspace, id: Option<&str>) -> Result<Vec<Progress>, LoadError> {
    let shown: Vec<Progress> = all_progress(ws)
        .into_iter()
        .filter(|p| id.is_none_or(|id| id == p.project))
        .collect();
    match id {
        Some(id) if shown.is_empty() => Err(LoadError::Missing {
            project: id.to_string(),
            repo: ws.repo_path(TRACKING),
        }),
        _ => Ok(shown),
    }
}

/// Reads every recorded project's progress from the tracking repository.
pub fn all_progress(ws: &Workspace) -> Vec<Progress> {
    let mut out: Vec<Progress> = ws
        .list_at_head(TRACKING, "")
        .into_iter()
        .filter_map(|p| ws.read_at_head(TRACKING, &layout::progress(&p)))
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    out.sort_by(|a, b| a.updated.cmp(&b.updated));
    out
}

/// Follows one project's results into the tracking repository.
pub struct Tracker {
    ws: Workspace,
    reassembly: Reassembly,
    pending: Vec<TaskResult>,
    oldest_pending: Option<Instant>,
    policy: BatchPolicy,
    published: bool,
    duplicates: usize,
    on_commit: Option<Box<dyn Fn() + Send + Sync>>,
    tasks_commit: Option<String>,
    images: Images,
    on_batch: Option<BatchHook>,
    started: Instant,
    /// A replicated project's runs (`--replicas N`, N > 1); `None`: one run per task.
    quorum: Option<Quorum>,
}

/// What is called after each batch commit ([`Tracker::notify_batches`]).
type BatchHook = Box<dyn Fn(&BatchRecorded) + Send + Sync>;

/// A batch of results just committed to the tracking repository (what `--progress-json`
/// prints, one JSON line each).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BatchRecorded {
    /// The project.
    pub project: String,
    /// Results in this batch.
    pub results: usize,
    /// Tasks with an outcome, this batch included.
    pub done: usize,
    /// Tasks that failed so far.
    pub failed: usize,
    /// Tasks of the project.
    pub tasks: usize,
    /// Milliseconds since this client started tracking the project.
    pub elapsed_ms: u64,
}

impl Tracker {
    /// Starts tracking `project`, with the results already committed by an earlier run:
    /// the batches of `<project>/results/` and the retry records of `<project>/retries/`,
    /// replayed in their shared numbering.
    pub fn load(ws: &Workspace, project: Project, policy: BatchPolicy) -> Tracker {
        let id = project.id.clone();
        let mut reassembly = Reassembly::new(project);
        let mut images = Images::new();
        // One batch in memory at a time: a million results are never all held at once.
        for_each_record(ws, &id, |record| match record {
            Record::Retry(indexes) => {
                for index in indexes {
                    reassembly.retry(index);
                }
            }
            Record::Batch(results) => {
                for result in results {
                    if reassembly.record(&result) == Recorded::New {
                        images.add(&result);
                    }
                }
            }
        });
        let tasks_commit = tasks_commit_of(ws, &id);
        let published = ws
            .read_at_head(TRACKING, &layout::published_marker(&id))
            .is_some();
        let replicas = crate::replicas::replicas_of(ws, &id);
        let quorum = (replicas > 1).then(|| Quorum::load(ws, reassembly.project(), replicas));
        let mut tracker = Tracker {
            ws: ws.clone(),
            reassembly,
            pending: Vec::new(),
            oldest_pending: None,
            policy,
            published,
            duplicates: 0,
            on_commit: None,
            tasks_commit,
            images,
            on_batch: None,
            started: Instant::now(),
            quorum,
        };
        // Runs committed by a client killed before it committed the outcome they decided.
        let decided = tracker
            .quorum
            .as_ref()
            .map(|q| q.decided(tracker.project()))
            .unwrap_or_default();
        for result in decided {
            if !tracker.has(result.index) {
                tracker.keep(result);
            }
        }
        tracker
    }

    /// Calls `hook` after each commit this tracker makes (a push request, say). The hook
    /// must return at once: it runs on the tracking path.
    pub fn notify_commits(&mut self, hook: impl Fn() + Send + Sync + 'static) {
        self.on_commit = Some(Box::new(hook));
    }

    /// Calls `hook` after each batch of results is committed.
    pub fn notify_batches(&mut self, hook: impl Fn(&BatchRecorded) + Send + Sync + 'static) {
        self.on_batch = Some(Box::new(hook));
    }

    fn committed(&self) {
        if let Some(hook) = &self.on_commit {
            hook();
        }
    }

    /// The workspace it records into.
    pub fn workspace(&self) -> &Workspace {
        &self.ws
    }

    /// The project.
    pub fn project(&self) -> &Project {
        self.reassembly.project()
    }

    /// Whether task `index` has an outcome (committed or waiting).
    pub fn has(&self, index: u32) -> bool {
        self.reassembly.has(index)
    }

    /// The tasks that have no outcome yet, in order (held compactly, as the project's).
    pub fn remaining(&self) -> tasks::Tasks {
        self.project().tasks.subset(|i| !self.has(i as u32))
    }

    /// Tasks with an outcome.
    pub fn done(&self) -> usize {
        self.reassembly.done()
    }

    /// Whether every task has an outcome.
    pub fn finished(&self) -> bool {
        self.reassembly.finished()
    }

    /// Whether every task was published once (an earlier run may have been killed midway).
    pub fn published(&self) -> bool {
        self.published
    }

    /// Records that every task was published.
    pub fn mark_published(&mut self) -> Result<(), WorkspaceError> {
        let id = self.project().id.clone();
        self.ws.commit(
            TRACKING,
            &[(
                layout::published_marker(&id),
                b"all tasks published\n".to_vec(),
            )],
            &format!(
                "Project {id}: {} tasks published",
                self.project().tasks.len()
            ),
        )?;
        self.published = true;
        self.committed();
        Ok(())
    }

    /// Offers a result: kept unless its task already has one. A kept result's provenance
    /// gets the tasks-repository commit its task was recorded in.
    ///
    /// A replicated project records every run (`New` for a run of an undecided task, even
    /// when it does not decide it yet; `Duplicate` for a run seen again or one that came
    /// after its task was decided), and counts the outcome its runs decide
    /// ([`crate::replicas`]).
    pub fn record(&mut self, mut result: TaskResult) -> Recorded {
        if let (Some(p), Some(commit)) = (&mut result.provenance, &self.tasks_commit) {
            p.tasks_commit.get_or_insert_with(|| commit.clone());
        }
        if self.quorum.is_some() {
            return self.record_run(result);
        }
        let recorded = self.reassembly.record(&result);
        match recorded {
            Recorded::New => self.keep_recorded(result),
            Recorded::Duplicate => self.duplicates += 1,
            Recorded::Unknown => {}
        }
        recorded
    }

    /// Counts an outcome and keeps it for the next batch.
    fn keep(&mut self, result: TaskResult) {
        if self.reassembly.record(&result) == Recorded::New {
            self.keep_recorded(result);
        }
    }

    /// Keeps an outcome the reassembly just counted for the next batch.
    fn keep_recorded(&mut self, result: TaskResult) {
        self.images.add(&result);
        self.pending.push(result);
        self.oldest_pending.get_or_insert_with(Instant::now);
    }

    /// [`Tracker::record`] for a replicated project.
    fn record_run(&mut self, result: TaskResult) -> Recorded {
        let project = self.reassembly.project();
        let Some(task) = project.tasks.get(result.index as usize) else {
            return Recorded::Unknown;
        };
        if result.project != project.id {
            return Recorded::Unknown;
        }
        let quorum = self.quorum.as_mut().expect("a replicated project");
        let offered = quorum.offer(&task, result);
        if offered != Offer::Again {
            self.oldest_pending.get_or_insert_with(Instant::now);
        }
        match offered {
            Offer::Again | Offer::Late => {
                self.duplicates += 1;
                Recorded::Duplicate
            }
            Offer::Undecided => Recorded::New,
            Offer::Decided(counted) => {
                self.keep(counted);
                Recorded::New
            }
        }
    }

    /// The number of replicas of each task (1: not replicated).
    pub fn replicas(&self) -> u32 {
        self.quorum.as_ref().map_or(1, Quorum::n)
    }

    /// The runs a replicated project needs published now: each task with the executants to
    /// avoid (none for a project that is not replicated). Counted as in flight.
    pub fn take_wanted_runs(&mut self) -> Vec<(tasks::Task, Vec<String>)> {
        let Some(quorum) = &mut self.quorum else {
            return Vec::new();
        };
        let tasks = &self.reassembly.project().tasks;
        quorum
            .take_wanted()
            .into_iter()
            .map(|(index, avoid)| {
                (
                    tasks.get(index as usize).expect("a task of the project"),
                    avoid,
                )
            })
            .collect()
    }

    /// Puts back runs that could not be published.
    pub fn put_back_runs(&mut self, runs: Vec<(tasks::Task, Vec<String>)>) {
        if let Some(quorum) = &mut self.quorum {
            quorum.put_back(runs.into_iter().map(|(t, a)| (t.index, a)).collect());
        }
    }

    /// A replicated project: asks for one more run of every undecided task (their runs
    /// were lost); returns how many.
    pub fn want_runs_again(&mut self) -> usize {
        let remaining = self.remaining();
        self.quorum.as_mut().map_or(0, |q| q.want_again(&remaining))
    }

    /// A replicated project's runs and disagreements, as `result.json` reports them.
    pub fn replicas_report(&self) -> Option<serde_json::Value> {
        self.quorum.as_ref().map(|q| q.report(self.project()))
    }

    /// Results this tracker ignored because their task already had one: a task run again
    /// after a fault (at-least-once delivery), counted once.
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// Whether the waiting results should be committed now.
    pub fn due(&self) -> bool {
        self.pending() >= self.policy.max_results
            || self
                .oldest_pending
                .is_some_and(|t| t.elapsed() >= self.policy.max_age)
    }

    /// How many results wait for a commit.
    pub fn pending(&self) -> usize {
        self.pending.len() + self.quorum.as_ref().map_or(0, Quorum::unrecorded)
    }

    /// Commits the waiting results as one batch (nothing if none wait). On error the results
    /// stay waiting, to be committed by a later call.
    pub fn flush(&mut self) -> Result<(), WorkspaceError> {
        self.flush_runs()?;
        if self.pending.is_empty() {
            self.oldest_pending = None;
            return Ok(());
        }
        let id = self.project().id.clone();
        let mut lines = Vec::with_capacity(self.pending.len() * 120);
        for r in &self.pending {
            lines.extend_from_slice(&r.to_json());
            lines.push(b'\n');
        }
        // O(batch): the running counters, not a pass over every result of the project.
        let failed = self.reassembly.failed();
        let progress = progress_of(self.project(), self.done() as u32, failed as u32, false);
        let message = format!(
            "Project {id}: {}/{} tasks done ({} in this batch, {failed} failed so far)",
            self.done(),
            self.project().tasks.len(),
            self.pending.len(),
        );
        // The batch number is taken from the repository at commit time, under the workspace
        // lock: a batch is never written over another.
        self.ws.commit_numbered(
            TRACKING,
            &sequence(&id).iter().map(String::as_str).collect::<Vec<_>>(),
            &layout::results_folder(&id),
            layout::BATCH_SUFFIX,
            lines,
            &[(layout::progress(&id), pretty(&progress))],
            &message,
        )?;
        let batch = self.pending.len();
        self.pending.clear();
        self.oldest_pending = None;
        self.committed();
        if let Some(hook) = &self.on_batch {
            hook(&BatchRecorded {
                project: id,
                results: batch,
                done: self.done(),
                failed,
                tasks: self.project().tasks.len(),
                elapsed_ms: self.started.elapsed().as_millis() as u64,
            });
        }
        Ok(())
    }

    /// Commits the runs of a replicated project received since the last batch, in a file of
    /// their own (`replicas/NNNNNN.jsonl`), before the outcomes they decided.
    fn flush_runs(&mut self) -> Result<(), WorkspaceError> {
        let Some(quorum) = &mut self.quorum else {
            return Ok(());
        };
        let runs = quorum.take_unrecorded();
        if runs.is_empty() {
            return Ok(());
        }
        let id = self.reassembly.project().id.clone();
        let mut lines = Vec::with_capacity(runs.len() * 400);
        for r in &runs {
            lines.extend_from_slice(&r.to_json());
            lines.push(b'\n');
        }
        let message = format!("Project {id}: {} runs of replicas", runs.len());
        let committed = self.ws.commit_numbered(
            TRACKING,
            &sequence(&id).iter().map(String::as_str).collect::<Vec<_>>(),
            &layout::replicas_folder(&id),
            layout::BATCH_SUFFIX,
            lines,
            &[],
            &message,
        );
        if let Err(e) = committed {
            self.quorum.as_mut().expect("replicated").restore(runs);
            return Err(e);
        }
        self.committed();
        Ok(())
    }

    /// Gives every failed task of the project another chance (`resume --retry-failed`):
    /// commits a retry record (`<project>/retries/NNNNNN.json`, numbered in the batches'
    /// sequence) after which those tasks have no outcome, so the next outcome of each counts.
    /// Returns the tasks to publish again.
    pub fn retry_failed(&mut self) -> Result<tasks::Tasks, WorkspaceError> {
        self.flush()?;
        let indexes = self.reassembly.failed_indexes();
        if indexes.is_empty() {
            return Ok(tasks::Tasks::new());
        }
        let id = self.project().id.clone();
        let result = self.reassembly.result();
        let reasons: Vec<_> = result
            .failed
            .iter()
            .filter(|f| indexes.binary_search(&f.index).is_ok())
            .cloned()
            .collect();
        let record = RetryRecord {
            retry: indexes.clone(),
            failed: reasons,
        };
        let progress = progress_of(
            self.project(),
            (self.done() - indexes.len()) as u32,
            (self.reassembly.failed() - indexes.len()) as u32,
            false,
        );
        let shown: Vec<String> = indexes.iter().take(20).map(|i| i.to_string()).collect();
        let message = format!(
            "Project {id}: retrying {} failed tasks ({}{})",
            indexes.len(),
            shown.join(", "),
            if indexes.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        );
        self.ws.commit_numbered(
            TRACKING,
            &sequence(&id).iter().map(String::as_str).collect::<Vec<_>>(),
            &layout::retries_folder(&id),
            layout::RETRY_SUFFIX,
            pretty(&record),
            &[(layout::progress(&id), pretty(&progress))],
            &message,
        )?;
        // Recorded: only now do the failures stop counting.
        for &index in &indexes {
            self.reassembly.retry(index);
            if let Some(quorum) = &mut self.quorum {
                quorum.forget(index);
            }
        }
        self.committed();
        // `indexes` is in order: a search, not a scan, per task.
        Ok(self
            .project()
            .tasks
            .subset(|i| indexes.binary_search(&(i as u32)).is_ok()))
    }

    /// Commits what waits, writes the reassembled result to the results repository, and
    /// makes the tracking repository's last commit say the project is complete.
    pub fn finish(&mut self) -> Result<ProjectResult, WorkspaceError> {
        self.flush()?;
        let result = self.reassembly.result();
        let id = self.project().id.clone();
        let mut summary = summary(&result);
        let report = self.replicas_report();
        if let Some(report) = &report {
            let disagreements = report["disagreements"].as_array().map_or(0, Vec::len);
            summary.push_str(&format!(
                ", replicas {} ({disagreements} disagreements)",
                self.replicas()
            ));
        }
        // Streamed to its file: a million outputs are never held twice.
        self.ws.commit_written(
            RESULTS,
            &layout::result(&id),
            |out| write_result_record(out, &result, report),
            &format!("Project {id} result: {summary}"),
        )?;
        if !self.images.is_empty() {
            self.ws.commit(
                CONFIG,
                &[(layout::images(&id), pretty(&self.images.record()))],
                &format!("Project {id}: the images it ran with"),
            )?;
        }
        let progress = progress_of(
            self.project(),
            self.done() as u32,
            result.failed.len() as u32,
            true,
        );
        self.ws.commit(
            TRACKING,
            &[(layout::progress(&id), pretty(&progress))],
            &format!("Project {id} complete: {summary}"),
        )?;
        self.committed();
        Ok(result)
    }

    /// The result as it stands.
    pub fn result(&self) -> ProjectResult {
        self.reassembly.result()
    }
}

/// One record of a project's tracking history, in the order it was committed.
#[derive(Debug, Clone)]
pub enum Record {
    /// A batch of results (`results/NNNNNN.jsonl`); unreadable lines are left out.
    Batch(Vec<TaskResult>),
    /// A retry record (`retries/NNNNNN.json`): these tasks' failed outcomes stop counting.
    Retry(Vec<u32>),
}

/// The tracking history of project `id` at HEAD: its batches and retry records, in their
/// shared numbering (replaying them in this order gives the counted outcomes).
pub fn recorded(ws: &Workspace, id: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for_each_record(ws, id, |record| out.push(record));
    out
}

/// Calls `f` with each record of project `id`'s tracking history at HEAD, in the order of
/// [`recorded`], reading one file at a time (memory bounded by the largest batch).
pub fn for_each_record(ws: &Workspace, id: &str, mut f: impl FnMut(Record)) {
    let mut paths: Vec<(String, bool)> = Vec::new();
    for (folder, retry) in [
        (layout::results_folder(id), false),
        (layout::retries_folder(id), true),
    ] {
        for entry in ws.list_at_head(TRACKING, &folder) {
            paths.push((format!("{folder}/{entry}"), retry));
        }
    }
    paths.sort_by(|a, b| file_name(&a.0).cmp(file_name(&b.0)));
    for (path, retry) in paths {
        let Some(bytes) = ws.read_at_head(TRACKING, &path) else {
            continue;
        };
        if retry {
            match serde_json::from_slice::<RetryRecord>(&bytes) {
                Ok(r) => f(Record::Retry(r.retry)),
                Err(e) => tracing::warn!(file = %path, error = %e, "unreadable retry record"),
            }
            continue;
        }
        let results = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|line| TaskResult::from_json(line).ok())
            .collect();
        f(Record::Batch(results));
    }
}

/// The tasks-repository commit project `id` was recorded in, as its config says (projects
/// recorded before provenance existed have none).
pub fn tasks_commit_of(ws: &Workspace, id: &str) -> Option<String> {
    let config = ws.read_at_head(CONFIG, &layout::config(id))?;
    let config: serde_json::Value = serde_json::from_slice(&config).ok()?;
    config["tasks_commit"].as_str().map(str::to_string)
}

/// The images a project's counted outcomes ran in, by content digest.
#[derive(Debug, Default)]
struct Images(std::collections::BTreeMap<String, serde_json::Value>);

impl Images {
    fn new() -> Images {
        Images::default()
    }

    fn add(&mut self, result: &TaskResult) {
        let Some(p) = &result.provenance else { return };
        let Some(digest) = &p.image_digest else {
            return;
        };
        if !self.0.contains_key(digest) {
            let entry = serde_json::json!({
                "image": p.image,
                "digest": digest,
                "worker_version": p.worker_version,
            });
            self.0.insert(digest.clone(), entry);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn record(&self) -> serde_json::Value {
        serde_json::json!({ "images": self.0.values().collect::<Vec<_>>() })
    }
}

/// The folders whose files share one numbering: batches, retry records, runs of replicas.
fn sequence(id: &str) -> [String; 3] {
    [
        layout::results_folder(id),
        layout::retries_folder(id),
        layout::replicas_folder(id),
    ]
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A retry record: the failed outcomes it voids, with their reasons for the record.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RetryRecord {
    /// The task indexes whose failed outcome no longer counts.
    retry: Vec<u32>,
    /// What they had failed with.
    #[serde(default)]
    failed: Vec<tasks::reassemble::FailedTask>,
}

/// `result.json`: the result (with the report of its replicas, if any), its keys in
/// alphabetical order as they always were written, serialized straight from the result (a
/// million outputs are not copied into a JSON tree first).
fn write_result_record(
    out: &mut dyn std::io::Write,
    result: &ProjectResult,
    replicas: Option<serde_json::Value>,
) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct Record<'a> {
        complete: bool,
        failed: &'a [tasks::reassemble::FailedTask],
        missing: &'a [u32],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        outputs: &'a [Option<String>],
        project: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        replicas: Option<serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        solutions: Option<u64>,
        /// A tree, so that its keys are sorted too.
        spec: serde_json::Value,
        tasks: u32,
    }
    let record = Record {
        complete: result.complete,
        failed: &result.failed,
        missing: &result.missing,
        outputs: &result.outputs,
        project: &result.project,
        replicas,
        solutions: result.solutions,
        spec: serde_json::to_value(&result.spec).expect("a spec serialises"),
        tasks: result.tasks,
    };
    serde_json::to_writer_pretty(&mut *out, &record)?;
    out.write_all(b"\n")
}

/// One line saying what a project's result is.
pub fn summary(result: &ProjectResult) -> String {
    let done = result.tasks as usize - result.missing.len();
    let mut s = format!("{done}/{} tasks", result.tasks);
    if let Some(solutions) = result.solutions {
        s.push_str(&format!(", {solutions} solutions"));
    }
    if !result.failed.is_empty() {
        s.push_str(&format!(", {} failed", result.failed.len()));
    }
    s
}

fn describe(project: &Project) -> String {
    match project.spec {
        tasks::ProjectSpec::Nqueens { n, depth } => format!("{n}-queens split at depth {depth}"),
        tasks::ProjectSpec::Tasks => "command tasks".into(),
    }
}

fn progress_of(project: &Project, done: u32, failed: u32, complete: bool) -> Progress {
    Progress {
        schema: SCHEMA_VERSION,
        project: project.id.clone(),
        spec: project.spec.clone(),
        tasks: project.tasks.len() as u32,
        done,
        failed,
        complete,
        updated: now_rfc3339(),
    }
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn pretty<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(value).expect("serializable");
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use tasks::reassemble::FailedTask;
    use tasks::{ProjectResult, ProjectSpec};

    /// How `result.json` was written before: through a JSON tree (keys sorted).
    fn through_a_tree(result: &ProjectResult, replicas: Option<serde_json::Value>) -> Vec<u8> {
        let mut recorded = serde_json::to_value(result).unwrap();
        if let Some(report) = replicas {
            recorded["replicas"] = report;
        }
        super::pretty(&recorded)
    }

    #[test]
    fn result_json_is_written_byte_for_byte_as_before() {
        let nqueens = ProjectResult {
            project: "nq".into(),
            spec: ProjectSpec::Nqueens { n: 12, depth: 3 },
            tasks: 4,
            complete: false,
            solutions: Some(14_200),
            outputs: Vec::new(),
            failed: vec![FailedTask {
                index: 2,
                reason: "timed out after 5 s \"quoted\" é".into(),
            }],
            missing: vec![3],
        };
        let exec = ProjectResult {
            project: "ex".into(),
            spec: ProjectSpec::Tasks,
            tasks: 3,
            complete: true,
            solutions: None,
            outputs: vec![Some("a\n".into()), None, Some("ü\t\u{1}".into())],
            failed: Vec::new(),
            missing: Vec::new(),
        };
        let report = serde_json::json!({ "n": 3, "runs": 9, "disagreements": [{ "index": 1 }] });
        for result in [&nqueens, &exec] {
            for replicas in [None, Some(report.clone())] {
                let mut written = Vec::new();
                super::write_result_record(&mut written, result, replicas.clone()).unwrap();
                assert_eq!(
                    String::from_utf8(written).unwrap(),
                    String::from_utf8(through_a_tree(result, replicas)).unwrap()
                );
            }
        }
    }
}
