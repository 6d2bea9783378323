//! The executant killed with SIGKILL, and a new one started, again and again.

use std::time::Duration;

use super::Run;
use crate::harness::Env;
use crate::{Row, Size};

/// The executant killed with SIGKILL, and a new one started, again and again.
pub fn executant_kills(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-executant", &[], None);
    let faults = run.inject(size.faults, Duration::from_millis(2500), |run| {
        run.replace_executant();
        true
    });
    run.finish("executant-kill", faults, vec![], |_, _| {
        (format!("{faults} executants killed (SIGKILL)"), vec![])
    })
}
