//! Two followers of one project at once, then a third: a project recorded with `--detach`,
//! two `resume` started together, then an executant. One follower must own the project (the
//! other says who holds it, or waits), no batch of results may be lost, and a later `resume`
//! finishes at once.

use std::time::Duration;

use super::{spawn_client, Run};
use crate::harness::Env;
use crate::{Row, Size};

/// Two followers racing, then a third resume.
pub fn two_followers(env: &Env, size: Size) -> Row {
    let mut run = Run::detached(env, size, "faults-followers", &[]);
    let id = run.id.clone();
    let first = spawn_client(env, &run.ws, &["resume", &id]);
    let second = spawn_client(env, &run.ws, &["resume", &id]);
    std::thread::sleep(Duration::from_millis(300));
    run.start_executant();
    let mut problems = Vec::new();
    let mut finished = 0;
    let mut hung = 0;
    for (which, follower) in [("first", first), ("second", second)] {
        match follower.output(size.bound) {
            None => hung += 1,
            Some(out) if out.status.success() => finished += 1,
            Some(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                // Refused: it must say who holds the project.
                if !stderr.contains("follow") && !stderr.contains("held") {
                    problems.push(format!(
                        "the {which} follower exited {:?} without saying why: {}",
                        out.status.code(),
                        stderr.lines().last().unwrap_or_default()
                    ));
                }
            }
        }
    }
    if finished == 0 && hung == 0 {
        problems.push("neither follower finished the project".into());
    }
    // A third resume, after both: the project is complete, it must say so at once.
    run.follow(&["resume", &id]);
    let mut row = run.finish("two-followers", 2, problems, move |json, _| {
        (
            format!(
                "{finished} of 2 followers finished, then a third resume: {}",
                json["complete"]
            ),
            vec![],
        )
    });
    row.hung += hung;
    row
}
