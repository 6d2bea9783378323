//! `commanditaire`: the client of the task platform.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use commanditaire::{BatchPolicy, RunOptions};
use tasks::model::ExecSpec;
use tasks::{Project, TaskSpec};

mod output;

/// Splits a computation into tasks, runs them on the platform's executants, and reassembles
/// the exact result, recording everything in git repositories.
///
/// Exit codes: 0 the project completed and its result is exact; 1 an error stopped it;
/// 2 bad usage (also: a new project given an id that exists); 3 some tasks failed for good
/// (their reasons are printed).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The RabbitMQ URL [default: amqp://guest:guest@127.0.0.1:5672/%2f]. A password given
    /// here shows in `ps`: prefer --amqp-url-file.
    #[arg(long, global = true, env = "AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    /// A file holding the RabbitMQ URL (trimmed); not with --amqp-url/AMQP_URL.
    #[arg(long, global = true, env = tasks::amqp::AMQP_URL_FILE_VAR, hide_env_values = true, conflicts_with = "amqp_url")]
    amqp_url_file: Option<PathBuf>,
    /// The folder holding the tasks, tracking, results and config repositories.
    #[arg(long, global = true, env = "WORKSPACE", default_value = "workspace")]
    workspace: PathBuf,
    /// Print one JSON object on standard output instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Push each repository R to BASE/R.git (a git URL or a local folder) after each step
    /// that matters; https remotes read their token from GIT_REMOTE_TOKEN.
    #[arg(long, global = true, env = "GIT_REMOTE_BASE", hide_env_values = true)]
    remote: Option<String>,
    /// Create the repositories on GitHub under this user or organisation (private, named
    /// PREFIX-R) and push there; the token comes from GITHUB_TOKEN only.
    #[arg(long, global = true, env = "GITHUB_OWNER", conflicts_with = "remote")]
    github_owner: Option<String>,
    /// The GitHub repositories' name prefix (default: the workspace folder's name).
    #[arg(long, global = true, env = "GITHUB_PREFIX")]
    github_prefix: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct RunFlags {
    /// Compute in this process on every core: no broker, no container.
    #[arg(long)]
    local: bool,
    /// Publish the tasks and return; follow later with `status` and `resume`.
    #[arg(long, conflicts_with = "local")]
    detach: bool,
    /// Project id (default: generated).
    #[arg(long)]
    id: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Count the solutions of the N-queens problem.
    Nqueens {
        /// The board size (1 to 32).
        n: u8,
        /// Rows fixed by each task's prefix (default: enough for a few hundred tasks).
        #[arg(long)]
        depth: Option<u8>,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Run a command in a container image, once per task; `{project}` and `{index}` in the
    /// arguments are replaced by the project id and the task number.
    Exec {
        /// The image (must be on the executants' allowlist).
        #[arg(long, default_value = "debian:bookworm-slim")]
        image: String,
        /// How many tasks.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// A script to commit to the tasks repository and mount read-only in each task's
        /// container (code on demand); `{script}` in the arguments is replaced by its path
        /// inside the container.
        #[arg(long)]
        script: Option<PathBuf>,
        #[command(flatten)]
        run: RunFlags,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run a project written by hand: a JSON array of task specs (each with a `kind`).
    Submit {
        /// The JSON file.
        file: PathBuf,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Show the progress of the projects recorded in the tracking repository.
    Status {
        /// Only this project.
        project: Option<String>,
    },
    /// Finish a project after the client was stopped, without republishing finished tasks
    /// (tasks with no outcome that are in no queue are published again).
    Resume {
        /// The project id.
        project: String,
        /// Run the project's failed tasks again; a new outcome replaces a failed one.
        #[arg(long)]
        retry_failed: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("commanditaire: error: {e:#}");
            let exists = e.downcast_ref::<commanditaire::ProjectExists>().is_some()
                || matches!(
                    e.downcast_ref::<commanditaire::ClientError>(),
                    Some(commanditaire::ClientError::Exists(_))
                );
            if exists {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    let amqp_url = tasks::amqp::resolve_url(cli.amqp_url.clone(), cli.amqp_url_file.as_deref())?;
    let remote = commanditaire::remote::RemoteOptions::from_flags(
        cli.remote.clone(),
        cli.github_owner.clone(),
        cli.github_prefix.clone(),
        &cli.workspace,
    )?;
    let options = |flags: &RunFlags| RunOptions {
        amqp_url: amqp_url.clone(),
        workspace: cli.workspace.clone(),
        local: flags.local,
        detach: flags.detach,
        batch: BatchPolicy::default(),
        remote: remote.clone(),
        retry_failed: false,
    };
    let (options, project) = match &cli.command {
        Command::Nqueens { n, depth, run } => {
            let depth = depth.unwrap_or_else(|| default_depth(*n));
            let id = run
                .id
                .clone()
                .unwrap_or_else(|| generated_id(&format!("nq{n}-d{depth}")));
            let project = tasks::split::nqueens_project(&id, *n, depth)?;
            (options(run), project)
        }
        Command::Exec {
            image,
            count,
            script,
            run,
            command,
        } => {
            let id = run.id.clone().unwrap_or_else(|| generated_id("exec"));
            tasks::model::validate_project_id(&id)?;
            // Before the script is committed under the id: an id that exists is refused.
            let ws = commanditaire::Workspace::open_or_init(&cli.workspace)?;
            commanditaire::ensure_new(&ws, &id)?;
            let script = match script {
                Some(path) => Some(commit_script(&cli.workspace, &id, path)?),
                None => None,
            };
            let in_container = script
                .as_ref()
                .map(|s| format!("/task/{}", s.path))
                .unwrap_or_default();
            let specs = (0..*count)
                .map(|i| {
                    TaskSpec::Exec(ExecSpec {
                        image: image.clone(),
                        command: command
                            .iter()
                            .map(|a| {
                                a.replace("{project}", &id)
                                    .replace("{index}", &i.to_string())
                                    .replace("{script}", &in_container)
                            })
                            .collect(),
                        script: script.clone(),
                    })
                })
                .collect();
            (options(run), Project::from_specs(&id, specs)?)
        }
        Command::Submit { file, run } => {
            let text =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let specs: Vec<TaskSpec> = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a JSON array of task specs", file.display()))?;
            let id = run.id.clone().unwrap_or_else(|| generated_id("project"));
            (
                options(run),
                Project::from_specs(&id, specs).with_context(|| file.display().to_string())?,
            )
        }
        Command::Status { project } => {
            let ws = commanditaire::Workspace::open_or_init(&cli.workspace)?;
            let all = commanditaire::tracking::all_progress(&ws);
            let shown: Vec<_> = all
                .into_iter()
                .filter(|p| project.as_ref().is_none_or(|id| *id == p.project))
                .collect();
            if let Some(id) = project {
                anyhow::ensure!(
                    !shown.is_empty(),
                    "project {id} is not in {}",
                    ws.repo_path("tracking").display()
                );
            }
            output::status(&shown, json);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Resume {
            project,
            retry_failed,
        } => {
            let flags = RunFlags {
                local: false,
                detach: false,
                id: None,
            };
            let opts = RunOptions {
                retry_failed: *retry_failed,
                ..options(&flags)
            };
            let watcher = output::Bar::new(0, json);
            let ws = commanditaire::Workspace::open_or_init(&opts.workspace)?;
            let loaded =
                commanditaire::tracking::load_project(&ws, project).map_err(anyhow::Error::msg)?;
            watcher.set_total(loaded.tasks.len() as u64);
            let result = commanditaire::resume(&opts, project, &watcher).await?;
            watcher.finish();
            return Ok(report(result, json));
        }
    };
    let watcher = output::Bar::new(project.tasks.len() as u64, json);
    if !json {
        eprintln!(
            "project {}: {} tasks ({})",
            project.id,
            project.tasks.len(),
            if options.local {
                "computed locally"
            } else {
                "through the broker"
            }
        );
    }
    let result = commanditaire::submit(&options, project, &watcher).await?;
    watcher.finish();
    Ok(report(result, json))
}

fn report(run: commanditaire::RunReport, json: bool) -> ExitCode {
    match &run.result {
        None => {
            output::detached(&run, json);
            ExitCode::SUCCESS
        }
        Some(result) => {
            output::result(result, &run, json);
            if result.complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
    }
}

/// Commits `path` to the tasks repository as `<project>/scripts/<name>` and returns the
/// reference the executants fetch it by.
fn commit_script(
    workspace: &std::path::Path,
    id: &str,
    path: &std::path::Path,
) -> anyhow::Result<tasks::model::ScriptRef> {
    let content = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?;
    let ws = commanditaire::Workspace::open_or_init(workspace)?;
    let rel = format!("{id}/scripts/{name}");
    let commit = ws.commit(
        "tasks",
        &[(rel.clone(), content)],
        &format!("Project {id}: script {name}"),
    )?;
    let repo = std::fs::canonicalize(ws.repo_path("tasks"))?;
    Ok(tasks::model::ScriptRef {
        repo: repo.display().to_string(),
        commit: commit.to_string(),
        path: rel,
    })
}

/// A depth that gives tasks neither tiny nor huge: a few hundred tasks for large boards.
fn default_depth(n: u8) -> u8 {
    match n {
        0..=6 => 1,
        7..=12 => 2,
        13..=16 => 3,
        _ => 4,
    }
}

fn generated_id(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{:08x}",
        (nanos ^ (std::process::id() as u128) << 32) as u32
    )
}
