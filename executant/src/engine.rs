//! The Docker engine's health, as the consumer needs it: answering, or lost.
//!
//! An engine that stops answering (its `dockerd` died, its host went away) is pinged every
//! [`PING_EVERY`]; once it has been unreachable longer than `--engine-grace`, it is *lost*:
//! the consume session ends (the broker returns the deliveries it held to `todo`, for other
//! executants to run) and no new one starts until the engine answers again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::runner::Runner;

/// How often the engine is pinged.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(1);

/// How long one ping may take: an engine slower than that counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the engine answers a ping within [`PING_TIMEOUT`].
pub(crate) async fn answers(runner: &Runner) -> bool {
    tokio::time::timeout(PING_TIMEOUT, runner.ping())
        .await
        .unwrap_or(false)
}

/// Pings the engine every [`PING_EVERY`] until the returned receiver is dropped; the value
/// turns `true` once the engine has been unreachable longer than `grace`, and `false`
/// again when it answers.
pub(crate) fn watch_lost(runner: Arc<Runner>, grace: Duration) -> watch::Receiver<bool> {
    let (lost, receiver) = watch::channel(false);
    tokio::spawn(async move {
        let mut down_since: Option<Instant> = None;
        loop {
            if answers(&runner).await {
                if down_since.take().is_some() {
                    tracing::info!("Docker engine answers again");
                }
                lost.send_if_modified(|l| std::mem::replace(l, false));
            } else {
                let since = *down_since.get_or_insert_with(|| {
                    tracing::warn!(
                        grace_secs = grace.as_secs(),
                        "Docker engine unreachable; tasks held until it answers or the grace ends"
                    );
                    Instant::now()
                });
                if since.elapsed() > grace {
                    lost.send_if_modified(|l| !std::mem::replace(l, true));
                }
            }
            tokio::select! {
                _ = lost.closed() => return,
                _ = tokio::time::sleep(PING_EVERY) => {}
            }
        }
    });
    receiver
}

/// Waits until the engine answers, pinging every [`PING_EVERY`].
pub(crate) async fn wait_until_answering(runner: &Runner) {
    let down = Instant::now();
    while !answers(runner).await {
        tokio::time::sleep(PING_EVERY).await;
    }
    tracing::info!(
        down_secs = down.elapsed().as_secs(),
        "Docker engine answers again; consuming todo"
    );
}
