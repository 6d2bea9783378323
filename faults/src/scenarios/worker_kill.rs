//! Worker containers killed at random with `docker kill` during the project.

use std::time::{Duration, Instant};

use super::{pick, Run};
use crate::harness::{self, Env};
use crate::{Row, Size};

/// Worker containers killed at random with `docker kill` during the project. With the
/// executants' defaults a worker container is a lane holding many tasks of the project at
/// once: every one must come back, and the kill may charge an attempt to the one task the
/// lane was waiting on, not to those merely queued in the container behind it.
pub fn worker_kills(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-workers", &[], None);
    run.wait_working();
    let owner = run.id.clone();
    let faults = run.inject(size.faults, Duration::from_millis(700), |run| {
        // A worker container runs for a fraction of a second: watch closely for one. Only
        // this scenario's: other executants on the engine are none of its business.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !run.client.exited() {
            let running = harness::task_containers(&owner);
            if !running.is_empty() && harness::docker_kill(&running[pick(running.len())]) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });
    // Each kill charges at most the task being answered in the container it hits. Checked
    // under the pin only: with the defaults a prefetch resize has once charged a delivery
    // with no fault at all (not explained yet, faults/README.md), and CI saw 4 charged for
    // 3 kills; there the charges are reported in the note, and lost/duplicated still fail.
    if !env.defaults {
        run.charge_limit = Some(faults);
    }
    run.finish("worker-kill", faults, vec![], |_, _| {
        (format!("{faults} worker containers killed"), vec![])
    })
}
