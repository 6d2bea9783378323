//! `worker`: what runs inside a worker container. It reads tasks as JSON, computes them and
//! writes results as JSON. It never talks to the broker: the executant feeds it.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod compute;

/// Computes platform tasks: one per line on standard input, one result per line on standard
/// output.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read one task (JSON) on standard input, write its result (JSON) on standard output.
    Run,
    /// Serve a stream of tasks: one JSON task per line in, one JSON result per line out.
    Serve {
        /// Exit after this many tasks (0: until standard input closes).
        #[arg(long, default_value_t = 0)]
        max_tasks: u64,
    },
    /// Count the N-queens solutions of a whole board on the spot (one thread).
    Nqueens {
        /// The board size (1 to 32).
        n: u8,
        /// Print a JSON object (`n`, `solutions`, `seconds`) instead of the bare count.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut input)?;
            let line = compute::answer(&input)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&line)?;
            out.write_all(b"\n")?;
            out.flush()?;
            Ok(())
        }
        Command::Serve { max_tasks } => serve(max_tasks),
        Command::Nqueens { n, json } => {
            let start = std::time::Instant::now();
            let solutions = tasks::nqueens::count_all(n)?;
            let seconds = start.elapsed().as_secs_f64();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"n": n, "solutions": solutions, "seconds": seconds})
                );
            } else {
                println!("{solutions}");
            }
            Ok(())
        }
    }
}

fn serve(max_tasks: u64) -> anyhow::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut served = 0;
    for line in stdin.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = compute::answer(line.as_bytes())?;
        out.write_all(&answer)?;
        out.write_all(b"\n")?;
        out.flush()?;
        served += 1;
        if max_tasks != 0 && served >= max_tasks {
            break;
        }
    }
    Ok(())
}
