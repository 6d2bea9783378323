//! The executant's settings (filled by the binary from flags and environment variables).

use std::path::PathBuf;
use std::time::Duration;

/// The default worker image: the one the project's own build makes (`scripts/build-image.sh`).
pub const DEFAULT_WORKER_IMAGE: &str = "taskplatform/worker:latest";

/// How many tasks of one project a container of [`DEFAULT_WORKER_IMAGE`] serves before it is
/// replaced, when `--reuse` is not given (other worker images: one task per container).
pub const DEFAULT_REUSE: u32 = 10_000;

/// The `--reuse` default for a worker image: [`DEFAULT_REUSE`] for the platform's own image,
/// whose worker computes each task from its line alone, 1 (a container per task) for any
/// other, whose behaviour this executant does not know.
pub fn default_reuse(worker_image: &str) -> u32 {
    if worker_image == DEFAULT_WORKER_IMAGE {
        DEFAULT_REUSE
    } else {
        1
    }
}

/// RabbitMQ closes a channel whose delivery stays unacked longer than this (its default
/// `consumer_timeout`); a task must finish well before, or its result could not be acked.
pub const BROKER_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The most of the consumer timeout kept back for starting a container and publishing the
/// result (a quarter of it when the timeout is short).
pub const CONSUMER_TIMEOUT_MARGIN: Duration = Duration::from_secs(60);

/// Why a configuration cannot run: each names the flag to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--concurrency 0`.
    #[error("--concurrency must be at least 1")]
    NoConcurrency,
    /// `--reuse 0`.
    #[error("--reuse must be at least 1")]
    NoReuse,
    /// `--prefetch` below `--concurrency`.
    #[error("--prefetch must be at least --concurrency")]
    PrefetchBelowConcurrency,
    /// The default task timeout is above the largest allowed.
    #[error("--task-timeout must not exceed --max-task-timeout")]
    DefaultAboveMax,
    /// `--confirm-timeout 0`.
    #[error("--confirm-timeout must be at least 1 s")]
    NoConfirmTimeout,
    /// A first retry delay of zero, or a ceiling below it.
    #[error(
        "--retry-delay-ms ({first_ms}) must be at least 1 and at most --retry-delay-max-ms \
         ({max_ms})"
    )]
    RetryDelays {
        /// `--retry-delay-ms`.
        first_ms: u64,
        /// `--retry-delay-max-ms`.
        max_ms: u64,
    },
    /// A task running as long as allowed would outlive its delivery.
    #[error(
        "--max-task-timeout {max_secs}s is too close to RabbitMQ's consumer_timeout \
         ({consumer_secs}s): a task running that long would lose its delivery; lower it to \
         {bound_secs}s or raise consumer_timeout (and --consumer-timeout)"
    )]
    MaxTimeoutTooLong {
        /// `--max-task-timeout`, in seconds.
        max_secs: u64,
        /// `--consumer-timeout`, in seconds.
        consumer_secs: u64,
        /// The longest a delivery may be held ([`Config::holding_bound`]), in seconds.
        bound_secs: u64,
    },
}

/// Resource limits of every task container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes (swap included: no swap beyond it).
    pub memory_bytes: i64,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: i64,
    /// Maximum number of processes and threads.
    pub pids: i64,
    /// Size of the writable tmpfs mounted on /tmp, in MiB.
    pub tmpfs_mib: u32,
    /// Open files per process (`nofile` ulimit, soft and hard).
    pub nofile: i64,
    /// Processes of the task user (`nproc` ulimit, soft and hard). The kernel counts them
    /// per user across every container of the host (tasks all run as nobody), so it is a
    /// backstop above `pids`, which bounds one container.
    pub nproc: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 256 * 1024 * 1024,
            nano_cpus: 1_000_000_000,
            pids: 64,
            tmpfs_mib: 64,
            nofile: 1024,
            nproc: 4096,
        }
    }
}

/// Everything the executant needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The broker URL (may hold a password: never log it as is).
    pub amqp_url: String,
    /// This executant's name, in logs, container labels and results.
    pub name: String,
    /// How many containers run at once: worker lanes of one project, and containers of their
    /// own (`exec` tasks, tasks run apart).
    pub concurrency: u16,
    /// The TODO prefetch: fixed when set (at least `concurrency`); `None` sizes it to the
    /// work as it goes ([`crate::prefetch`]), from `concurrency` up to
    /// [`crate::prefetch::MAX_PREFETCH`].
    pub prefetch: Option<u16>,
    /// The image N-queens tasks run in.
    pub worker_image: String,
    /// Images `exec` tasks may name (the worker image is always allowed).
    pub allowed_images: Vec<String>,
    /// The wall-clock limit of a task that does not set its own.
    pub default_timeout: Duration,
    /// The largest wall-clock limit a task may ask for.
    pub max_timeout: Duration,
    /// How many tasks one worker container serves before it is replaced (1: one per task);
    /// by default [`default_reuse`] of the worker image.
    pub reuse: u32,
    /// Container resource limits.
    pub limits: Limits,
    /// How long a shutdown waits for tasks in flight before returning them to the queue.
    pub shutdown_grace: Duration,
    /// The broker's `consumer_timeout`: no delivery is held longer than
    /// [`Config::holding_bound`], which stays below it.
    pub consumer_timeout: Duration,
    /// How long a publish waits for the broker's confirm before the channel is deemed lost.
    pub confirm_timeout: Duration,
    /// How long the Docker engine may stay unreachable before the executant returns the
    /// tasks it holds to the queue and stops consuming until the engine answers again.
    pub engine_grace: Duration,
    /// Where task scripts are written before being bind-mounted into task containers. The
    /// Docker engine resolves bind mounts on its own host: an executant running in a
    /// container must use a folder mounted at the same path on the host.
    pub scripts_dir: PathBuf,
    /// The repositories task scripts may be fetched from (`--allow-script-repo`; see
    /// [`crate::script::repo_allowed`]); none by default.
    pub allowed_script_repos: Vec<String>,
    /// How long a script fetch may take and how much it may bring in.
    pub script_fetch: crate::script::FetchLimits,
    /// Where to serve Prometheus metrics and the health checks (`--metrics-listen`); none
    /// by default.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How long a task returned after a fault outside it waits before its second attempt
    /// (in a delay queue); each later retry waits twice as long, up to `retry_delay_max`.
    pub retry_delay: Duration,
    /// The longest wait between two attempts of a task.
    pub retry_delay_max: Duration,
}

impl Config {
    /// A configuration with the defaults, for one machine.
    pub fn new(amqp_url: impl Into<String>) -> Config {
        Config {
            amqp_url: amqp_url.into(),
            name: default_name(),
            concurrency: std::thread::available_parallelism()
                .map(|n| n.get() as u16)
                .unwrap_or(1),
            prefetch: None,
            worker_image: DEFAULT_WORKER_IMAGE.into(),
            allowed_images: vec!["debian:bookworm-slim".into()],
            default_timeout: Duration::from_secs(600),
            max_timeout: Duration::from_secs(25 * 60),
            reuse: default_reuse(DEFAULT_WORKER_IMAGE),
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(30),
            consumer_timeout: BROKER_CONSUMER_TIMEOUT,
            confirm_timeout: Duration::from_secs(15),
            engine_grace: Duration::from_secs(15),
            scripts_dir: std::env::temp_dir(),
            allowed_script_repos: Vec::new(),
            script_fetch: crate::script::FetchLimits::default(),
            metrics_listen: None,
            retry_delay: Duration::from_secs(1),
            retry_delay_max: Duration::from_secs(60),
        }
    }

    /// Checks the settings against each other and the broker's limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError::NoConcurrency);
        }
        if self.reuse == 0 {
            return Err(ConfigError::NoReuse);
        }
        if self.prefetch.is_some_and(|p| p < self.concurrency) {
            return Err(ConfigError::PrefetchBelowConcurrency);
        }
        if self.default_timeout > self.max_timeout {
            return Err(ConfigError::DefaultAboveMax);
        }
        if self.retry_delay.is_zero() || self.retry_delay_max < self.retry_delay {
            return Err(ConfigError::RetryDelays {
                first_ms: self.retry_delay.as_millis() as u64,
                max_ms: self.retry_delay_max.as_millis() as u64,
            });
        }
        if self.confirm_timeout.is_zero() {
            return Err(ConfigError::NoConfirmTimeout);
        }
        // Leave time for starting the container and publishing the result.
        if self.max_timeout > self.holding_bound() {
            return Err(ConfigError::MaxTimeoutTooLong {
                max_secs: self.max_timeout.as_secs(),
                consumer_secs: self.consumer_timeout.as_secs(),
                bound_secs: self.holding_bound().as_secs(),
            });
        }
        Ok(())
    }

    /// Whether a task's script may be fetched from `repo`.
    pub fn script_repo_allowed(&self, repo: &str) -> bool {
        crate::script::repo_allowed(&self.allowed_script_repos, repo)
    }

    /// The longest the executant holds a delivery unacked: the consumer timeout less a
    /// margin for starting a container and publishing the result.
    pub fn holding_bound(&self) -> Duration {
        let margin = CONSUMER_TIMEOUT_MARGIN.min(self.consumer_timeout / 4);
        self.consumer_timeout.saturating_sub(margin)
    }

    /// Whether an `exec` task may run `image`.
    pub fn image_allowed(&self, image: &str) -> bool {
        let norm = |s: &str| {
            if s.rsplit('/').next().is_some_and(|last| last.contains(':')) {
                s.to_string()
            } else {
                format!("{s}:latest")
            }
        };
        let wanted = norm(image);
        norm(&self.worker_image) == wanted || self.allowed_images.iter().any(|a| norm(a) == wanted)
    }
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Change = fn(&mut Config);

    #[test]
    fn contradictions_are_typed() {
        assert_eq!(Config::new("amqp://x").validate(), Ok(()));
        let table: [(Change, ConfigError); 7] = [
            (|c| c.concurrency = 0, ConfigError::NoConcurrency),
            (|c| c.reuse = 0, ConfigError::NoReuse),
            (
                |c| c.prefetch = Some(c.concurrency - 1),
                ConfigError::PrefetchBelowConcurrency,
            ),
            (
                |c| c.default_timeout = c.max_timeout * 2,
                ConfigError::DefaultAboveMax,
            ),
            (
                |c| c.confirm_timeout = Duration::ZERO,
                ConfigError::NoConfirmTimeout,
            ),
            (
                |c| c.retry_delay_max = Duration::from_millis(500),
                ConfigError::RetryDelays {
                    first_ms: 1000,
                    max_ms: 500,
                },
            ),
            (
                |c| c.consumer_timeout = Duration::from_secs(600),
                ConfigError::MaxTimeoutTooLong {
                    max_secs: 1500,
                    consumer_secs: 600,
                    bound_secs: 540,
                },
            ),
        ];
        for (change, expected) in table {
            let mut config = Config::new("amqp://x");
            change(&mut config);
            assert_eq!(config.validate(), Err(expected));
        }
    }

    #[test]
    fn only_the_platforms_worker_image_is_reused_by_default() {
        assert_eq!(Config::new("amqp://x").reuse, DEFAULT_REUSE);
        assert_eq!(default_reuse(DEFAULT_WORKER_IMAGE), DEFAULT_REUSE);
        assert_eq!(default_reuse("taskplatform/worker:test"), 1);
        assert_eq!(default_reuse("example.org/other:latest"), 1);
    }
}
