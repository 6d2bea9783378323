//! Prometheus metrics, served as text at `/metrics`: requests, latencies, publishes, gets,
//! errors, and whether the broker connection is up.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::error::ErrorKind;
use crate::AppState;

/// The service's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// `broker_api_requests_total{method, route, status}`.
    pub requests: IntCounterVec,
    /// `broker_api_request_duration_seconds{method, route}`.
    pub latency: HistogramVec,
    /// `broker_api_publishes_total{outcome}`: `confirmed` or `failed`.
    pub publishes: IntCounterVec,
    /// `broker_api_gets_total{outcome}`: `message`, `empty` or `failed`.
    pub gets: IntCounterVec,
    /// `broker_api_errors_total{kind}`: error answers by kind.
    pub errors: IntCounterVec,
    /// `broker_api_broker_up`: 1 while the broker connection is up.
    pub broker_up: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let requests = counter(
            "broker_api_requests_total",
            "HTTP requests answered",
            &["method", "route", "status"],
        );
        let publishes = counter(
            "broker_api_publishes_total",
            "Messages published",
            &["outcome"],
        );
        let gets = counter("broker_api_gets_total", "Gets answered", &["outcome"]);
        let errors = counter(
            "broker_api_errors_total",
            "Error answers by kind",
            &["kind"],
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "broker_api_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["method", "route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(latency.clone()))
            .expect("unique metric");
        let broker_up = IntGauge::new(
            "broker_api_broker_up",
            "1 while the broker connection is up",
        )
        .expect("valid metric");
        registry
            .register(Box::new(broker_up.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            requests,
            latency,
            publishes,
            gets,
            errors,
            broker_up,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics to memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// Middleware: counts and times every request by route template (never by raw path, so
/// queue names do not create series).
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let m = &state.metrics;
    m.latency
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[method.as_str(), route.as_str(), response.status().as_str()])
        .inc();
    if let Some(ErrorKind(kind)) = response.extensions().get::<ErrorKind>() {
        m.errors.with_label_values(&[*kind]).inc();
    }
    response
}

/// The service's metrics in the Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
