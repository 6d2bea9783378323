//! `--local`: computing a project in-process on every core, with no broker and no container.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use tasks::{Task, TaskOutput, TaskResult, TaskSpec};

/// Computes every task not yet done on `threads` threads, handing each result to `sink` on
/// the calling thread (which records it).
pub fn compute(tasks: &[Task], threads: usize, mut sink: impl FnMut(TaskResult)) {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(task) = tasks.get(i) else { break };
                if tx.send(compute_one(task)).is_err() {
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
    let start = std::time::Instant::now();
    let mut result = match &task.spec {
        TaskSpec::Nqueens { n, prefix, .. } => {
            match tasks::nqueens::count_completions(*n, prefix) {
                Ok(solutions) => TaskResult::ok(task, TaskOutput::Nqueens { solutions }),
                Err(e) => TaskResult::failed(task, e.to_string()),
            }
        }
        TaskSpec::Exec(_) => TaskResult::failed(
            task,
            "exec tasks run in containers: --local cannot run them (start an executant)",
        ),
    };
    result.duration_ms = start.elapsed().as_millis() as u64;
    result.executor = Some("local".into());
    result
}
