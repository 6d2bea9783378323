//! The extra Docker engines of `scripts/docker-engines.sh`, each standing in for a host:
//! started, killed (SIGKILL of their `dockerd`), started again, stopped when dropped.

use std::process::Command;

/// Engines 1..=N, stopped when dropped (a killed one is started again first, so that its
/// `dockerd` removes the containers it left behind).
pub struct Engines {
    count: usize,
    /// Each engine's `DOCKER_HOST`, engine 1 first.
    pub hosts: Vec<String>,
    killed: bool,
}

/// Runs `scripts/docker-engines.sh` with `args`.
fn run_script(args: &[&str]) -> Result<String, String> {
    crate::script::script("docker-engines.sh", args, &[])
}

impl Engines {
    /// Starts `count` engines (reusing the running ones); panics if they do not come up.
    pub fn start(count: usize) -> Engines {
        let hosts = run_script(&["start", &count.to_string()])
            .unwrap_or_else(|e| panic!("{e}"))
            .lines()
            .map(str::to_string)
            .collect();
        Engines {
            count,
            hosts,
            killed: false,
        }
    }

    /// Kills engine `k`'s `dockerd` (1-based) with SIGKILL; whether it was running.
    pub fn kill9(&mut self, k: usize) -> bool {
        let Ok(pid) = std::fs::read_to_string(format!("/run/docker-engine-{k}.pid")) else {
            return false;
        };
        self.killed = true;
        Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the engines that are not running (a killed one).
    pub fn restart(&mut self) -> Result<(), String> {
        run_script(&["start", &self.count.to_string()])?;
        self.killed = false;
        Ok(())
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        if self.killed {
            let _ = run_script(&["start", &self.count.to_string()]);
        }
        let _ = run_script(&["stop", &self.count.to_string()]);
    }
}
