//! Fair share between projects: a following client keeps at most `--max-in-flight` of its
//! project's tasks published and without an outcome, publishing more as outcomes arrive.
//! Two projects of the same priority thus take turns in their work queue, a window at a
//! time, instead of the second waiting for the first to drain.
//!
//! The `published` marker is committed only once every task was published, so a client
//! killed midway leaves a project that `resume` publishes again (from its first task
//! without an outcome; tasks still queued from the killed run may then run twice, counted
//! once).

use std::collections::VecDeque;
use std::sync::Arc;

use tasks::amqp::{BrokerError, Nodes};
use tasks::priority::Priority;
use tasks::trace::TraceId;
use tasks::Task;
use tokio::task::JoinHandle;

use crate::broker::{self, FollowError, KeptLink, Watcher};
use crate::failpoint;
use crate::tracking::Tracker;

/// The default bound on a project's tasks in flight: deep enough that executants never
/// find its queue empty while it has tasks left, short enough that a project submitted
/// behind it starts within a window.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2000;

/// Which of a project's tasks this run published, and which it holds back.
#[derive(Debug)]
pub struct Window {
    max: usize,
    /// Not published yet, in index order.
    held: VecDeque<u32>,
    /// Published by this run, perhaps still without an outcome.
    in_flight: Vec<u32>,
}

impl Window {
    /// Every task without an outcome held back; at most `max` (at least 1) in flight.
    pub fn new(tracker: &Tracker, max: usize) -> Window {
        let held = (0..tracker.project().tasks.len() as u32)
            .filter(|&i| !tracker.has(i))
            .collect();
        Window {
            max: max.max(1),
            held,
            in_flight: Vec::new(),
        }
    }

    /// The tasks to publish now: when no more than three quarters of the window are in
    /// flight (or nothing was published yet), the next held tasks without an outcome, up
    /// to a full window. They count as published; [`Window::give_back`] if they were not.
    pub fn next_batch(&mut self, tracker: &Tracker) -> Vec<tasks::Task> {
        self.in_flight.retain(|&i| !tracker.has(i));
        let step = (self.max / 4).max(1);
        if self.held.is_empty() || self.in_flight.len() + step > self.max {
            return Vec::new();
        }
        let mut batch = Vec::new();
        while self.in_flight.len() < self.max {
            let Some(index) = self.held.pop_front() else {
                break;
            };
            if tracker.has(index) {
                continue;
            }
            self.in_flight.push(index);
            let task = tracker.project().tasks.get(index as usize);
            batch.push(task.expect("a task of the project"));
        }
        batch
    }

    /// `batch` (from [`Window::next_batch`]) could not be published: held back again.
    pub fn give_back(&mut self, batch: &[tasks::Task]) {
        for task in batch.iter().rev() {
            self.held.push_front(task.index);
        }
        self.in_flight
            .retain(|i| !batch.iter().any(|t| t.index == *i));
    }

    /// Whether every task was published.
    pub fn all_published(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether task `index` was published by this run (or had an outcome when it started).
    pub fn published(&self, index: u32) -> bool {
        self.held.front().is_none_or(|&first| index < first)
    }

    /// How many outcomes are worth waiting for before looking for more to publish.
    pub fn step(&self) -> usize {
        (self.max / 4).max(1)
    }
}

/// Publishes the first window of a project that was not (wholly) published: how many tasks,
/// and the window to go on with while following (`None`: every task is published, and the
/// project is marked so).
pub async fn publish_first(
    url: &str,
    tracker: &mut Tracker,
    max: usize,
) -> Result<(usize, Option<Window>), FollowError> {
    let mut window = Window::new(tracker, max);
    let batch = window.next_batch(tracker);
    let id = tracker.project().id.clone();
    let trace = crate::trace::project_trace(tracker.workspace(), &id);
    let priority = crate::priority::project_priority(tracker.workspace(), &id);
    failpoint::reached(failpoint::BEFORE_FIRST_WINDOW);
    broker::publish(url, &id, &trace, priority, &batch).await?;
    if window.all_published() {
        failpoint::reached(failpoint::BEFORE_PUBLISHED_MARKER);
        tracker.mark_published()?;
        return Ok((batch.len(), None));
    }
    Ok((batch.len(), Some(window)))
}

/// The outcome of publishing a batch: the batch, and whether every task of it was confirmed.
pub type Published = (Vec<Task>, Result<(), BrokerError>);

/// Publishes a window's batches in the background, one at a time, on one kept connection,
/// while the follower goes on recording outcomes: publishing a quarter window takes a few
/// confirm round trips (and took a connection of its own before), about 0.1 s during which
/// a follower that waited for it let the executants run dry. Dropping it abandons the batch
/// being published (its tasks, in `todo` or not, are then the business of a resumed run, as
/// when the client is killed).
pub struct Feed {
    nodes: Arc<Nodes>,
    trace: TraceId,
    priority: Priority,
    link: Arc<KeptLink>,
    publishing: Option<JoinHandle<Published>>,
}

impl Feed {
    /// A feed publishing to one of `nodes`, with the project's trace id and priority.
    pub fn new(nodes: Arc<Nodes>, trace: TraceId, priority: Priority) -> Feed {
        Feed {
            nodes,
            trace,
            priority,
            link: Arc::new(KeptLink::default()),
            publishing: None,
        }
    }

    /// Whether a batch is being published.
    pub fn busy(&self) -> bool {
        self.publishing.is_some()
    }

    /// Starts publishing the next batch of `window`, if one is due and none is being
    /// published; marks the project published once its last batch was confirmed.
    pub fn top_up(&mut self, window: &mut Window, tracker: &mut Tracker, watcher: &dyn Watcher) {
        if self.busy() {
            return;
        }
        let batch = window.next_batch(tracker);
        if !batch.is_empty() {
            let id = tracker.project().id.clone();
            let (nodes, link) = (self.nodes.clone(), self.link.clone());
            let (trace, priority) = (self.trace, self.priority);
            self.publishing = Some(tokio::spawn(async move {
                let published =
                    broker::publish_on(&nodes, Some(&link), &id, &trace, priority, &batch).await;
                (batch, published)
            }));
            return;
        }
        if window.all_published() && !tracker.published() {
            failpoint::reached(failpoint::BEFORE_PUBLISHED_MARKER);
            if let Err(e) = tracker.mark_published() {
                watcher.warn(&format!(
                    "cannot record that every task was published yet ({e}); will retry"
                ));
            }
        }
    }

    /// Waits for the batch being published (for ever when there is none).
    pub async fn finished(&mut self) -> Published {
        let Some(publishing) = self.publishing.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = publishing.await;
        self.publishing = None;
        match outcome {
            Ok(outcome) => outcome,
            // Only a panic ends the task otherwise (it is aborted only when dropped).
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Takes the end of a publication ([`Feed::finished`]) into `window`: a batch that
    /// failed is told to the person and held back for the next [`Feed::top_up`]; after one
    /// that was confirmed, the next is started if it is due. Returns how many tasks were
    /// published.
    pub fn settle(
        &mut self,
        window: &mut Window,
        (batch, published): Published,
        tracker: &mut Tracker,
        watcher: &dyn Watcher,
    ) -> usize {
        match published {
            Ok(()) => {
                self.top_up(window, tracker, watcher);
                batch.len()
            }
            Err(e) => {
                watcher.warn(&format!(
                    "cannot publish the next {} tasks yet ({e}); will retry",
                    batch.len()
                ));
                window.give_back(&batch);
                0
            }
        }
    }

    /// Abandons the batch being published, if any, and closes the kept connection.
    pub async fn close(mut self) {
        if let Some(publishing) = self.publishing.take() {
            publishing.abort();
        }
        self.link.close().await;
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(publishing) = &self.publishing {
            publishing.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use tasks::{Task, TaskOutput, TaskResult};

    use super::Window;
    use crate::tracking::{self, BatchPolicy, Tracker};
    use crate::workspace::Workspace;

    fn indexes(batch: &[Task]) -> Vec<u32> {
        batch.iter().map(|t| t.index).collect()
    }

    fn outcome(tracker: &mut Tracker, index: u32) {
        let task = tracker.project().tasks.get(index as usize).unwrap();
        let output = TaskOutput::Nqueens { solutions: 0 };
        tracker.record(TaskResult::ok(&task, output));
    }

    #[test]
    fn at_most_the_bound_in_flight_topped_up_by_quarters() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open_or_init(dir.path()).unwrap();
        let project = tasks::split::nqueens_project("w", 8, 3).unwrap();
        let total = project.tasks.len() as u32;
        assert!(total > 12, "{total} tasks");
        tracking::record_project(&ws, &project, &serde_json::json!({})).unwrap();
        let mut tracker = Tracker::load(&ws, project, BatchPolicy::default());
        // Task 1 already has an outcome: never published.
        outcome(&mut tracker, 1);
        let mut window = Window::new(&tracker, 8);
        assert_eq!(
            indexes(&window.next_batch(&tracker)),
            [0, 2, 3, 4, 5, 6, 7, 8]
        );
        assert!(window.next_batch(&tracker).is_empty(), "a full window");
        // One outcome is less than a quarter of the bound: nothing yet.
        outcome(&mut tracker, 0);
        assert!(window.next_batch(&tracker).is_empty());
        outcome(&mut tracker, 3);
        assert_eq!(indexes(&window.next_batch(&tracker)), [9, 10]);
        assert!(window.published(10) && !window.published(11));
        // A batch that could not be published is held back again, in order.
        outcome(&mut tracker, 2);
        outcome(&mut tracker, 4);
        let batch = window.next_batch(&tracker);
        assert_eq!(indexes(&batch), [11, 12]);
        window.give_back(&batch);
        assert!(!window.published(11));
        assert_eq!(indexes(&window.next_batch(&tracker)), [11, 12]);
        assert!(!window.all_published());
    }
}
