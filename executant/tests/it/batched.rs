//! Results published in batches (issue 14): the results of a project that are ready together
//! go out in one message. An executant SIGKILLed while its results stream out must lose none
//! (every task it had not acked comes back to `todo` and another executant answers it), and
//! read the way the client reads them (by task index, the first counting), none counts twice.

use crate::killed::{killed_mid_project, Executant, Seen};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_results_survive_an_executant_killed_mid_stream() {
    // On a vhost of its own (named after the runner's, so that two runners do not share
    // it): no other test's executant takes these tasks.
    let url = own_vhost(&match vhost().as_str() {
        "/" => "executant-batched".to_string(),
        v => format!("{v}-executant-batched"),
    });
    let id = unique_project("batched");
    // 5,078 tasks of well under a millisecond: results are ready faster than confirms come.
    let run = killed_mid_project(
        &url,
        &id,
        12,
        |_, name, log| Executant::start_with(&url, name, log, &[]),
        // Killed while its batches stream out: a quarter of the project in, and batches
        // seen (its lanes hold many deliveries, some published and unacked).
        async |seen: &Seen| seen.kept >= seen.count / 4 && seen.batches > 0,
    )
    .await;
    assert!(run.batches > 0, "no message carried more than one result");
    eprintln!(
        "{} tasks in {} messages ({} batches, the largest {}); victim killed after {} \
         results; {} answered by its successor; {} duplicates ignored",
        run.count,
        run.messages,
        run.batches,
        run.largest,
        run.killed_after,
        run.by_successor,
        run.duplicates
    );
    let mut successor = run.successor;
    successor.stop();
    drop_results_at(&url, &id).await;
}
