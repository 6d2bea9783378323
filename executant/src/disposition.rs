//! What to do with a TODO delivery before running anything: the one place where an
//! unreadable or refused message is turned into a decision.

use tasks::{Task, TaskSpec};

use crate::config::Config;

/// The largest task message the executant reads (the broker's own limit is far larger).
pub const MAX_TASK_BYTES: usize = 1024 * 1024;

/// The decision for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Run the task.
    Run(Task),
    /// The task is readable but may not run here: report it failed with the reason.
    Refuse(Task, String),
    /// The message cannot be read as a task: dead-letter it with the reason, at once.
    DeadLetter(String),
}

/// Decides what to do with a TODO message body.
pub fn decide(body: &[u8], config: &Config) -> Disposition {
    if body.len() > MAX_TASK_BYTES {
        return Disposition::DeadLetter(format!(
            "task message of {} bytes exceeds the limit of {MAX_TASK_BYTES} bytes",
            body.len()
        ));
    }
    let task = match Task::from_json(body) {
        Ok(task) => task,
        Err(e) => return Disposition::DeadLetter(format!("unreadable task: {e}")),
    };
    if let TaskSpec::Exec(spec) = &task.spec {
        if !config.image_allowed(&spec.image) {
            let reason = format!(
                "image `{}` is not on this executant's allowlist (--allow-image)",
                spec.image
            );
            return Disposition::Refuse(task, reason);
        }
        if let Some(script) = &spec.script {
            if !config.script_repo_allowed(&script.repo) {
                let reason = crate::script::refusal(&script.repo);
                return Disposition::Refuse(task, reason);
            }
        }
    }
    if let Some(secs) = task.timeout_secs {
        if secs > config.max_timeout.as_secs() {
            let reason = format!(
                "timeout of {secs} s exceeds this executant's maximum of {} s",
                config.max_timeout.as_secs()
            );
            return Disposition::Refuse(task, reason);
        }
    }
    Disposition::Run(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(d: &Disposition) -> (&'static str, String) {
        match d {
            Disposition::Run(_) => ("run", String::new()),
            Disposition::Refuse(_, r) => ("refuse", r.clone()),
            Disposition::DeadLetter(r) => ("dead", r.clone()),
        }
    }

    #[test]
    fn decisions() {
        let mut config = Config::new("amqp://x");
        config.allowed_script_repos = vec!["/srv/ws/tasks".into()];
        let big = format!(
            r#"{{"schema":1,"project":"p","index":0,"kind":"exec","image":"debian:bookworm-slim","command":["{}"]}}"#,
            "x".repeat(MAX_TASK_BYTES)
        );
        let table: &[(&str, &str, &str)] = &[
            (
                r#"{"schema":1,"project":"p","index":0,"kind":"nqueens","n":8,"prefix":[],"weight":1}"#,
                "run",
                "",
            ),
            (
                r#"{"schema":1,"project":"p","index":0,"kind":"exec","image":"debian:bookworm-slim","command":["true"]}"#,
                "run",
                "",
            ),
            (
                r#"{"schema":1,"project":"p","index":0,"kind":"exec","image":"debian","command":["true"]}"#,
                "refuse",
                "allowlist",
            ),
            (
                r#"{"schema":1,"project":"p","index":0,"kind":"exec","image":"evil:1","command":["true"]}"#,
                "refuse",
                "allowlist",
            ),
            (
                r#"{"schema":1,"project":"p","index":0,"timeout_secs":99999,"kind":"nqueens","n":8,"prefix":[],"weight":1}"#,
                "refuse",
                "exceeds",
            ),
            ("not json", "dead", "unreadable task: malformed JSON"),
            (
                r#"{"schema":1,"project":"p","index":0,"kind":"bitcoin"}"#,
                "dead",
                "unknown variant",
            ),
            (&big, "dead", "exceeds the limit"),
            (
                r#"{"schema":1,"project":"p","index":0,"kind":"exec","image":"debian:bookworm-slim","command":["sh","/task/s.sh"],"script":{"repo":"/srv/elsewhere","commit":"0123456789012345678901234567890123456789","path":"s.sh"}}"#,
                "refuse",
                "script repository `/srv/elsewhere` is not on this executant's allowlist",
            ),
            (
                r#"{"schema":1,"project":"p","index":0,"kind":"exec","image":"debian:bookworm-slim","command":["sh","/task/s.sh"],"script":{"repo":"/srv/ws/tasks","commit":"0123456789012345678901234567890123456789","path":"s.sh"}}"#,
                "run",
                "",
            ),
        ];
        for (body, want_kind, want_reason) in table {
            let (k, reason) = kind(&decide(body.as_bytes(), &config));
            assert_eq!(k, *want_kind, "{}", &body[..body.len().min(120)]);
            assert!(
                reason.contains(want_reason),
                "{reason:?} lacks {want_reason:?}"
            );
        }
    }
}
