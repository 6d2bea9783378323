//! Junk on a project's results queue: a thousand unreadable messages put on `results.P`
//! before `resume P`. The follower must set them aside at once and finish the project.

use tasks::amqp;

use super::Run;
use crate::harness::Env;
use crate::{Row, Size};

/// Junk messages published before the follower starts.
const JUNK: usize = 1000;

/// A thousand junk results, then `resume` and an executant.
pub fn junk_results(env: &Env, size: Size) -> Row {
    let mut run = Run::detached(env, size, "faults-junk", &[]);
    let id = run.id.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(publish_junk(&env.amqp_url, &id));
    run.start_executant();
    run.follow(&["resume", &id]);
    run.finish("junk-results", JUNK, vec![], |json, _| {
        let counted = json["junk_results"].as_u64().unwrap_or(0);
        let problems = if counted < JUNK as u64 {
            vec![format!(
                "the client counted {counted} junk results of {JUNK}"
            )]
        } else {
            vec![]
        };
        (
            format!("{JUNK} junk results set aside ({counted} counted)"),
            problems,
        )
    })
}

async fn publish_junk(url: &str, project: &str) {
    let conn = amqp::connect(url, "faults junk").await.unwrap();
    let channel = amqp::confirm_channel(&conn).await.unwrap();
    amqp::declare_results(&channel, project, &amqp::Nodes::parse(url))
        .await
        .unwrap();
    for i in 0..JUNK {
        let body = match i % 3 {
            0 => b"{ not json".to_vec(),
            1 => br#"{"schema":1,"what":"nothing we know"}"#.to_vec(),
            _ => vec![0xff; 64],
        };
        amqp::publish(
            &channel,
            amqp::Message {
                exchange: amqp::RESULTS_EXCHANGE,
                routing_key: project,
                message_id: &format!("junk-{i}"),
                body: &body,
                reason: None,
            },
        )
        .await
        .unwrap();
    }
    let _ = conn.close(200, "junk published".into()).await;
}
