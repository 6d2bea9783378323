//! The fault-injection suite at CI size: every scenario must keep every task, count none
//! twice, contain every hostile task and leave nothing behind.

use faults::harness::Env;
use faults::{scenarios, Size};

#[test]
fn every_task_survives_every_fault() {
    let env = Env::locate();
    let rows = scenarios::run(&env, Size::ci(), &[]);
    println!();
    faults::print_table(&rows);
    for row in &rows {
        assert!(row.faults > 0, "{}: no fault was injected", row.scenario);
        assert!(row.ok(), "{} broke a promise: {row:?}", row.scenario);
    }
}
