//! `faults`: runs the fault-injection suite and prints its table.
//!
//!   cargo run --release -p faults            (CI size)
//!   cargo run --release -p faults -- --large (2,040 tasks and 10 faults per scenario)
//!   cargo run --release -p faults -- --large worker-kill disk-full   (some scenarios)
//!   cargo run --release -p faults -- --bound=120 junk-results       (a client's bound, s)
//!   cargo run --release -p faults -- --defaults worker-kill   (the executants' defaults;
//!                                                              also FAULTS_DEFAULTS=1)

use faults::harness::Env;
use faults::{scenarios, Size};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut env = Env::locate();
    if args.iter().any(|a| a == "--defaults") {
        env.defaults = true;
    }
    let large = args.iter().any(|a| a == "--large");
    let mut size = match (large, env.defaults) {
        (false, false) => Size::ci(),
        (true, false) => Size::large(),
        (false, true) => Size::ci_defaults(),
        (true, true) => Size::large_defaults(),
    };
    if let Some(secs) = args.iter().find_map(|a| a.strip_prefix("--bound=")) {
        size.bound = std::time::Duration::from_secs(secs.parse().expect("--bound=SECONDS"));
    }
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let rows = scenarios::run(&env, size, &only);
    println!();
    faults::print_table(&rows);
    if rows.iter().all(faults::Row::ok) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
