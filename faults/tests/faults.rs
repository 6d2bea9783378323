//! The fault-injection suite at CI size: every scenario must keep every task, count none
//! twice, contain every hostile task and leave nothing behind. Then worker-kill and
//! executant-kill again with the executants' own defaults (reused worker containers, the
//! prefetch sized to the work), the configuration users run: about 40 s more. (One test:
//! the scenarios count live platform processes as leftovers, and broker-restart restarts the
//! node, so nothing of the suite may run beside it.)

use faults::harness::Env;
use faults::{scenarios, Size};

/// The scenarios run a second time with the executants' defaults in CI; the others with
/// defaults: `cargo run -p faults -- --defaults [SCENARIO...]`.
const WITH_DEFAULTS: [&str; 2] = ["worker-kill", "executant-kill"];

#[test]
fn every_task_survives_every_fault() {
    let env = Env::locate();
    let mut rows = scenarios::run(&env.with_defaults(false), Size::ci(), &[]);
    let defaults = scenarios::run(
        &env.with_defaults(true),
        Size::ci_defaults(),
        &WITH_DEFAULTS,
    );
    assert_eq!(defaults.len(), WITH_DEFAULTS.len());
    rows.extend(defaults.into_iter().map(|mut row| {
        row.note = format!("defaults: {}", row.note);
        row
    }));
    println!();
    faults::print_table(&rows);
    for row in &rows {
        assert!(row.faults > 0, "{}: no fault was injected", row.scenario);
        assert!(row.ok(), "{} broke a promise: {row:?}", row.scenario);
    }
}
