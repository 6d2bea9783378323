//! The RabbitMQ node leading `todo` SIGKILLed mid-project, then started again, on a 3-node
//! cluster of the suite's own (`scripts/rabbitmq-cluster.sh`, nodes `faults-1..3`, AMQP on
//! 127.0.0.1:5731-5733; not the shared node, not the cluster tests'). The executant and the
//! client are given the three node URLs. After each kill, the other nodes must elect a new
//! leader and the project must progress without the killed node; it is then started again
//! (and rejoins) before the next kill.

use std::time::{Duration, Instant};

use tasks::amqp::TODO_QUEUE;

use super::Run;
use crate::cluster::{self, Cluster};
use crate::harness::{self, Env};
use crate::{Row, Size};

/// Nodes in the cluster: a quorum survives one lost node.
const NODES: usize = 3;
/// The longest a kill may leave `todo` without a leader, or the project without progress.
const PATIENCE: Duration = Duration::from_secs(60);

/// Nodes leading `todo` SIGKILLed mid-project, one at a time, each started again.
pub fn node_kills(env: &Env, size: Size) -> Row {
    let cluster = Cluster::start(cluster::FAULTS, NODES);
    let env = Env {
        amqp_url: cluster.urls.clone(),
        ..env.clone()
    };
    // A kill and a node's restart take 10-20 s here: in CI one is the proof, with containers
    // reused for 4 tasks (the project then lasts about as long as the cluster takes to
    // start). At `--large`, a container per task, so that the project outlasts every kill.
    let (target, args): (usize, &[&str]) = if size.faults >= 10 {
        (size.faults, &[])
    } else {
        (1, &["--reuse", "4"])
    };
    let mut run = Run::start(&env, size, "faults-nodes", args, None);
    let (mut slowest_election, mut longest_stall) = (Duration::ZERO, Duration::ZERO);
    let mut problems = Vec::new();
    let faults = run.inject(target, Duration::from_millis(500), |run| {
        // Mid-project: some results recorded, some still to come (at CI size the project
        // lasts a few tens of seconds: a narrower window could miss it).
        let Some((done, tasks)) = harness::progress(&run.ws, &run.id) else {
            return false;
        };
        if done == 0 || done >= tasks {
            return false;
        }
        let Some((leader, asked)) = leader_and_other(&cluster) else {
            return false;
        };
        cluster.signal(leader, "KILL");
        let killed = Instant::now();
        match cluster.wait_new_leader(TODO_QUEUE, leader, asked, PATIENCE) {
            Some(election) => slowest_election = slowest_election.max(election),
            None => problems.push(format!("no new todo leader within {PATIENCE:?}")),
        }
        // Progress without the killed node (or the project's end).
        let progressed = harness::wait_until(PATIENCE, || {
            run.client.exited()
                || harness::progress(&run.ws, &run.id).is_some_and(|(now, _)| now > done)
        });
        if progressed {
            longest_stall = longest_stall.max(killed.elapsed());
        } else {
            problems.push(format!(
                "no progress within {PATIENCE:?} of killing node {leader}"
            ));
        }
        if let Err(e) = cluster.restart(leader) {
            problems.push(e);
        }
        true
    });
    let row = run.finish("node-kill", faults, problems, |_, _| {
        (
            format!(
                "{faults} todo leaders killed (SIGKILL) on a {NODES}-node cluster and started \
                 again; new leader within {:.1} s, progress again within {:.1} s",
                slowest_election.as_secs_f64(),
                longest_stall.as_secs_f64()
            ),
            vec![],
        )
    });
    drop(cluster);
    row
}

/// The node leading `todo` and another node to ask about it after the kill.
fn leader_and_other(cluster: &Cluster) -> Option<(usize, usize)> {
    let leader = (1..=NODES).find_map(|asked| cluster.leader(TODO_QUEUE, asked))?;
    Some((leader, (1..=NODES).find(|&k| k != leader)?))
}
