//! `executant`: runs platform tasks from the TODO queue in sandboxed containers.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use executant::{Config, Limits};

/// Consumes the `todo` queue and runs each task in a sandboxed container (no network,
/// read-only root, no capabilities, unprivileged user, memory/CPU/pids limits, a wall-clock
/// timeout), then publishes its result to the project's results queue.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The RabbitMQ URL [default: amqp://guest:guest@127.0.0.1:5672/%2f]. A password given
    /// here shows in `ps`: prefer --amqp-url-file. A cluster: several node URLs, comma-separated
    /// or the flag repeated; the binary fails over between them.
    #[arg(long, env = "AMQP_URL", hide_env_values = true, action = clap::ArgAction::Append)]
    amqp_url: Vec<String>,
    /// A file holding the RabbitMQ URL (trimmed); not with --amqp-url/AMQP_URL.
    #[arg(long, env = tasks::amqp::AMQP_URL_FILE_VAR, hide_env_values = true, conflicts_with = "amqp_url")]
    amqp_url_file: Option<std::path::PathBuf>,
    /// How many containers run at once (worker containers of one project, and `exec`
    /// tasks); default: the number of cores.
    #[arg(long, env = "EXECUTANT_CONCURRENCY")]
    concurrency: Option<u16>,
    /// How many tasks are taken from todo ahead (at least --concurrency); default: sized to
    /// the work as it goes, from --concurrency (long tasks) up to 512 (short ones).
    #[arg(long, env = "EXECUTANT_PREFETCH")]
    prefetch: Option<u16>,
    /// The image N-queens tasks run in.
    #[arg(long, env = "EXECUTANT_WORKER_IMAGE", default_value = executant::config::DEFAULT_WORKER_IMAGE)]
    worker_image: String,
    /// An image `exec` tasks may name (repeat the flag; comma-separated in the variable).
    #[arg(
        long = "allow-image",
        env = "EXECUTANT_ALLOW_IMAGES",
        value_delimiter = ',',
        default_value = "debian:bookworm-slim"
    )]
    allow_images: Vec<String>,
    /// Wall-clock limit of a task that sets none, in seconds.
    #[arg(long, env = "EXECUTANT_TASK_TIMEOUT", default_value_t = 600)]
    task_timeout: u64,
    /// The largest limit a task may ask for, in seconds (below RabbitMQ's consumer_timeout).
    #[arg(long, env = "EXECUTANT_MAX_TASK_TIMEOUT", default_value_t = 1500)]
    max_task_timeout: u64,
    /// The broker's consumer_timeout, in seconds (RabbitMQ's default: 30 min). No delivery is
    /// held longer than this less a margin; a --max-task-timeout that does not fit is refused.
    #[arg(long, env = "EXECUTANT_CONSUMER_TIMEOUT", default_value_t = 1800)]
    consumer_timeout: u64,
    /// Seconds a publish waits for the broker's confirm before its connection is replaced
    /// and the outcome published again.
    #[arg(long, env = "EXECUTANT_CONFIRM_TIMEOUT", default_value_t = 15)]
    confirm_timeout: u64,
    /// Seconds the Docker engine may stay unreachable before the tasks held here go back to
    /// the queue (for other executants) and no more are taken until it answers again.
    #[arg(long, env = "EXECUTANT_ENGINE_GRACE", default_value_t = 15)]
    engine_grace: u64,
    /// Milliseconds a task returned after a fault outside it (engine error, container lost)
    /// waits in a delay queue before its next attempt; each later retry waits twice as long.
    #[arg(long, env = "EXECUTANT_RETRY_DELAY_MS", default_value_t = 1000)]
    retry_delay_ms: u64,
    /// The longest wait between two attempts of a task, in milliseconds.
    #[arg(long, env = "EXECUTANT_RETRY_DELAY_MAX_MS", default_value_t = 60_000)]
    retry_delay_max_ms: u64,
    /// How many N-queens tasks of one project a worker container serves before it is
    /// replaced; default: 10000 for the platform's own worker image
    /// (taskplatform/worker:latest), 1 (a container per task) for any other.
    #[arg(long, env = "EXECUTANT_REUSE")]
    reuse: Option<u32>,
    /// Memory limit of a task container, in MiB.
    #[arg(long, env = "EXECUTANT_MEMORY_MIB", default_value_t = 256)]
    memory_mib: i64,
    /// CPU limit of a task container, in CPUs.
    #[arg(long, env = "EXECUTANT_CPUS", default_value_t = 1.0)]
    cpus: f64,
    /// Process/thread limit of a task container.
    #[arg(long, env = "EXECUTANT_PIDS", default_value_t = 64)]
    pids: i64,
    /// Open files per task process (the `nofile` ulimit).
    #[arg(long, env = "EXECUTANT_NOFILE", default_value_t = 1024)]
    nofile: i64,
    /// Processes of the task user across the host (the `nproc` ulimit; --pids bounds one
    /// container).
    #[arg(long, env = "EXECUTANT_NPROC", default_value_t = 4096)]
    nproc: i64,
    /// Seconds a shutdown waits for tasks in flight before returning them to the queue.
    #[arg(long, env = "EXECUTANT_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace: u64,
    /// Where task scripts are written and bind-mounted from (the same path must exist on the
    /// Docker host: in a container, mount it at the same path); default: the temp folder.
    #[arg(long, env = "EXECUTANT_SCRIPTS_DIR")]
    scripts_dir: Option<std::path::PathBuf>,
    /// A repository task scripts may be fetched from (repeat the flag; comma-separated in the
    /// variable): a path or git URL as the client writes it in `script.repo` (its
    /// workspace's `tasks` repository), or `DIR/**` for any under DIR. None by default:
    /// script tasks are refused.
    #[arg(
        long = "allow-script-repo",
        env = "ALLOW_SCRIPT_REPO",
        value_delimiter = ','
    )]
    allow_script_repos: Vec<String>,
    /// How long fetching a task's script repository may take, in seconds.
    #[arg(long, env = "EXECUTANT_SCRIPT_FETCH_TIMEOUT", default_value_t = 60)]
    script_fetch_timeout: u64,
    /// How much fetching a task's script repository may bring in, in MiB.
    #[arg(long, env = "EXECUTANT_SCRIPT_FETCH_MAX_MIB", default_value_t = 64)]
    script_fetch_max_mib: u64,
    /// This executant's name (logs, container labels, results); default: host-pid.
    #[arg(long, env = "EXECUTANT_NAME")]
    name: Option<String>,
    /// Serve Prometheus metrics (`/metrics`) and health checks (`/healthz`: alive, `/readyz`:
    /// consuming todo) on this address, e.g. 127.0.0.1:9187; none by default.
    #[arg(long, env = "EXECUTANT_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let amqp_url = match tasks::amqp::resolve_url(
        tasks::amqp::nodes::join_urls(&cli.amqp_url),
        cli.amqp_url_file.as_deref(),
    ) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("executant: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = Config::new(amqp_url);
    if let Some(c) = cli.concurrency {
        config.concurrency = c;
    }
    if let Some(name) = cli.name {
        config.name = name;
    }
    if let Some(dir) = cli.scripts_dir {
        config.scripts_dir = dir;
    }
    if let Err(e) = std::fs::create_dir_all(&config.scripts_dir) {
        eprintln!(
            "executant: error: creating the scripts folder {}: {e}",
            config.scripts_dir.display()
        );
        return ExitCode::FAILURE;
    }
    if let Some(bad) = cli
        .allow_script_repos
        .iter()
        .find(|e| !executant::script::valid_entry(e))
    {
        eprintln!(
            "executant: error: --allow-script-repo {bad:?}: give an absolute path or a git URL \
             (optionally ending in /**)"
        );
        return ExitCode::FAILURE;
    }
    config.allowed_script_repos = cli.allow_script_repos;
    config.metrics_listen = cli.metrics_listen;
    config.script_fetch = executant::script::FetchLimits {
        timeout: Duration::from_secs(cli.script_fetch_timeout),
        max_bytes: cli.script_fetch_max_mib * 1024 * 1024,
    };
    config.worker_image = cli.worker_image;
    config.allowed_images = cli.allow_images;
    config.default_timeout = Duration::from_secs(cli.task_timeout);
    config.max_timeout = Duration::from_secs(cli.max_task_timeout);
    config.reuse = cli
        .reuse
        .unwrap_or_else(|| executant::config::default_reuse(&config.worker_image));
    config.prefetch = cli.prefetch;
    config.consumer_timeout = Duration::from_secs(cli.consumer_timeout);
    config.confirm_timeout = Duration::from_secs(cli.confirm_timeout);
    config.shutdown_grace = Duration::from_secs(cli.shutdown_grace);
    config.engine_grace = Duration::from_secs(cli.engine_grace);
    config.retry_delay = Duration::from_millis(cli.retry_delay_ms);
    config.retry_delay_max = Duration::from_millis(cli.retry_delay_max_ms);
    config.limits = Limits {
        memory_bytes: cli.memory_mib * 1024 * 1024,
        nano_cpus: (cli.cpus * 1e9) as i64,
        pids: cli.pids,
        nofile: cli.nofile,
        nproc: cli.nproc,
        ..Limits::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(executant::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("executant: error: {}", tasks::chain::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested: finishing the tasks in flight");
}
