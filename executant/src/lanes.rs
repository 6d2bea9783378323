//! Worker containers, reused or not. With `--reuse N`, each project's N-queens tasks go to a
//! few long-lived worker containers ("lanes"), at most one per core (a container has a CPU
//! limit of its own). Without it, each task gets a lane of its own with a budget of one task
//! ([`Lanes::run_once`]): one code path for both.
//!
//! A lane is a task of its own that owns one container at a time. It takes every job waiting
//! for it, writes them to the worker at once, and reads the answers in order: trivial tasks
//! are batched, so one round trip through the engine serves many. A container serves up to N
//! tasks, then is replaced; a lane idle for a while removes its container and ends.
//!
//! A delivery must not be held past the broker's consumer timeout, and a job may wait in a
//! lane behind others for longer than that. So each job carries the latest time it may start
//! (its delivery's deadline less its own time limit); a job that has not started by then is
//! withdrawn by its handler and runs in a fresh container of its own at once. A job starts
//! when the lane begins waiting for its answer (the worker takes it as the previous one is
//! answered); a withdrawn job that was already written to the worker is answered to nobody.
//!
//! Replacing a container costs an engine round trip to start one and another to remove one.
//! Neither waits in line: once a container has served half its budget, the lane starts the
//! next one (a "spare") while it works on, and a used-up container is removed in the
//! background. Both are awaited before the lane ends, so nothing is left behind.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tasks::{Task, TaskResult};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::containers::Containers;
use crate::error::RunError;
use crate::session::{timeout_reason, Answer, Session};
use crate::warm::Warm;

/// The most tasks written to a worker in one batch.
const MAX_BATCH: usize = 256;
/// How long a lane keeps its container without work.
const IDLE: Duration = Duration::from_secs(30);

struct Job {
    task: Task,
    timeout: Duration,
    reply: oneshot::Sender<Result<TaskResult, RunError>>,
    /// [`WAITING`], then [`STARTED`] (by the lane) or [`WITHDRAWN`] (by the handler).
    state: Arc<AtomicU8>,
}

const WAITING: u8 = 0;
const STARTED: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Job {
    /// Marks the job started, unless its handler withdrew it first.
    fn start(&self) -> bool {
        self.state
            .compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// What became of a task sent to a lane.
pub(crate) enum LaneOutcome {
    /// The lane ran it.
    Done(Result<TaskResult, RunError>),
    /// It could not start in time: run it elsewhere, now.
    Withdrawn,
}

struct Lane {
    tx: mpsc::UnboundedSender<Job>,
    outstanding: Arc<AtomicUsize>,
}

/// How long stopping waits for the lanes to remove their containers.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The lanes of every project.
pub(crate) struct Lanes {
    containers: Containers,
    /// Workers started ahead of projects, for the lanes' first containers (with `--reuse`).
    warm: Option<Arc<Warm>>,
    by_project: Mutex<HashMap<String, Vec<Lane>>>,
    running: std::sync::Mutex<Vec<JoinHandle<()>>>,
    max_per_project: usize,
}

impl Lanes {
    pub(crate) fn new(containers: Containers) -> Lanes {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max_per_project = cores.min(containers.config.concurrency as usize).max(1);
        let reuse = containers.config.reuse;
        let warm = (reuse > 1).then(|| Warm::new(containers.clone(), max_per_project, reuse));
        Lanes {
            containers,
            warm,
            by_project: Mutex::new(HashMap::new()),
            running: std::sync::Mutex::new(Vec::new()),
            max_per_project,
        }
    }

    /// Runs `task` on one of its project's lanes: an idle one, else a new one while there are
    /// fewer than one per core, else the least busy. A task that has not started by
    /// `latest_start` is withdrawn.
    pub(crate) async fn run(
        &self,
        task: Task,
        timeout: Duration,
        latest_start: Instant,
    ) -> LaneOutcome {
        if Instant::now() >= latest_start {
            return LaneOutcome::Withdrawn;
        }
        let (reply, mut answer) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(WAITING));
        let mut job = Job {
            task,
            timeout,
            reply,
            state: state.clone(),
        };
        {
            let mut all = self.by_project.lock().await;
            let lanes = all.entry(job.task.project.clone()).or_default();
            lanes.retain(|l| !l.tx.is_closed());
            loop {
                let idle = lanes
                    .iter()
                    .position(|l| l.outstanding.load(Ordering::Relaxed) == 0);
                let pick = match idle {
                    Some(i) => i,
                    None if lanes.len() < self.max_per_project => {
                        lanes.push(self.spawn_lane(&job.task.project));
                        lanes.len() - 1
                    }
                    None => (0..lanes.len())
                        .min_by_key(|&i| lanes[i].outstanding.load(Ordering::Relaxed))
                        .unwrap_or(0),
                };
                let lane = &lanes[pick];
                lane.outstanding.fetch_add(1, Ordering::Relaxed);
                match lane.tx.send(job) {
                    Ok(()) => break,
                    Err(mpsc::error::SendError(back)) => {
                        // The lane ended (idle) between the check and the send.
                        job = back;
                        lanes.remove(pick);
                    }
                }
            }
        }
        let stopped = |_| Err(RunError::Lost("the worker lane stopped".into()));
        tokio::select! {
            result = &mut answer => return LaneOutcome::Done(result.unwrap_or_else(stopped)),
            _ = tokio::time::sleep_until(latest_start) => {}
        }
        let withdrawn = state
            .compare_exchange(WAITING, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if withdrawn {
            tracing::info!("a task waited too long for its worker lane; running it apart");
            return LaneOutcome::Withdrawn;
        }
        LaneOutcome::Done(answer.await.unwrap_or_else(stopped))
    }

    /// Runs `task` in a worker container of its own: a lane with a budget of one task, which
    /// removes its container and ends once it has answered.
    pub(crate) async fn run_once(
        &self,
        task: Task,
        timeout: Duration,
    ) -> Result<TaskResult, RunError> {
        let (reply, answer) = oneshot::channel();
        let lane = self.spawn_lane_with_budget(1, &task.project);
        lane.outstanding.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            task,
            timeout,
            reply,
            state: Arc::new(AtomicU8::new(WAITING)),
        };
        if lane.tx.send(job).is_err() {
            return Err(RunError::Lost("the worker lane stopped".into()));
        }
        // The lane ends after this job: its channel is closed.
        drop(lane);
        answer
            .await
            .unwrap_or_else(|_| Err(RunError::Lost("the worker lane stopped".into())))
    }

    fn spawn_lane(&self, project: &str) -> Lane {
        let warm = self.warm.clone();
        self.spawn_lane_with(self.containers.config.reuse, warm, project)
    }

    fn spawn_lane_with_budget(&self, budget: u32, project: &str) -> Lane {
        self.spawn_lane_with(budget, None, project)
    }

    fn spawn_lane_with(&self, budget: u32, warm: Option<Arc<Warm>>, project: &str) -> Lane {
        let (tx, rx) = mpsc::unbounded_channel();
        let outstanding = Arc::new(AtomicUsize::new(0));
        let handle = tokio::spawn(lane(
            self.containers.clone(),
            budget,
            warm,
            project.to_string(),
            rx,
            outstanding.clone(),
        ));
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|h| !h.is_finished());
        running.push(handle);
        Lane { tx, outstanding }
    }

    /// Starts the warm workers, if lanes use them.
    pub(crate) fn warm_up(&self) {
        if let Some(warm) = &self.warm {
            warm.fill();
        }
    }

    /// Ends every lane and removes the warm workers, waiting (a while) for each lane to
    /// remove its containers, so that a container being started is not missed by the
    /// clean-up that follows. [`Lanes::warm_up`] starts warm workers again.
    pub(crate) async fn stop_all(&self) {
        self.by_project.lock().await.clear();
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        for mut handle in running {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                handle.abort();
            }
        }
        if let Some(warm) = &self.warm {
            warm.clear().await;
        }
    }
}

/// One lane: owns at most one worker container at a time (and, briefly, the next one),
/// each serving up to `reuse` tasks, a `warm` one first when there is one.
async fn lane(
    c: Containers,
    reuse: u32,
    warm: Option<Arc<Warm>>,
    project: String,
    mut rx: mpsc::UnboundedReceiver<Job>,
    outstanding: Arc<AtomicUsize>,
) {
    let mut session: Option<Session> = None;
    let mut spare: Option<JoinHandle<Result<Session, RunError>>> = None;
    let mut removals: JoinSet<()> = JoinSet::new();
    let mut backlog: VecDeque<Job> = VecDeque::new();
    let answer = |job: Job, result: Result<TaskResult, RunError>| {
        outstanding.fetch_sub(1, Ordering::Relaxed);
        let _ = job.reply.send(result);
    };
    loop {
        if backlog.is_empty() {
            let next = if session.is_some() {
                tokio::time::timeout(IDLE, rx.recv()).await.ok().flatten()
            } else {
                rx.recv().await
            };
            match next {
                Some(job) => backlog.push_back(job),
                None => break,
            }
        }
        while backlog.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => backlog.push_back(job),
                Err(_) => break,
            }
        }
        // Jobs whose handler gave up (the executant is stopping) are not run.
        backlog.retain(|job| {
            let wanted = !job.reply.is_closed();
            if !wanted {
                outstanding.fetch_sub(1, Ordering::Relaxed);
            }
            wanted
        });
        if backlog.is_empty() {
            continue;
        }
        // A container killed (or gone) while it waited for work: replaced before any of
        // these tasks is sent to it, so that none of them is charged an attempt for it.
        if session.as_mut().is_some_and(|s| s.served > 0 && s.ended()) {
            if let Some(dead) = session.take() {
                tracing::info!(container = %dead.id, "a worker container ended while idle; replacing it");
                c.discard(&dead.id).await;
            }
        }
        if session.as_ref().is_some_and(|s| s.served >= reuse) {
            if let Some(old) = session.take() {
                while removals.try_join_next().is_some() {}
                let c = c.clone();
                removals.spawn(async move { c.discard(&old.id).await });
            }
        }
        let s = match session.as_mut() {
            Some(s) => s,
            None => {
                let started = match spare.take() {
                    Some(handle) => handle
                        .await
                        .unwrap_or_else(|e| Err(RunError::Lost(format!("starting a worker: {e}")))),
                    None => match taken_warm(warm.as_ref(), &project).await {
                        Some(s) => Ok(s),
                        None => c.start_session(reuse, &project).await,
                    },
                };
                match started {
                    Ok(s) => session.insert(s),
                    Err(e) => {
                        // The first job carries the error (an engine fault is waited out by
                        // its handler); the others try again with a new container.
                        if let Some(job) = backlog.pop_front() {
                            answer(job, Err(e));
                        }
                        continue;
                    }
                }
            }
        };
        let budget = ((reuse - s.served) as usize).min(backlog.len());
        let batch: Vec<Job> = backlog.drain(..budget).collect();
        // Past half its budget, start the container's successor, so that it is up when
        // this one is used up (a lane that goes idle instead removes it when it ends). A
        // one-task lane has no successor.
        let half_used = s.served + batch.len() as u32 >= reuse.div_ceil(2);
        if reuse > 1 && half_used && spare.is_none() {
            let c = c.clone();
            let project = project.clone();
            spare = Some(tokio::spawn(async move {
                c.start_session(reuse, &project).await
            }));
        }
        if let Err(e) = s.send(batch.iter().map(|job| &job.task)).await {
            // No task of the batch reached a worker. A container that had served tasks
            // died while it waited (the check above missed it by a moment): none of them
            // is charged, they go to a new one. A container that takes no input from the
            // start: the first carries the error (as when a container cannot start), so
            // a broken engine or image cannot keep the lane going round.
            let fresh = s.served == 0;
            let mut jobs = batch.into_iter();
            if fresh {
                if let Some(job) = jobs.next() {
                    answer(job, Err(RunError::Lost(e.to_string())));
                }
            }
            for job in jobs.rev() {
                backlog.push_front(job);
            }
            if let Some(dead) = session.take() {
                c.discard(&dead.id).await;
            }
            continue;
        }
        if reuse > 1 {
            c.metrics.reuse_batches.inc();
            c.metrics.reuse_batch_tasks.inc_by(batch.len() as u64);
        }
        let mut jobs = batch.into_iter();
        let mut broken = false;
        for job in jobs.by_ref() {
            // The worker takes this job now; if its handler withdrew it, the answer is read
            // (the worker computes it anyway) and dropped.
            job.start();
            match s.answer(&job.task, job.timeout).await {
                Answer::Result(result) => {
                    broken = result.is_err();
                    answer(job, result);
                }
                Answer::TimedOut => {
                    let result = TaskResult::failed(&job.task, timeout_reason(job.timeout));
                    answer(job, Ok(result));
                    broken = true;
                }
                Answer::Ended => {
                    // The worker exited without answering: why decides whose fault it was.
                    let verdict = c.exit_verdict(&s.id, &s.stderr).await;
                    let result = verdict.map(|reason| TaskResult::failed(&job.task, reason));
                    answer(job, result);
                    broken = true;
                }
                Answer::Failed(e) => {
                    answer(job, Err(e));
                    broken = true;
                }
            }
            if broken {
                break;
            }
        }
        if broken {
            // The jobs after the one that broke the container were not answered: run them
            // again in a new container, first.
            for job in jobs.rev() {
                backlog.push_front(job);
            }
            if let Some(dead) = session.take() {
                c.discard(&dead.id).await;
            }
        }
    }
    if let Some(s) = session {
        c.discard(&s.id).await;
    }
    if let Some(handle) = spare {
        if let Ok(Ok(s)) = handle.await {
            c.discard(&s.id).await;
        }
    }
    while removals.join_next().await.is_some() {}
    for job in backlog {
        answer(job, Err(RunError::Lost("the worker lane stopped".into())));
    }
}

/// A warm worker for `project`, if the lane uses them and one is ready.
async fn taken_warm(warm: Option<&Arc<Warm>>, project: &str) -> Option<Session> {
    match warm {
        Some(warm) => warm.take(project).await,
        None => None,
    }
}
