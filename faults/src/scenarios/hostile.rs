//! Hostile tasks beside a good project.

use super::{spawn_client, Run};
use crate::harness::{self, Env};
use crate::{Row, Size};

/// Hostile tasks beside a good project: a fork bomb, a memory hog, an infinite
/// loop, a network connection attempt, a write to the root filesystem.
pub fn hostile(env: &Env, size: Size) -> Row {
    let run = Run::start(
        env,
        size,
        "faults-hostile",
        &["--task-timeout", "8", "--memory-mib", "128"],
        None,
    );
    let hostile_id = format!("{}-evil", run.id);
    let kinds: [(&str, &str, &[&str]); 5] = [
        // Each call waits for its two children, so the bomb holds the container until the
        // pids limit starves it or the timeout kills it (the classic `:(){ :|:& };:` returns
        // at once and dies with its container: contained, but not reported as a failure).
        (
            "fork bomb",
            "bomb() { bomb | bomb; }; bomb",
            &["timed out", "exited with code"],
        ),
        (
            "memory hog",
            "head -c 1000000000 /dev/zero | tail",
            &["out of memory"],
        ),
        ("infinite loop", "while :; do :; done", &["timed out"]),
        (
            "network",
            "exec 3<>/dev/tcp/127.0.0.1/5672 && echo connected",
            &["exited with code"],
        ),
        (
            "rootfs write",
            "echo evil > /usr/evil && echo written",
            &["Read-only file system"],
        ),
    ];
    let rounds = size.faults.div_ceil(kinds.len());
    let specs: Vec<serde_json::Value> = (0..rounds)
        .flat_map(|_| kinds.iter())
        .map(|(_, script, _)| {
            serde_json::json!({"kind": "exec", "image": "debian:bookworm-slim", "command": ["bash", "-c", script]})
        })
        .collect();
    let file = run.logs.join("hostile.json");
    std::fs::write(&file, serde_json::to_vec(&specs).unwrap()).unwrap();
    let evil = spawn_client(
        env,
        &run.ws,
        &["submit", file.to_str().unwrap(), "--id", &hostile_id],
    );
    let Some(evil_out) = evil.output(size.bound) else {
        let mut row = run.finish("hostile", 0, vec![], |_, _| (String::new(), vec![]));
        row.hung += 1;
        row.problems
            .push("the hostile project did not finish within its bound".into());
        return row;
    };
    let evil_json = harness::client_json(&evil_out);
    let mut problems = Vec::new();
    if evil_out.status.code() != Some(3) {
        problems.push(format!(
            "the hostile project exited {:?}, not 3 (tasks failed)",
            evil_out.status.code()
        ));
    }
    let verdict = harness::verify(&run.ws, &hostile_id, None);
    let mut contained = 0;
    for (index, reason) in &verdict.failed {
        let (name, _, expected) = kinds[*index as usize % kinds.len()];
        if expected.iter().any(|e| reason.contains(e)) {
            contained += 1;
        } else {
            problems.push(format!(
                "{name} (task {index}) failed with an unexpected reason: {reason}"
            ));
        }
    }
    if verdict.failed.len() != specs.len() {
        problems.push(format!(
            "{} of {} hostile tasks did not fail: outputs {}",
            specs.len() - verdict.failed.len(),
            specs.len(),
            evil_json["outputs"]
        ));
    }
    let total = specs.len();
    run.finish("hostile", total, problems, |_, _| {
        let note = format!(
            "{contained}/{total} hostile tasks contained (failed with the expected reason)"
        );
        (note, vec![])
    })
}
