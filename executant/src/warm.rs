//! Worker containers started before any project needs them. Starting a container costs the
//! engine about 0.3 s (create, inspect, attach, start, the worker's own start), which a
//! project's first tasks would otherwise wait for: a short project of 10,000 tasks runs in
//! about a second once its workers are up. So the executant keeps one started worker per
//! lane a project may open ([`crate::lanes`]), waiting on its standard input, and a lane
//! that needs a container takes one of these first.
//!
//! A warm worker has run nothing: it is created with no project label, and belongs to the
//! first project whose lane takes it, for good (it never comes back here). The project it
//! serves is then known by the executant only ([`Containers::adopt`]), so that a
//! cancellation still kills it. One taken is replaced in the background.
//!
//! A warm worker that died while it waited (killed from outside) is found dead when taken,
//! removed, and not used: no task is sent to it. Another executant's clean-up leaves it
//! alone: a worker on its stdin is never taken for abandoned while it runs
//! (`containers::running_abandoned`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::containers::Containers;
use crate::session::Session;

/// How long clearing waits for the workers being started.
const CLEAR_WAIT: Duration = Duration::from_secs(10);

/// The warm workers of an executant: up to `size`, each serving up to `budget` tasks.
pub(crate) struct Warm {
    containers: Containers,
    size: usize,
    budget: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ready: Vec<Session>,
    starting: Vec<JoinHandle<()>>,
    /// Cleared and not to be filled again before [`Warm::fill`] is called.
    paused: bool,
}

impl Warm {
    /// A pool of `size` workers serving `budget` tasks each; empty until [`Warm::fill`].
    pub(crate) fn new(containers: Containers, size: usize, budget: u32) -> Arc<Warm> {
        Arc::new(Warm {
            containers,
            size,
            budget,
            state: Mutex::new(State {
                paused: true,
                ..State::default()
            }),
        })
    }

    /// Starts workers in the background until `size` are ready or being started.
    pub(crate) fn fill(self: &Arc<Self>) {
        let mut state = self.lock();
        state.paused = false;
        self.top_up(&mut state);
    }

    fn top_up(self: &Arc<Self>, state: &mut State) {
        state.starting.retain(|h| !h.is_finished());
        if state.paused {
            return;
        }
        while state.ready.len() + state.starting.len() < self.size {
            let warm = self.clone();
            state.starting.push(tokio::spawn(async move {
                match warm.containers.start_session(warm.budget, "").await {
                    Ok(session) => warm.lock().ready.push(session),
                    // Not retried here: the next lane to need a container starts its own,
                    // and taking one fills the pool again.
                    Err(e) => tracing::warn!(error = %e, "starting a warm worker failed"),
                }
            }));
        }
    }

    /// A live warm worker for `project`, if one is ready (and another is started in its
    /// place); dead ones met on the way are removed.
    pub(crate) async fn take(self: &Arc<Self>, project: &str) -> Option<Session> {
        loop {
            let taken = {
                let mut state = self.lock();
                let taken = state.ready.pop();
                self.top_up(&mut state);
                taken
            };
            let mut session = taken?;
            if session.ended() {
                tracing::info!(container = %session.id, "a warm worker died while it waited; removing it");
                self.containers.discard(&session.id).await;
                continue;
            }
            self.containers.adopt(&session.id, project);
            return Some(session);
        }
    }

    /// Removes every warm worker, waiting (a while) for those being started, and fills no
    /// more until [`Warm::fill`].
    pub(crate) async fn clear(&self) {
        let starting = {
            let mut state = self.lock();
            state.paused = true;
            std::mem::take(&mut state.starting)
        };
        let deadline = tokio::time::Instant::now() + CLEAR_WAIT;
        for mut handle in starting {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                handle.abort();
            }
        }
        let ready = std::mem::take(&mut self.lock().ready);
        for session in ready {
            self.containers.discard(&session.id).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
