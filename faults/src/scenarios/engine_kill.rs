//! A Docker engine's `dockerd` killed with SIGKILL mid-project, again and again: two more
//! executants, each on an extra engine of `scripts/docker-engines.sh`, beside the fixture's
//! own on the host's engine. The killed engine's executant must return the tasks it held
//! once `--engine-grace` has passed; the engine is then started again, and its executant
//! must consume again, before the next kill.

use std::time::{Duration, Instant};

use super::Run;
use crate::engines::Engines;
use crate::harness::{self, Env};
use crate::{Row, Size};

/// The grace the scenario's executants give an unreachable engine, in seconds.
const GRACE_SECS: u64 = 5;
const RETURNED: &str = "past --engine-grace";
const DONE: &str = "task done";
const RESUMED: &str = "answers again; consuming todo";

/// Engines SIGKILLed mid-project, one at a time, then started again.
pub fn engine_kills(env: &Env, size: Size) -> Row {
    let mut engines = Engines::start(2);
    let grace = GRACE_SECS.to_string();
    let args = ["--engine-grace", grace.as_str()];
    let mut run = Run::start(env, size, "faults-engines", &args, None);
    let mut logs = Vec::new();
    for (k, host) in engines.hosts.clone().iter().enumerate() {
        let log = run.logs.join(format!("executant-engine-{}.log", k + 1));
        // The run's executant arguments hold `args` already.
        let all_args: Vec<&str> = run.executant_args.iter().map(String::as_str).collect();
        let name = format!("{}-engine-{}", run.id, k + 1);
        run.others
            .push(env.executant_on(Some(host), &name, &all_args, &log));
        logs.push(log);
    }
    let read = |k: usize| std::fs::read_to_string(&logs[k]).unwrap_or_default();
    let mut slowest_return = Duration::ZERO;
    let mut problems = Vec::new();
    let mut victim = 0;
    let faults = run.inject(size.faults, Duration::from_secs(3), |_run| {
        victim = (victim + 1) % 2;
        // Killed while its executant works (it holds deliveries).
        let done = read(victim).matches(DONE).count();
        if !harness::wait_until(Duration::from_secs(20), || {
            read(victim).matches(DONE).count() > done
        }) {
            return false;
        }
        let before = (
            read(victim).matches(RETURNED).count(),
            read(victim).matches(RESUMED).count(),
        );
        if !engines.kill9(victim + 1) {
            return false;
        }
        let killed = Instant::now();
        let returned = harness::wait_until(Duration::from_secs(GRACE_SECS + 30), || {
            read(victim).matches(RETURNED).count() > before.0
        });
        if returned {
            slowest_return = slowest_return.max(killed.elapsed());
        } else {
            problems.push(format!(
                "engine {}'s executant did not return its tasks",
                victim + 1
            ));
        }
        if let Err(e) = engines.restart() {
            problems.push(e);
        } else if !harness::wait_until(Duration::from_secs(60), || {
            read(victim).matches(RESUMED).count() > before.1
        }) {
            problems.push(format!(
                "engine {}'s executant did not consume again",
                victim + 1
            ));
        }
        true
    });
    let row = run.finish("engine-kill", faults, problems, |_, _| {
        (
            format!(
                "{faults} engines killed (SIGKILL of dockerd), held tasks returned within {:.1} \
                 s of a kill (grace {GRACE_SECS} s)",
                slowest_return.as_secs_f64()
            ),
            vec![],
        )
    });
    drop(engines);
    row
}
