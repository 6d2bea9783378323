//! The executant's broker connections closed under it mid-project, as an operator
//! (`rabbitmqctl close_connection`) or a missed heartbeat would: its publishing connection in
//! one scenario, its consuming connection in the other. Every task must still get exactly one
//! outcome, none may end in `todo.dead`, and the executant must come back each time.

use std::time::Duration;

use super::Run;
use crate::harness::{self, Env};
use crate::{Row, Size};

/// How many times each connection is closed, at every size.
const CLOSES: usize = 10;

/// The publishing connection closed again and again.
pub fn publish_closed(env: &Env, size: Size) -> Row {
    closed(env, size, "publish", "publish-close")
}

/// The consuming connection closed again and again.
pub fn consume_closed(env: &Env, size: Size) -> Row {
    closed(env, size, "consume", "consume-close")
}

fn closed(env: &Env, size: Size, side: &str, scenario: &'static str) -> Row {
    let mut run = Run::start(env, size, &format!("faults-{scenario}"), &[], None);
    run.wait_published();
    let faults = run.inject(CLOSES, Duration::from_millis(400), |run| {
        // Closed only once the executant has reconnected since the last fault.
        let name = format!("executant {} {side}", run.executant_name());
        harness::close_connections(&name) > 0
    });
    run.finish(scenario, faults, vec![], move |_, _| {
        (format!("{faults} {side} connections closed"), vec![])
    })
}
