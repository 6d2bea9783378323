//! The workspace layout: where each record of a project lives. Pure path functions (no
//! I/O): the client writes these paths, broker-api and the fault suite read them.
//!
//! A workspace is four git repositories in one folder; per project `P`:
//! - `tasks/P/project.json` (what was asked), `tasks/P/tasks.jsonl` (one task per line) and
//!   `tasks/P/scripts/NAME` (scripts fetched by the executants, code on demand);
//! - `config/P/config.json` (images and limits the project ran with, the tasks commit) and
//!   `config/P/images.json` (the content digests of the images its outcomes ran in);
//! - `tracking/P/progress.json`, `tracking/P/published` (every task was published once),
//!   `tracking/P/cancelled.json` (`commanditaire cancel`: when, and the counts then),
//!   `tracking/P/results/NNNNNN.jsonl` (one file per batch of results) and
//!   `tracking/P/retries/NNNNNN.json` (`resume --retry-failed`, numbered in the same
//!   sequence as the batches); with `--replicas N`, `tracking/P/replicas/NNNNNN.jsonl`
//!   (every run of every replica, numbered in that sequence too);
//! - `results/P/result.json` (the reassembled outcome).
//!
//! Paths below are relative to their repository, with `/` separators (as git2 takes them).

/// The repository of the projects' tasks.
pub const TASKS: &str = "tasks";
/// The repository of the projects' progress and results as they arrive.
pub const TRACKING: &str = "tracking";
/// The repository of the projects' reassembled results.
pub const RESULTS: &str = "results";
/// The repository of the projects' settings.
pub const CONFIG: &str = "config";
/// The four repositories of a workspace, in the order they are created and pushed.
pub const REPOSITORIES: [&str; 4] = [TASKS, TRACKING, RESULTS, CONFIG];

/// The extension of a batch of results in [`results_folder`].
pub const BATCH_SUFFIX: &str = "jsonl";
/// The extension of a retry record in [`retries_folder`].
pub const RETRY_SUFFIX: &str = "json";

/// In [`TASKS`]: what project `project` asked for.
pub fn project_header(project: &str) -> String {
    format!("{project}/project.json")
}

/// In [`TASKS`]: the project's tasks, one JSON line each.
pub fn task_list(project: &str) -> String {
    format!("{project}/tasks.jsonl")
}

/// In [`TASKS`]: a script of the project, named `name`.
pub fn script(project: &str, name: &str) -> String {
    format!("{project}/scripts/{name}")
}

/// In [`CONFIG`]: the settings the project ran with.
pub fn config(project: &str) -> String {
    format!("{project}/config.json")
}

/// In [`CONFIG`]: the content digests of the images the project's outcomes ran in,
/// written when the project completes.
pub fn images(project: &str) -> String {
    format!("{project}/images.json")
}

/// In [`TRACKING`]: the project's progress ([`crate::progress::Progress`]).
pub fn progress(project: &str) -> String {
    format!("{project}/progress.json")
}

/// In [`TRACKING`]: present once every task of the project was published.
pub fn published_marker(project: &str) -> String {
    format!("{project}/published")
}

/// In [`TRACKING`]: the folder of the project's batches of results (lines of results only).
pub fn results_folder(project: &str) -> String {
    format!("{project}/results")
}

/// In [`TRACKING`]: the folder of the project's retry records, apart from the batches,
/// which readers take as lines of results.
pub fn retries_folder(project: &str) -> String {
    format!("{project}/retries")
}

/// In [`TRACKING`]: the folder of a replicated project's runs (`--replicas N`): every
/// outcome received, one line each, whether it counted or not; `results/` holds only the
/// outcomes that counted.
pub fn replicas_folder(project: &str) -> String {
    format!("{project}/replicas")
}

/// In [`TRACKING`]: present once the project was cancelled, with the counts at that moment.
pub fn cancellation(project: &str) -> String {
    format!("{project}/cancelled.json")
}

/// In [`RESULTS`]: the project's reassembled result.
pub fn result(project: &str) -> String {
    format!("{project}/result.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_a_project() {
        let table = [
            (project_header("p"), "p/project.json"),
            (task_list("p"), "p/tasks.jsonl"),
            (script("p", "run.sh"), "p/scripts/run.sh"),
            (config("p"), "p/config.json"),
            (progress("p"), "p/progress.json"),
            (published_marker("p"), "p/published"),
            (results_folder("p"), "p/results"),
            (retries_folder("p"), "p/retries"),
            (replicas_folder("p"), "p/replicas"),
            (result("p"), "p/result.json"),
            (cancellation("p"), "p/cancelled.json"),
        ];
        for (path, expected) in table {
            assert_eq!(path, expected);
        }
        assert_eq!(REPOSITORIES, ["tasks", "tracking", "results", "config"]);
    }
}
