//! The executant killed with SIGKILL, and a new one started, again and again.

use std::time::Duration;

use super::Run;
use crate::harness::Env;
use crate::{Row, Size};

/// The executant killed with SIGKILL, and a new one started, again and again. With the
/// executants' defaults, each kill lands once the project's first results are recorded and
/// the killed executant's prefetch (read from its log) is reported: every delivery it held,
/// running or merely waiting, goes back to the queue and is charged one delivery by the
/// broker.
pub fn executant_kills(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-executant", &[], None);
    run.wait_working();
    let mut prefetches = Vec::new();
    let faults = run.inject(size.faults, Duration::from_millis(2500), |run| {
        let killed = run.executants - 1;
        run.replace_executant();
        prefetches.push(prefetch_in_log(run, killed));
        true
    });
    let held = prefetches
        .iter()
        .map(|p| p.map_or("-".to_string(), |p| p.to_string()))
        .collect::<Vec<_>>()
        .join(",");
    run.finish("executant-kill", faults, vec![], |_, _| {
        (
            format!("{faults} executants killed (SIGKILL), prefetch at each kill {held}"),
            vec![],
        )
    })
}

/// The last prefetch executant `n` of the run logged (`prefetch resized prefetch=P`);
/// `None` when it kept its first one (`--concurrency`) or when the log says nothing.
fn prefetch_in_log(run: &Run, n: usize) -> Option<u16> {
    let log = std::fs::read_to_string(run.logs.join(format!("executant-{n}.log"))).ok()?;
    log.lines()
        .filter(|l| l.contains("prefetch resized"))
        .filter_map(|l| l.rsplit("prefetch=").next())
        .filter_map(|p| p.trim().parse().ok())
        .next_back()
}
