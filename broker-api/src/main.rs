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
    after_help = "Tokens, one per scope, each from its variable or from a file (trimmed):\n  \
BROKER_API_READ_TOKEN  (--read-token-file)   read: lists, queues, projects, metrics\n  \
BROKER_API_TOKEN       (--token-file)        user: also create, publish to, get from, delete users' queues\n  \
BROKER_API_ADMIN_TOKEN (--admin-token-file)  admin: also the platform's todo, todo.dead, results.*\n\
With none at all, a random `user` token is generated and printed once on stderr.\n\
/api/ routes and /metrics need `Authorization: Bearer <token>` (403 when its scope is too \
small); /healthz, /readyz, /openapi.json and the page at / do not.\n\
Logs: RUST_LOG (default `info,lapin=off`: lapin would log returned message bodies)."
)]
struct Args {
    /// The address to listen on.
    #[arg(long, env = "BROKER_API_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The broker's AMQP URL [default: amqp://guest:guest@127.0.0.1:5672/%2f]. A password
    /// given here shows in `ps`: prefer --amqp-url-file. A cluster: several node URLs,
    /// comma-separated or the flag repeated; the service fails over between them.
    #[arg(long, env = "AMQP_URL", hide_env_values = true, action = clap::ArgAction::Append)]
    amqp_url: Vec<String>,
    /// A file holding the broker's AMQP URL (trimmed); not with --amqp-url/AMQP_URL.
    #[arg(long, env = tasks::amqp::AMQP_URL_FILE_VAR, hide_env_values = true, conflicts_with = "amqp_url")]
    amqp_url_file: Option<PathBuf>,
    /// A file holding the `read` scope's token (trimmed); not with BROKER_API_READ_TOKEN.
    #[arg(long, env = "BROKER_API_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
    /// A file holding the `user` scope's token (trimmed); not with BROKER_API_TOKEN.
    #[arg(long, env = "BROKER_API_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A file holding the `admin` scope's token (trimmed); not with BROKER_API_ADMIN_TOKEN.
    #[arg(long, env = "BROKER_API_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// The platform workspace; its `tracking` repository gives the projects view.
    #[arg(long, env = "WORKSPACE")]
    workspace: Option<PathBuf>,
    /// The largest request body accepted, in bytes.
    #[arg(long, env = "BROKER_API_BODY_LIMIT", default_value_t = broker_api::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// How long a request may take, in seconds, before it is answered 504.
    #[arg(long, env = "BROKER_API_REQUEST_TIMEOUT", default_value_t = 10.0)]
    request_timeout: f64,
    /// How long a publish waits for the broker's confirm, in seconds, before it is answered
    /// 503.
    #[arg(long, env = "BROKER_API_CONFIRM_TIMEOUT", default_value_t = 5.0)]
    confirm_timeout: f64,
    /// How many confirm channels publishes are spread over, one publish in flight on each:
    /// the most publishes awaiting their confirm at once.
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
            eprintln!("broker-api: error: {}", tasks::chain::one_line(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// One scope's token: from its variable or its file, not both.
fn scope_token(
    scope: broker_api::Scope,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<broker_api::Token>> {
    let var = scope.variable();
    match (std::env::var(var).ok(), file) {
        (Some(_), Some(_)) => anyhow::bail!("give the token in {var} or in {var}_FILE, not both"),
        (Some(token), None) => Ok(Some(broker_api::Token::new(&token).context(var)?)),
        (None, Some(file)) => Ok(Some(
            broker_api::Token::from_file(file).with_context(|| format!("{var}_FILE"))?,
        )),
        (None, None) => Ok(None),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use broker_api::Scope;
    let mut tokens = broker_api::Tokens {
        read: scope_token(Scope::Read, args.read_token_file.as_deref())?,
        user: scope_token(Scope::User, args.token_file.as_deref())?,
        admin: scope_token(Scope::Admin, args.admin_token_file.as_deref())?,
    };
    if tokens.read.is_none() && tokens.user.is_none() && tokens.admin.is_none() {
        let token = broker_api::Token::generate()?;
        // Printed once, on purpose, outside the logs.
        eprintln!(
            "broker-api: no token configured; generated a `user` token for this run: {}",
            token.expose()
        );
        tokens.user = Some(token);
    }
    tokens.validate()?;
    for queue in &args.queues {
        broker_api::queue_name::QueueName::parse(queue)
            .map_err(|e| anyhow::anyhow!("--queue {queue:?}: {e}"))?;
    }
    anyhow::ensure!(
        args.request_timeout > 0.0 && args.request_timeout.is_finite(),
        "--request-timeout must be a positive number of seconds"
    );
    let amqp_url = tasks::amqp::resolve_url(
        tasks::amqp::nodes::join_urls(&args.amqp_url),
        args.amqp_url_file.as_deref(),
    )?;
    let mut config = broker_api::Config::new(args.listen, amqp_url, tokens);
    config.workspace = args.workspace;
    config.body_limit = args.body_limit;
    config.request_timeout = Duration::from_secs_f64(args.request_timeout);
    anyhow::ensure!(
        args.confirm_timeout > 0.0 && args.confirm_timeout.is_finite(),
        "--confirm-timeout must be a positive number of seconds"
    );
    config.confirm_timeout = Duration::from_secs_f64(args.confirm_timeout);
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
