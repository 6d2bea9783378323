//! Worker containers killed at random with `docker kill` during the project.

use std::time::{Duration, Instant};

use super::{pick, Run};
use crate::harness::{self, Env};
use crate::{Row, Size};

/// Worker containers killed at random with `docker kill` during the project.
pub fn worker_kills(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-workers", &[], None);
    let faults = run.inject(size.faults, Duration::from_millis(700), |run| {
        // A worker container runs for a fraction of a second: watch closely for one.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !run.client.exited() {
            let running = harness::task_containers();
            if !running.is_empty() && harness::docker_kill(&running[pick(running.len())]) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });
    run.finish("worker-kill", faults, vec![], |_, _| {
        (format!("{faults} worker containers killed"), vec![])
    })
}
