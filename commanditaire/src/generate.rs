//! Turning a request (`nqueens`, `exec`, `submit`) into a project: ids, the default depth,
//! exec specs with their placeholders, scripts committed for code on demand.

use std::path::{Path, PathBuf};

use tasks::layout;
use tasks::model::{ExecSpec, ScriptRef, TaskError};
use tasks::{Project, TaskSpec};

use crate::tracking::{ensure_new, ProjectExists};
use crate::workspace::{Workspace, WorkspaceError};

/// What the person asked for.
#[derive(Debug, Clone)]
pub enum Request {
    /// Count the solutions of the N-queens problem.
    Nqueens {
        /// The board size.
        n: u8,
        /// Rows fixed by each task's prefix (`None`: [`default_depth`]).
        depth: Option<u8>,
    },
    /// Run a command in an image, once per task.
    Exec {
        /// The image.
        image: String,
        /// How many tasks.
        count: u32,
        /// A script to commit and mount in each task's container.
        script: Option<PathBuf>,
        /// The command and its arguments, with placeholders (see [`substitute`]).
        command: Vec<String>,
    },
    /// A JSON file holding an array of task specs.
    Submit {
        /// The file.
        file: PathBuf,
    },
}

/// Why a request could not become a project.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The project is invalid (its id, a task).
    #[error(transparent)]
    Invalid(#[from] TaskError),
    /// A task of a submitted file is invalid.
    #[error("{}", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: TaskError,
    },
    /// A file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A submitted file is not JSON task specs.
    #[error("{} is not a JSON array of task specs", path.display())]
    NotSpecs {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A script's path has no file name to commit it under.
    #[error("{} has no usable file name", .0.display())]
    ScriptName(PathBuf),
    /// The workspace.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// A new project was given the id of one the workspace already has.
    #[error(transparent)]
    Exists(#[from] ProjectExists),
}

/// Makes the project `request` asks for, with id `id` (`None`: generated), an N-queens
/// board without a depth split for `consumers` executants ([`default_depth`]). An exec
/// request's script is committed to the workspace's tasks repository first, once the id is
/// known to be new.
pub fn project(
    workspace: &Path,
    request: &Request,
    id: Option<&str>,
    consumers: u32,
) -> Result<Project, GenerateError> {
    match request {
        Request::Nqueens { n, depth } => {
            // The board first: the default split walks the board, which must be one.
            tasks::model::validate_nqueens(*n, &[])?;
            let depth = depth.unwrap_or_else(|| default_depth(*n, consumers));
            let id = id.map_or_else(|| generated_id(&format!("nq{n}-d{depth}")), String::from);
            Ok(tasks::split::nqueens_project(&id, *n, depth)?)
        }
        Request::Exec {
            image,
            count,
            script,
            command,
        } => {
            let id = id.map_or_else(|| generated_id("exec"), String::from);
            tasks::model::validate_project_id(&id)?;
            // Before the script is committed under the id: an id that exists is refused.
            let ws = Workspace::open_or_init(workspace)?;
            ensure_new(&ws, &id)?;
            let script = match script {
                Some(path) => Some(commit_script(&ws, &id, path)?),
                None => None,
            };
            let specs = exec_specs(&id, image, *count, command, script.as_ref());
            Ok(Project::from_specs(&id, specs)?)
        }
        Request::Submit { file } => {
            let text = std::fs::read(file).map_err(|source| GenerateError::Read {
                path: file.clone(),
                source,
            })?;
            let specs: Vec<TaskSpec> =
                serde_json::from_slice(&text).map_err(|source| GenerateError::NotSpecs {
                    path: file.clone(),
                    source,
                })?;
            let id = id.map_or_else(|| generated_id("project"), String::from);
            Project::from_specs(&id, specs).map_err(|source| GenerateError::InvalidFile {
                path: file.clone(),
                source,
            })
        }
    }
}

/// Tasks wanted per executant consuming `todo`: enough that the last tasks of a project
/// (each executant holds a few ahead) are a small part of its time.
pub const TASKS_PER_CONSUMER: u64 = 64;

/// The least work a task is worth, counted in solutions of the board: about 10 ms of the
/// engine (it counts some 9 million solutions a second on one core here), against about
/// half a millisecond of broker, JSON and tracking per task.
pub const MIN_TASK_SOLUTIONS: u64 = 100_000;

/// The work a task should hold at most, counted the same way: about 0.45 s of the engine.
/// Big boards are split until their tasks are no bigger on average, so that the last tasks
/// to finish leave the cores idle for little of the project's time.
pub const MAX_TASK_SOLUTIONS: u64 = 4_000_000;

/// How many tasks an `n` board should make for `consumers` executants on `todo` (none
/// counts as one): [`TASKS_PER_CONSUMER`] per executant, more if the board's work
/// (its published count) needs more to keep tasks under [`MAX_TASK_SOLUTIONS`] on average,
/// but never so many that a task holds less than [`MIN_TASK_SOLUTIONS`] (boards past the
/// published counts are split for the executants alone).
pub fn wanted_tasks(n: u8, consumers: u32) -> u64 {
    let by_consumers = TASKS_PER_CONSUMER * u64::from(consumers.max(1));
    match tasks::nqueens::known_count(n) {
        Some(solutions) => by_consumers
            .max(solutions.div_ceil(MAX_TASK_SOLUTIONS))
            .min(solutions / MIN_TASK_SOLUTIONS),
        None => by_consumers,
    }
}

/// The default depth of an `n` board for `consumers` executants on `todo`: the smallest
/// depth giving [`wanted_tasks`]. A board with work for one task at most is one task
/// (depth 0).
///
/// Measured on one machine with one executant (2 cores): N = 17 at depth 2 (100 tasks of
/// about 0.1 s) ran through the platform in 1.01x the time of `--local`, at depth 3 (1,031
/// tasks of about 10 ms) in 1.21x; N = 18 at depth 3 (1,354 tasks) in 1.06x, at depth 2 (121
/// tasks of about 0.6 s) in 1.09x.
pub fn default_depth(n: u8, consumers: u32) -> u8 {
    let wanted = wanted_tasks(n, consumers);
    if wanted <= 1 {
        return 0;
    }
    (1..n)
        .find(|&depth| task_count(n, depth) >= wanted)
        .unwrap_or(n)
}

/// How many tasks an `n` board split at `depth` makes (what [`tasks::split::nqueens_project`]
/// makes, without making them).
pub fn task_count(n: u8, depth: u8) -> u64 {
    if n >= tasks::nqueens::MIN_CLASS_N {
        let mut count = 0;
        tasks::split::class_prefixes(n, depth, |_| count += 1);
        count
    } else {
        tasks::split::nqueens_prefixes(n, depth).count() as u64
    }
}

/// A new project id: `prefix-` and 8 hex digits from the clock and the process id.
pub fn generated_id(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    id_from(prefix, nanos, std::process::id())
}

fn id_from(prefix: &str, nanos: u128, pid: u32) -> String {
    format!("{prefix}-{:08x}", (nanos ^ (pid as u128) << 32) as u32)
}

/// `arg` with `{project}`, `{index}` and `{script}` replaced.
pub fn substitute(arg: &str, project: &str, index: u32, script: &str) -> String {
    arg.replace("{project}", project)
        .replace("{index}", &index.to_string())
        .replace("{script}", script)
}

/// The `count` exec specs of project `id`: `command` with its placeholders replaced for
/// each task, `{script}` by the script's path inside the container (`/task/<path>`).
pub fn exec_specs(
    id: &str,
    image: &str,
    count: u32,
    command: &[String],
    script: Option<&ScriptRef>,
) -> Vec<TaskSpec> {
    let in_container = script
        .map(|s| format!("/task/{}", s.path))
        .unwrap_or_default();
    (0..count)
        .map(|i| {
            TaskSpec::Exec(ExecSpec {
                image: image.to_string(),
                command: command
                    .iter()
                    .map(|a| substitute(a, id, i, &in_container))
                    .collect(),
                script: script.cloned(),
            })
        })
        .collect()
}

/// Commits `path` to the tasks repository as `<project>/scripts/<name>` and returns the
/// reference the executants fetch it by.
pub fn commit_script(ws: &Workspace, id: &str, path: &Path) -> Result<ScriptRef, GenerateError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError::Read { path, source }
    };
    let content = std::fs::read(path).map_err(read(path))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| GenerateError::ScriptName(path.to_path_buf()))?;
    let rel = layout::script(id, name);
    let commit = ws.commit(
        layout::TASKS,
        &[(rel.clone(), content)],
        &format!("Project {id}: script {name}"),
    )?;
    let tasks_repo = ws.repo_path(layout::TASKS);
    let repo = std::fs::canonicalize(&tasks_repo).map_err(read(&tasks_repo))?;
    Ok(ScriptRef {
        repo: repo.display().to_string(),
        commit: commit.to_string(),
        path: rel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_depth_by_board_and_executants() {
        // (n, consumers, depth): the counts of the published table bound small boards.
        let table = [
            (8, 1, 0),
            (12, 1, 0),
            (14, 1, 1),
            (16, 1, 2),
            (17, 0, 2),
            (17, 1, 2),
            (17, 8, 3),
            (18, 1, 3),
            (18, 16, 3),
            (18, 32, 4),
            (19, 1, 3),
        ];
        for (n, consumers, depth) in table {
            assert_eq!(
                default_depth(n, consumers),
                depth,
                "n = {n}, {consumers} consumers"
            );
        }
        // The rule itself: the smallest depth making the tasks wanted.
        for (n, consumers) in [(17, 1), (18, 1), (18, 16), (20, 4), (21, 2)] {
            let depth = default_depth(n, consumers);
            let wanted = wanted_tasks(n, consumers);
            assert!(task_count(n, depth) >= wanted, "n = {n}");
            assert!(task_count(n, depth - 1) < wanted, "n = {n}");
        }
        // Enough for the executants; tasks no bigger than the bound on average, no smaller
        // than the least (N = 18's 666 million solutions want 167 tasks of 4 million).
        assert_eq!(wanted_tasks(17, 1), TASKS_PER_CONSUMER);
        assert_eq!(wanted_tasks(18, 1), 167);
        assert_eq!(wanted_tasks(18, 16), 16 * TASKS_PER_CONSUMER);
        assert_eq!(wanted_tasks(15, 8), 22);
        // Past the published counts: for the executants alone.
        assert_eq!(wanted_tasks(28, 3), 3 * TASKS_PER_CONSUMER);
    }

    #[test]
    fn task_count_is_what_the_split_makes() {
        for (n, depth) in [(5, 2), (10, 3), (12, 5), (17, 3)] {
            let project = tasks::split::nqueens_project("p", n, depth).unwrap();
            assert_eq!(task_count(n, depth), project.tasks.len() as u64);
        }
    }

    #[test]
    fn ids_are_prefixed_hex_and_valid() {
        assert_eq!(id_from("exec", 0, 0), "exec-00000000");
        assert_eq!(id_from("exec", 0x1234_5678, 0), "exec-12345678");
        // Only the low 32 bits are kept; the process id lands above them.
        assert_eq!(id_from("p", 0xab_0000_0001, 7), "p-00000001");
        for prefix in ["nq8-d2", "exec", "project"] {
            let id = generated_id(prefix);
            let (head, hex) = id.rsplit_once('-').unwrap();
            assert_eq!(head, prefix);
            assert_eq!(hex.len(), 8, "{id}");
            assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
            tasks::model::validate_project_id(&id).unwrap();
        }
    }

    #[test]
    fn placeholders_are_substituted() {
        let table = [
            ("echo", "echo"),
            ("{project}", "p1"),
            ("{index}", "7"),
            ("{script}", "/task/p1/scripts/s.sh"),
            ("{project}/{index}.{index}", "p1/7.7"),
            ("{unknown} {Project}", "{unknown} {Project}"),
        ];
        for (arg, expected) in table {
            assert_eq!(substitute(arg, "p1", 7, "/task/p1/scripts/s.sh"), expected);
        }
    }

    #[test]
    fn exec_specs_one_per_task() {
        let command: Vec<String> = ["sh", "{script}", "{project}-{index}"]
            .map(String::from)
            .into();
        let none = exec_specs("p", "img", 2, &command, None);
        assert_eq!(
            none,
            vec![
                TaskSpec::Exec(ExecSpec {
                    image: "img".into(),
                    command: vec!["sh".into(), "".into(), "p-0".into()],
                    script: None,
                }),
                TaskSpec::Exec(ExecSpec {
                    image: "img".into(),
                    command: vec!["sh".into(), "".into(), "p-1".into()],
                    script: None,
                }),
            ]
        );
        let script = ScriptRef {
            repo: "/ws/tasks".into(),
            commit: "0".repeat(40),
            path: "p/scripts/run.sh".into(),
        };
        let with = exec_specs("p", "img", 1, &command, Some(&script));
        assert_eq!(
            with,
            vec![TaskSpec::Exec(ExecSpec {
                image: "img".into(),
                command: vec!["sh".into(), "/task/p/scripts/run.sh".into(), "p-0".into()],
                script: Some(script.clone()),
            })]
        );
        assert!(exec_specs("p", "img", 0, &command, None).is_empty());
    }
}
