//! `--local`: computing a project in-process on every core, with no broker and no container.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use tasks::{Task, TaskResult, Tasks};

/// Computes every task not yet done on `threads` threads, handing each result to `sink` on
/// the calling thread (which records it).
pub fn compute(tasks: &Tasks, threads: usize, mut sink: impl FnMut(TaskResult)) {
    let next = AtomicUsize::new(0);
    // Bounded: computing waits while results are committed, rather than piling every
    // result of a large project up in memory (tasks of a millisecond outrun git commits).
    let (tx, rx) = mpsc::sync_channel(threads.max(1) * 256);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(task) = tasks.get(i) else { break };
                if tx.send(compute_one(&task)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for result in rx {
            sink(result);
        }
    });
}

fn compute_one(task: &Task) -> TaskResult {
    let mut result = tasks::compute::compute(task);
    result.executor = Some("local".into());
    result
}
