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

use tasks::amqp::Nodes;

use crate::broker::{self, FollowError, Watcher};
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

/// Publishes the next batch of `window`, if it is due, on one of `nodes`; marks the project
/// published after its last task. A failure is told to the person and the batch is held
/// back for the next call. Returns how many tasks were published.
pub async fn top_up(
    window: &mut Window,
    nodes: &Nodes,
    tracker: &mut Tracker,
    watcher: &dyn Watcher,
) -> usize {
    let batch = window.next_batch(tracker);
    if !batch.is_empty() {
        let id = tracker.project().id.clone();
        let trace = crate::trace::project_trace(tracker.workspace(), &id);
        let priority = crate::priority::project_priority(tracker.workspace(), &id);
        if let Err(e) = broker::publish_on(nodes, &id, &trace, priority, &batch).await {
            watcher.warn(&format!(
                "cannot publish the next {} tasks yet ({e}); will retry",
                batch.len()
            ));
            window.give_back(&batch);
            return 0;
        }
    }
    if window.all_published() && !tracker.published() {
        failpoint::reached(failpoint::BEFORE_PUBLISHED_MARKER);
        if let Err(e) = tracker.mark_published() {
            watcher.warn(&format!(
                "cannot record that every task was published yet ({e}); will retry"
            ));
        }
    }
    batch.len()
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
