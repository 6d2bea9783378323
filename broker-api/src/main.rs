//! `broker-api`: parses flags, sets up logging, and serves until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// An HTTP API over the platform's RabbitMQ queues, with a web page at `/`.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "The API token is read from the environment variable BROKER_API_TOKEN or from \
--token-file; with neither, a random token is generated and printed once on stderr.\n\
Every /api/ route needs `Authorization: Bearer <token>`; /healthz, /readyz, /metrics, \
/openapi.json and the page at / do not.\nLogs: RUST_LOG (default `info,lapin=off`: lapin would log returned message bodies)."
)]
struct Args {
    /// The address to listen on.
    #[arg(long, env = "BROKER_API_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The broker's AMQP URL.
    #[arg(long, env = "AMQP_URL", hide_env_values = true, default_value = tasks::amqp::DEFAULT_AMQP_URL)]
    amqp_url: String,
    /// A file holding the API token (surrounding whitespace is trimmed).
    #[arg(long, env = "BROKER_API_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The platform workspace; its `tracking` repository gives the projects view.
    #[arg(long, env = "WORKSPACE")]
    workspace: Option<PathBuf>,
    /// The largest request body accepted, in bytes.
    #[arg(long, env = "BROKER_API_BODY_LIMIT", default_value_t = broker_api::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// How long a request may take, in seconds, before it is answered 504.
    #[arg(long, env = "BROKER_API_REQUEST_TIMEOUT", default_value_t = 10.0)]
    request_timeout: f64,
    /// How many shared channels publishes are spread over.
    #[arg(long, env = "BROKER_API_PUBLISH_CHANNELS", default_value_t = broker_api::DEFAULT_PUBLISH_CHANNELS)]
    publish_channels: usize,
    /// Queues to list from the start (comma-separated), besides `todo`, `todo.dead`, the
    /// workspace's results queues and those created or used through the API.
    #[arg(long = "queue", env = "BROKER_API_QUEUES", value_delimiter = ',')]
    queues: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,lapin=off".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker-api: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let token = match (std::env::var("BROKER_API_TOKEN").ok(), &args.token_file) {
        (Some(_), Some(_)) => {
            anyhow::bail!("give the token in BROKER_API_TOKEN or --token-file, not both")
        }
        (Some(token), None) => broker_api::Token::new(&token).context("BROKER_API_TOKEN")?,
        (None, Some(file)) => broker_api::Token::from_file(file)?,
        (None, None) => {
            let token = broker_api::Token::generate()?;
            // Printed once, on purpose, outside the logs.
            eprintln!(
                "broker-api: no token configured; generated one for this run: {}",
                token.expose()
            );
            token
        }
    };
    for queue in &args.queues {
        broker_api::queue_name::QueueName::parse(queue)
            .map_err(|e| anyhow::anyhow!("--queue {queue:?}: {e}"))?;
    }
    anyhow::ensure!(
        args.request_timeout > 0.0 && args.request_timeout.is_finite(),
        "--request-timeout must be a positive number of seconds"
    );
    let mut config = broker_api::Config::new(args.listen, args.amqp_url, token);
    config.workspace = args.workspace;
    config.body_limit = args.body_limit;
    config.request_timeout = Duration::from_secs_f64(args.request_timeout);
    config.publish_channels = args.publish_channels;
    config.queues = args.queues;
    broker_api::run(config, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
