//! Issue 11, item 10: junk on a results queue is dropped at once and counted; it never
//! stalls the follower.

use std::time::Duration;

use tasks::amqp::{self, Message};

use crate::broker::{client_json_within, forget_results_queue, nodes, with_channel};
use crate::support::{client_json, Executant};

#[test]
fn a_thousand_unreadable_messages_ahead_of_the_results_do_not_stall_the_follower() {
    forget_results_queue("junk");
    let ws = tempfile::tempdir().unwrap();
    let stranger = tasks::split::nqueens_project("someone-else", 6, 1).unwrap();
    let other_result =
        tasks::TaskResult::failed(&stranger.tasks.get(0).unwrap(), "not yours").to_json();
    let task_never_dead = tasks::split::nqueens_project("junk", 10, 2)
        .unwrap()
        .tasks
        .get(0)
        .unwrap()
        .to_json();
    with_channel(async |ch| {
        amqp::declare_results(ch, "junk", &nodes()).await.unwrap();
        for i in 0..1000 {
            let body: &[u8] = match i % 3 {
                0 => b"\xff\xfe not json at all",
                1 => &other_result,
                _ => &task_never_dead,
            };
            amqp::publish(
                ch,
                Message {
                    exchange: amqp::RESULTS_EXCHANGE,
                    routing_key: "junk",
                    message_id: "junk",
                    body,
                    reason: None,
                },
            )
            .await
            .unwrap();
        }
    });
    let (code, json, _) = client_json(
        ws.path(),
        &["nqueens", "10", "--depth", "2", "--id", "junk", "--detach"],
    );
    assert_eq!(code, 0, "{json}");
    let _executant = Executant::start(8);
    let (code, json, out) =
        client_json_within(ws.path(), &["resume", "junk"], Duration::from_secs(120));
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["solutions"].as_u64(), Some(724));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(json["junk_results"].as_u64(), Some(1000), "{json} {err}");
    assert!(
        err.contains("dropped 1000 messages of results.junk"),
        "{err}"
    );
}
