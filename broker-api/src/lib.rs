//! broker-api: an HTTP API over the platform's RabbitMQ queues, with a small web page.
//!
//! Programs that do not speak AMQP, and people with a browser, reach the platform through
//! this service. It holds **one** long-lived AMQP connection (re-established with backoff
//! in the background when the broker goes away) and a pool of channels shared by every
//! request; see [`broker`] for how queues are listed without a list operation in AMQP.
//!
//! Layout: [`app`] builds the router (tests call it directly), [`bind`]/[`Server::serve`]
//! and [`run`] serve it until a shutdown future resolves; `main.rs` only parses flags and
//! wires signals. One module per route group under [`routes`].

pub mod auth;
pub mod broker;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod projects;
pub mod queue_name;
pub mod routes;
pub mod scope;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use auth::{Scope, Token, Tokens};
pub use broker::Broker;
pub use error::ApiError;

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen for HTTP.
    pub listen: SocketAddr,
    /// The broker (its password is never logged).
    pub amqp_url: String,
    /// The bearer tokens, one per scope (see [`auth`]).
    pub tokens: Tokens,
    /// The platform workspace (its `tracking` repository gives the projects view).
    pub workspace: Option<PathBuf>,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How long a request may take before it is answered 504.
    pub request_timeout: Duration,
    /// How many confirm channels publishes are spread over (one publish in flight on each).
    pub publish_channels: usize,
    /// How long a publish waits for the broker's confirm before answering 503.
    pub confirm_timeout: Duration,
    /// Queue names to list from the start (besides `todo`, `todo.dead` and the results
    /// queues of the workspace's projects).
    pub queues: Vec<String>,
}

impl Config {
    /// A configuration with the defaults, listening on `listen`, talking to `amqp_url`,
    /// accepting `tokens` (a single [`Token`] is the `user` scope's).
    pub fn new(listen: SocketAddr, amqp_url: impl Into<String>, tokens: impl Into<Tokens>) -> Self {
        Config {
            listen,
            amqp_url: amqp_url.into(),
            tokens: tokens.into(),
            workspace: None,
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            publish_channels: DEFAULT_PUBLISH_CHANNELS,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            queues: Vec::new(),
        }
    }
}

/// The default request body limit (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// The default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The default wait for a publish's confirm (below the request timeout, so a broker that
/// stopped answering gets a 503 naming it rather than a bare 504).
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// The default number of shared publishing channels.
pub const DEFAULT_PUBLISH_CHANNELS: usize = 32;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The broker connection and its channel pools.
    pub broker: Arc<Broker>,
    /// The API tokens.
    pub tokens: Arc<Tokens>,
    /// The workspace, when configured.
    pub workspace: Option<Arc<PathBuf>>,
    /// The broker URL (one node or a cluster's), for the operations that open a connection
    /// of their own (cancelling a project).
    pub amqp_url: Arc<str>,
    /// The Prometheus registry and the service's metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The largest request body accepted.
    pub body_limit: usize,
    /// How long a request may take.
    pub request_timeout: Duration,
}

impl AppState {
    /// Builds the state and starts the broker connection in the background (requests
    /// answer 503 until it is up).
    pub fn start(config: &Config) -> Self {
        let metrics = Arc::new(metrics::Metrics::new());
        let broker = Broker::start(
            config.amqp_url.clone(),
            // Names the instance in the broker's connection list (`rabbitmqctl
            // list_connections client_properties`).
            format!("broker-api {}", config.listen),
            config.publish_channels,
            config.confirm_timeout,
            config.queues.iter().cloned(),
            metrics.clone(),
        );
        AppState {
            broker,
            tokens: Arc::new(config.tokens.clone()),
            workspace: config.workspace.clone().map(Arc::new),
            amqp_url: config.amqp_url.as_str().into(),
            metrics,
            body_limit: config.body_limit,
            request_timeout: config.request_timeout,
        }
    }
}

/// The whole service as a router: the page, health, the OpenAPI document, and the
/// token-protected `/metrics` and `/api/` routes (each needing the scope [`auth`] says).
pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .merge(routes::metrics_router())
        .nest("/api", routes::api_router())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_scope,
        ))
        .layer(DefaultBodyLimit::max(state.body_limit));
    Router::new()
        .merge(routes::public_router())
        .merge(protected)
        .fallback(routes::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .with_state(state)
}

/// How long a cancellation may take at least: the executants get 10 s to answer, after
/// a connection that may take its own time.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(45);

async fn timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let after = if path.starts_with("/api/projects/") && path.ends_with("/cancel") {
        state.request_timeout.max(CANCEL_TIMEOUT)
    } else {
        state.request_timeout
    };
    match tokio::time::timeout(after, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout { after }.into_response(),
    }
}

/// What can stop the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another process using it?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A bound, not yet serving, service.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
}

/// Binds the listen address and starts the broker connection.
pub async fn bind(config: &Config) -> Result<Server, StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let mut config = config.clone();
    if let Ok(addr) = listener.local_addr() {
        config.listen = addr;
    }
    Ok(Server {
        listener,
        state: AppState::start(&config),
    })
}

impl Server {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests and closes the
    /// broker connection.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let broker = self.state.broker.clone();
        tracing::info!(addr = %self.local_addr(), "broker-api listening");
        let result = axum::serve(self.listener, app(self.state))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(StartError::Serve);
        broker.stop().await;
        result
    }
}

/// Binds and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    bind(&config).await?.serve(shutdown).await
}
