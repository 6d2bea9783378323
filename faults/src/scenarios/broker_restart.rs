//! The RabbitMQ node restarted mid-project.

use std::time::Duration;

use super::Run;
use crate::harness::{self, Env};
use crate::{Row, Size};

/// The RabbitMQ node restarted mid-project.
pub fn broker_restarts(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-broker", &[], None);
    run.wait_published();
    // A restart takes about ten seconds: in CI two are enough to prove recovery.
    let target = if size.faults >= 10 { size.faults } else { 2 };
    let faults = run.inject(target, Duration::from_millis(1500), |_| {
        harness::restart_broker();
        true
    });
    run.finish("broker-restart", faults, vec![], |_, _| {
        (format!("{faults} broker node restarts"), vec![])
    })
}
