//! The executant's Prometheus metrics, and the HTTP server that serves them with its health
//! checks on `--metrics-listen` (`/metrics`, `/healthz`, `/readyz`).
//!
//! Every metric is this executant's own (a registry per [`crate::run`]), named
//! `executant_*`; the task counters and the duration histogram are labelled by task kind.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The buckets of the task duration histogram, in seconds: from trivial N-queens tasks to
/// long `exec` commands.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0,
];

/// The executant's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// `executant_tasks_started_total{kind}`: deliveries that began running (a task that
    /// runs again after a fault counts again).
    pub started: IntCounterVec,
    /// `executant_tasks_succeeded_total{kind}`: successful results published (confirmed).
    pub succeeded: IntCounterVec,
    /// `executant_tasks_failed_total{kind}`: failed results published (the task's own
    /// failure, a refusal, or the last delivery's infrastructure fault).
    pub failed: IntCounterVec,
    /// `executant_tasks_retried_total{kind}`: tasks returned to the queue after a fault
    /// outside the task, to run again.
    pub retried: IntCounterVec,
    /// `executant_task_duration_seconds{kind}`: how long a task ran, for each outcome.
    pub duration: HistogramVec,
    /// `executant_containers_running`: task containers this executant created and has not
    /// removed yet.
    pub containers_running: IntGauge,
    live: Mutex<HashSet<String>>,
    /// `executant_reuse_lane_batches_total`: batches of tasks written to a reused worker
    /// container (`--reuse` above 1).
    pub reuse_batches: IntCounter,
    /// `executant_reuse_lane_batch_tasks_total`: tasks in those batches.
    pub reuse_batch_tasks: IntCounter,
    /// `executant_broker_reconnects_total{connection}`: `consume` or `publish` connections
    /// re-established after a loss.
    pub broker_reconnects: IntCounterVec,
    /// `executant_engine_errors_total`: Docker engine errors met while running tasks or
    /// connecting to the engine.
    pub engine_errors: IntCounter,
    /// `executant_dead_lettered_total`: unreadable messages dead-lettered by this executant.
    pub dead_lettered: IntCounter,
    /// `executant_consuming`: 1 while this executant consumes `todo`.
    pub consuming: IntGauge,
    /// `executant_ack_frames_total{how}`: acks of work-queue deliveries sent: `together`
    /// (one `basic.ack` for every ready delivery up to a tag, with `multiple` when there are
    /// several) or `alone` (held above an unsettled delivery for too long).
    pub ack_frames: IntCounterVec,
    /// `executant_acked_together_total`: deliveries settled by the `together` acks.
    pub acked_together: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric, at zero.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let register = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("unique metric");
        };
        let by_kind = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["kind"]).expect("valid metric");
            register(Box::new(c.clone()));
            c
        };
        let started = by_kind(
            "executant_tasks_started_total",
            "Task deliveries that began running",
        );
        let succeeded = by_kind(
            "executant_tasks_succeeded_total",
            "Successful results published",
        );
        let failed = by_kind("executant_tasks_failed_total", "Failed results published");
        let retried = by_kind(
            "executant_tasks_retried_total",
            "Tasks returned to the queue after an infrastructure fault",
        );
        let duration = HistogramVec::new(
            HistogramOpts::new("executant_task_duration_seconds", "Task run time")
                .buckets(DURATION_BUCKETS.to_vec()),
            &["kind"],
        )
        .expect("valid metric");
        register(Box::new(duration.clone()));
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            register(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            register(Box::new(c.clone()));
            c
        };
        let containers_running = gauge(
            "executant_containers_running",
            "Task containers created and not yet removed",
        );
        let consuming = gauge("executant_consuming", "1 while consuming todo");
        let reuse_batches = counter(
            "executant_reuse_lane_batches_total",
            "Batches of tasks written to a reused worker container",
        );
        let reuse_batch_tasks = counter(
            "executant_reuse_lane_batch_tasks_total",
            "Tasks in batches written to a reused worker container",
        );
        let broker_reconnects = IntCounterVec::new(
            Opts::new(
                "executant_broker_reconnects_total",
                "Broker connections re-established after a loss",
            ),
            &["connection"],
        )
        .expect("valid metric");
        register(Box::new(broker_reconnects.clone()));
        let engine_errors = counter("executant_engine_errors_total", "Docker engine errors");
        let dead_lettered = counter(
            "executant_dead_lettered_total",
            "Unreadable messages dead-lettered",
        );
        let ack_frames = IntCounterVec::new(
            Opts::new(
                "executant_ack_frames_total",
                "Acks of work-queue deliveries sent, by how (together, alone)",
            ),
            &["how"],
        )
        .expect("valid metric");
        register(Box::new(ack_frames.clone()));
        let acked_together = counter(
            "executant_acked_together_total",
            "Work-queue deliveries settled by acks sent together",
        );
        // Every label value exists from the start, so dashboards see zeros, not gaps.
        for kind in ["nqueens", "exec"] {
            for c in [&started, &succeeded, &failed, &retried] {
                c.with_label_values(&[kind]);
            }
            duration.with_label_values(&[kind]);
        }
        for connection in ["consume", "publish"] {
            broker_reconnects.with_label_values(&[connection]);
        }
        for how in ["together", "alone"] {
            ack_frames.with_label_values(&[how]);
        }
        Metrics {
            registry,
            started,
            succeeded,
            failed,
            retried,
            duration,
            containers_running,
            live: Mutex::new(HashSet::new()),
            reuse_batches,
            reuse_batch_tasks,
            broker_reconnects,
            engine_errors,
            dead_lettered,
            consuming,
            ack_frames,
            acked_together,
        }
    }

    /// A task container was created.
    pub(crate) fn container_created(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.insert(id.to_string());
        self.containers_running.set(live.len() as i64);
    }

    /// A container was removed (one this executant did not create changes nothing).
    pub(crate) fn container_removed(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(id);
        self.containers_running.set(live.len() as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics");
        String::from_utf8(buffer).expect("metrics are UTF-8")
    }
}

/// Serves `/metrics`, `/healthz` (200 while the process serves) and `/readyz` (200 while it
/// consumes `todo`, 503 otherwise) on `listener` until the task is dropped.
pub(crate) async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(metrics);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics server stopped");
    }
}

/// Binds the metrics address (an error names it).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

async fn ready(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.consuming.get() == 1 {
        (StatusCode::OK, "consuming todo\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not consuming todo\n")
    }
}
