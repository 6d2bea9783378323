//! `faults`: runs the fault-injection suite and prints its table.
//!
//!   cargo run --release -p faults            (CI size)
//!   cargo run --release -p faults -- --large (2,040 tasks and 10 faults per scenario)
//!   cargo run --release -p faults -- --large worker-kill disk-full   (some scenarios)

use faults::harness::Env;
use faults::{scenarios, Size};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = if args.iter().any(|a| a == "--large") {
        Size::large()
    } else {
        Size::ci()
    };
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let env = Env::locate();
    let all: [(&str, fn(&Env, Size) -> faults::Row); 7] = [
        ("worker-kill", scenarios::worker_kills),
        ("executant-kill", scenarios::executant_kills),
        ("broker-restart", scenarios::broker_restarts),
        ("client-kill", scenarios::client_kills),
        ("poison", scenarios::poison),
        ("hostile", scenarios::hostile),
        ("disk-full", scenarios::disk_full),
    ];
    let mut rows = Vec::new();
    for (name, scenario) in all {
        if only.is_empty() || only.contains(&name) {
            eprintln!("running {name}...");
            let row = scenario(&env, size);
            faults::print_table(std::slice::from_ref(&row));
            rows.push(row);
        }
    }
    println!();
    faults::print_table(&rows);
    if rows.iter().all(faults::Row::ok) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
