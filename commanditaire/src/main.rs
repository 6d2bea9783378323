//! `commanditaire`: the client of the task platform.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commanditaire::generate::{self, Request};
use commanditaire::{BatchPolicy, Exit, Mode, RunOptions, RunReport};

mod output;

/// Splits a computation into tasks, runs them on the platform's executants, and reassembles
/// the exact result, recording everything in git repositories.
///
/// Exit codes: 0 the project completed and its result is exact; 1 an error stopped it;
/// 2 bad usage (also: a new project given an id that exists); 3 some tasks failed for good
/// (their reasons are printed); 5 the project was cancelled.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The RabbitMQ URL [default: amqp://guest:guest@127.0.0.1:5672/%2f]. A password given
    /// here shows in `ps`: prefer --amqp-url-file. A cluster: several node URLs, comma-separated
    /// or the flag repeated; the binary fails over between them.
    #[arg(long, global = true, env = "AMQP_URL", hide_env_values = true, action = clap::ArgAction::Append)]
    amqp_url: Vec<String>,
    /// A file holding the RabbitMQ URL (trimmed); not with --amqp-url/AMQP_URL.
    #[arg(long, global = true, env = tasks::amqp::AMQP_URL_FILE_VAR, hide_env_values = true, conflicts_with = "amqp_url")]
    amqp_url_file: Option<PathBuf>,
    /// The folder holding the tasks, tracking, results and config repositories.
    #[arg(long, global = true, env = "WORKSPACE", default_value = "workspace")]
    workspace: PathBuf,
    /// Print one JSON object on standard output instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Also print one JSON line on standard output per batch of results recorded
    /// (`{"event":"batch","project","results","done","failed","tasks","elapsed_ms"}`).
    #[arg(long, global = true)]
    progress_json: bool,
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
    /// While following a project, keep at most this many of its tasks published and
    /// without an outcome, publishing more as outcomes arrive, so that projects submitted
    /// after it get their turn (0: publish every task at once; --detach always does).
    #[arg(long, global = true, default_value_t = commanditaire::window::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
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
    /// Run each task on N different executants; an outcome counts when N agree, a
    /// disagreement gets one more run and is reported (1 to 5; needs N executants, N + 1
    /// to settle a disagreement).
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "local",
          value_parser = clap::value_parser!(u32).range(1..=commanditaire::replicas::MAX_REPLICAS as i64))]
    replicas: u32,
    /// How soon the project's tasks run: high ones before every normal and low task
    /// waiting, low ones only when no other waits (recorded with the project).
    #[arg(long, default_value = "normal", value_name = "high|normal|low")]
    priority: tasks::Priority,
}

impl RunFlags {
    fn mode(&self) -> Mode {
        match (self.local, self.detach) {
            (true, _) => Mode::Local,
            (false, true) => Mode::Detached,
            (false, false) => Mode::Broker,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Count the solutions of the N-queens problem.
    Nqueens {
        /// The board size (1 to 32).
        n: u8,
        /// Rows fixed by each task's prefix (default: from the board and the executants on
        /// todo: 64 tasks each, more for big boards, none under about 10 ms of work).
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
        /// Seconds without a new outcome after which a project is shown as stalled.
        #[arg(long, default_value_t = commanditaire::status::STALLED_AFTER.as_secs())]
        stalled_after: u64,
    },
    /// Cancel a project: its queued tasks are not run, its running containers are stopped,
    /// the cancellation is recorded, its follower exits (code 5).
    Cancel {
        /// The project id.
        project: String,
    },
    /// Check a finished project's record in git (offline), then run a sample of its tasks
    /// again through the platform and compare. Exit 4 lists every mismatch by task index.
    Verify {
        /// The project id.
        project: String,
        /// How many tasks to run again (0: the offline checks only).
        #[arg(long, default_value_t = commanditaire::verify::DEFAULT_SAMPLE)]
        sample: usize,
        /// The seed choosing the sample (the same seed, the same tasks); by default one is
        /// drawn and printed.
        #[arg(long)]
        seed: Option<u64>,
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
    let exit = match runtime.block_on(run(cli)) {
        Ok(report) => Exit::of(Ok(report.as_ref().and_then(|r| r.result.as_ref()))),
        Err(e) => {
            let line = tasks::chain::one_line(e.as_ref());
            eprintln!("commanditaire: error: {line}");
            Exit::of(Err(e.as_ref()))
        }
    };
    ExitCode::from(exit as u8)
}

/// Runs the command; the report of the project it ran, if any.
async fn run(cli: Cli) -> anyhow::Result<Option<RunReport>> {
    let json = cli.json;
    let amqp_url = tasks::amqp::resolve_url(
        tasks::amqp::nodes::join_urls(&cli.amqp_url),
        cli.amqp_url_file.as_deref(),
    )?;
    let remote = commanditaire::remote::RemoteOptions::from_flags(
        cli.remote.clone(),
        cli.github_owner.clone(),
        cli.github_prefix.clone(),
        &cli.workspace,
    )?;
    let options = |mode, retry_failed, replicas, priority| RunOptions {
        amqp_url: amqp_url.clone(),
        workspace: cli.workspace.clone(),
        mode,
        batch: BatchPolicy::default(),
        remote: remote.clone(),
        retry_failed,
        progress_json: cli.progress_json,
        replicas,
        priority,
        max_in_flight: cli.max_in_flight,
    };
    let (request, flags) = match cli.command {
        Command::Nqueens { n, depth, run } => (Request::Nqueens { n, depth }, run),
        Command::Exec {
            image,
            count,
            script,
            run,
            command,
        } => (
            Request::Exec {
                image,
                count,
                script,
                command,
            },
            run,
        ),
        Command::Submit { file, run } => (Request::Submit { file }, run),
        Command::Status {
            project,
            stalled_after,
        } => {
            let stalled_after = std::time::Duration::from_secs(stalled_after);
            let shown = commanditaire::status(&cli.workspace, project.as_deref(), stalled_after)?;
            let provenance = match (&project, json) {
                (Some(id), true) => Some(commanditaire::provenance(&cli.workspace, id)?),
                _ => None,
            };
            output::status(&shown, provenance, json);
            return Ok(None);
        }
        Command::Verify {
            project,
            sample,
            seed,
        } => {
            let seed = seed.unwrap_or_else(output::fresh_seed);
            let found =
                commanditaire::verify::verify(&cli.workspace, &amqp_url, &project, sample, seed)
                    .await?;
            output::verification(&found, seed, json);
            if !found.mismatches.is_empty() {
                return Err(anyhow::Error::new(commanditaire::MismatchFound));
            }
            return Ok(None);
        }
        Command::Cancel { project } => {
            let ws = commanditaire::Workspace::open_or_init(&cli.workspace)?;
            let record = commanditaire::cancel::cancel(&amqp_url, &ws, &project).await?;
            output::cancelled(&record, json);
            return Ok(None);
        }
        Command::Resume {
            project,
            retry_failed,
        } => {
            let watcher = output::Bar::new(0, json);
            // The priority and replicas recorded with the project are the ones used.
            let options = options(Mode::Broker, retry_failed, 1, tasks::Priority::default());
            let report = commanditaire::resume(&options, &project, &watcher).await?;
            watcher.finish();
            output::report(&report, json);
            return Ok(Some(report));
        }
    };
    let options = options(flags.mode(), false, flags.replicas, flags.priority);
    let consumers = match (&request, options.mode) {
        // A board that is none is refused below, before any broker is asked.
        (Request::Nqueens { n, depth: None }, Mode::Broker | Mode::Detached)
            if tasks::model::validate_nqueens(*n, &[]).is_ok() =>
        {
            executants_present(&amqp_url).await
        }
        _ => 1,
    };
    let project = generate::project(&cli.workspace, &request, flags.id.as_deref(), consumers)?;
    let watcher = output::Bar::new(project.tasks.len() as u64, json);
    output::started(&project, options.mode, json);
    let report = commanditaire::submit(&options, project, &watcher).await?;
    watcher.finish();
    output::report(&report, json);
    Ok(Some(report))
}

/// The executants consuming `todo`, for the default split; one when they cannot be counted.
async fn executants_present(amqp_url: &str) -> u32 {
    match commanditaire::broker::todo_consumers(amqp_url).await {
        Ok(consumers) => consumers,
        Err(e) => {
            let e = tasks::amqp::redact_urls_in(&tasks::chain::one_line(&e));
            eprintln!(
                "commanditaire: warning: counting the executants failed ({e}); splitting for one"
            );
            1
        }
    }
}
