//! What the integration tests and benches of every crate share about the real broker
//! (feature `test-support`, for dev-dependencies only): its URL, its vhost, vhosts of a
//! test's own, a project's results queue consumed as the client consumes it.

use std::process::{Command, Stdio};

use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use crate::amqp::{self, DEFAULT_AMQP_URL};
use crate::model::{ExecSpec, Project, TaskSpec};

/// The broker the tests use (`AMQP_URL` or the default).
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string())
}

/// The tests' broker URL on a vhost of its own, `name` (created if missing, with every
/// permission for the tests' user), for a test whose executants must take no other test's
/// tasks and whose tasks no other test's executant may take: they all consume `todo`.
pub fn own_vhost(name: &str) -> String {
    let url = amqp_url();
    let user = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .filter(|creds| url.contains('@') && !creds.is_empty())
        .and_then(|creds| creds.split(':').next())
        .unwrap_or("guest")
        .to_string();
    for args in [
        vec!["add_vhost", name],
        vec!["set_permissions", "-p", name, &user, ".*", ".*", ".*"],
    ] {
        let status = Command::new("rabbitmqctl")
            .arg("-q")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        // `add_vhost` of an existing vhost fails: the permissions are what must hold.
        assert!(
            status.success() || args[0] == "add_vhost",
            "rabbitmqctl {args:?} failed"
        );
    }
    let base = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    format!("{base}/{name}")
}

/// The vhost of the tests' broker URL (percent-decoded; `/` when it names none).
pub fn vhost() -> String {
    vhost_of(&amqp_url())
}

/// The vhost an AMQP URL names (percent-decoded; `/` when it names none).
pub fn vhost_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or("");
    let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() {
        return "/".into();
    }
    let mut out = Vec::new();
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            out.push(u8::from_str_radix(&hex, 16).expect("a percent escape"));
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).expect("a UTF-8 vhost")
}

/// Declares `project`'s results queue as an executant given `url` (one node URL or a
/// cluster's, comma-separated) declares it, and consumes it on `channel`: the queue's name
/// and the consumer.
pub async fn consume_results(channel: &Channel, url: &str, project: &str) -> (String, Consumer) {
    let queue = amqp::declare_results(channel, project, &amqp::Nodes::parse(url))
        .await
        .unwrap();
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (queue, consumer)
}

/// Whether the broker at `url` has queue `name` (a passive declaration).
pub async fn queue_exists(url: &str, name: &str) -> bool {
    let conn = amqp::connect(url, "test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let found = amqp::inspect(&channel, name).await.is_ok();
    let _ = conn.close(200, "".into()).await;
    found
}

/// Project `id` of `n` tasks, task `i` an `echo task i` in `debian:bookworm-slim`.
pub fn echo_project(id: &str, n: usize) -> Project {
    let specs: Vec<_> = (0..n)
        .map(|i| {
            TaskSpec::Exec(ExecSpec {
                image: "debian:bookworm-slim".into(),
                command: vec!["echo".into(), format!("task {i}")],
                script: None,
            })
        })
        .collect();
    Project::from_specs(id, specs).unwrap()
}

#[cfg(test)]
mod tests {
    use super::vhost_of;

    #[test]
    fn vhost_of_decodes_the_path() {
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(vhost_of("amqp://127.0.0.1:5672"), "/");
        assert_eq!(vhost_of("amqp://u:p@h:5672/it-x?heartbeat=60"), "it-x");
        assert_eq!(vhost_of("amqp://h/a%2Fb"), "a/b");
    }
}
