//! The broker's consumer timeout exceeded: the executant is frozen (SIGSTOP) with deliveries
//! in hand until the broker gives up on its channel, then thawed. It must notice, reconnect
//! and finish the project; the deliveries the broker took back run again, counted once.

use std::time::{Duration, Instant};

use super::Run;
use crate::harness::{self, ConsumerTimeout, Env};
use crate::{Row, Size};

/// The lowered timeout (the broker's channels tick every second meanwhile, so a channel goes
/// about 10 seconds after it last acked a delivery it holds).
const TIMEOUT_MS: u64 = 10_000;

/// How long the executant may stay frozen waiting for the broker to act.
const FREEZE_BOUND: Duration = Duration::from_secs(150);

/// One timeout at every size.
pub fn consumer_timeout(env: &Env, size: Size) -> Row {
    // Set before the executant opens its channels: the broker reads it per channel.
    let timeout = ConsumerTimeout::set(TIMEOUT_MS);
    let mut run = Run::start(env, size, "faults-consumer-timeout", &[], None);
    run.wait_published();
    let faults = run.inject(1, Duration::from_millis(500), |run| {
        let pid = run.executant.pid();
        harness::signal(pid, "STOP");
        let frozen = Instant::now();
        let mut timed_out = false;
        while frozen.elapsed() < FREEZE_BOUND {
            std::thread::sleep(Duration::from_secs(2));
            if harness::queue_consumers(&run.env.vhost(), tasks::amqp::TODO_QUEUE) == Some(0) {
                timed_out = true;
                break;
            }
        }
        harness::signal(pid, "CONT");
        timed_out
    });
    let mut row = run.finish("consumer-timeout", faults, vec![], move |_, _| {
        (
            format!("{faults} channels closed by the broker's consumer timeout"),
            vec![],
        )
    });
    drop(timeout);
    if faults == 0 {
        row.problems
            .push("the broker never timed the frozen executant out".into());
    }
    row
}
