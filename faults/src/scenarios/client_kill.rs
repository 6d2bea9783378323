//! The client killed with SIGKILL, then resumed, again and again.

use std::time::Duration;

use super::Run;
use crate::harness::Env;
use crate::{Row, Size};

/// The client killed with SIGKILL, then `resume`d, again and again.
pub fn client_kills(env: &Env, size: Size) -> Row {
    let mut run = Run::start(env, size, "faults-client", &[], None);
    run.wait_published();
    let faults = run.inject(size.faults, Duration::from_millis(1500), |run| {
        run.replace_client();
        true
    });
    run.finish("client-kill", faults, vec![], |json, _| {
        let republished = json["published"].as_u64();
        let note = format!(
            "{faults} clients killed (SIGKILL) and resumed, republished {}",
            json["published"]
        );
        // A resumed client must publish nothing: every task was published before the kills.
        let problems = if faults > 0 && republished != Some(0) {
            vec![format!(
                "a resumed client republished {} tasks",
                json["published"]
            )]
        } else {
            vec![]
        };
        (note, problems)
    })
}
