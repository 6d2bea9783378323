//! What a message on a project's results queue is: the one place that decides.

use lapin::BasicProperties;
use tasks::amqp;
use tasks::{Project, Task, TaskResult};

/// A message of `results.<project>`, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A task's result, from an executant.
    Result(TaskResult),
    /// One of the project's tasks, dead-lettered (by the broker: delivery limit, rejected,
    /// ...; or by an executant): a failed outcome carrying that reason.
    DeadLettered(TaskResult),
    /// Anything else (not JSON, another project's result, a result whose digest is not its
    /// task's, a task never dead-lettered): dropped at once, with the reason, so that it
    /// never holds the consumer up.
    Junk(String),
}

/// Classifies the body and properties of a message found on `project`'s results queue.
///
/// A result counts only if it carries the digest of the project's task at its index
/// ([`Task::digest`]): a result forged by hand, or answering another version of the task,
/// is junk. A result for an index the project does not have is left to the tracker, which
/// says so.
pub fn classify(project: &Project, body: &[u8], props: &BasicProperties) -> Incoming {
    let not_a_result = match TaskResult::from_json(body) {
        Ok(result) if result.project == project.id => {
            return match digest_mismatch(project, &result) {
                Some(why) => Incoming::Junk(why),
                None => Incoming::Result(result),
            }
        }
        Ok(result) => {
            return Incoming::Junk(format!("a result of another project ({})", result.project))
        }
        Err(e) => e,
    };
    if let Some(reason) = amqp::dead_letter_reason(props) {
        if let Ok(task) = Task::from_json(body) {
            // Only the project's own task, exactly as recorded.
            if project.tasks.json(task.index as usize) == Some(task.to_json().as_slice()) {
                return Incoming::DeadLettered(TaskResult::failed(&task, reason));
            }
        }
        // A body an executant could not read: the message id still names the task.
        let id = amqp::message_id_of(props);
        if let Some((p, index)) = amqp::task_of_message_id(&id) {
            if p == project.id {
                return Incoming::DeadLettered(TaskResult {
                    schema: tasks::SCHEMA_VERSION,
                    project: project.id.clone(),
                    index,
                    outcome: tasks::Outcome::Failed { reason },
                    duration_ms: 0,
                    executor: None,
                    digest: None,
                    provenance: None,
                });
            }
        }
    }
    Incoming::Junk(format!("not a result: {not_a_result}"))
}

/// Why `result` does not answer the project's task at its index, if it does not.
fn digest_mismatch(project: &Project, result: &TaskResult) -> Option<String> {
    // Digested as it is held, not decoded (a result a millisecond, a million of them).
    let expected = project.tasks.digest(result.index as usize)?;
    match &result.digest {
        Some(digest) if *digest == expected => None,
        Some(digest) => Some(format!(
            "a result of task {} whose digest {digest} is not its task's (forged, or for another task)",
            result.index
        )),
        None => Some(format!(
            "a result of task {} without the digest of its task",
            result.index
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldArray, FieldTable};

    fn project(id: &str) -> Project {
        tasks::split::nqueens_project(id, 6, 1).unwrap()
    }

    fn task() -> Task {
        project("p").tasks.get(0).unwrap()
    }

    fn dead_props(reason: &str) -> BasicProperties {
        let mut death = FieldTable::default();
        death.insert("reason".into(), AMQPValue::LongString(reason.into()));
        death.insert("queue".into(), AMQPValue::LongString("todo".into()));
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn messages_are_sorted() {
        let none = BasicProperties::default();
        let result = TaskResult::failed(&task(), "x");
        assert!(matches!(
            classify(&project("p"), &result.to_json(), &none),
            Incoming::Result(_)
        ));
        assert!(matches!(
            classify(&project("q"), &result.to_json(), &none),
            Incoming::Junk(_)
        ));
        assert!(matches!(
            classify(&project("p"), b"\xff junk", &none),
            Incoming::Junk(_)
        ));
        // Forged: another task's digest, or none at all.
        let mut forged = TaskResult::failed(&task(), "x");
        forged.digest = Some(project("p").tasks.digest(1).unwrap());
        assert!(matches!(
            classify(&project("p"), &forged.to_json(), &none),
            Incoming::Junk(why) if why.contains("digest")
        ));
        forged.digest = None;
        assert!(matches!(
            classify(&project("p"), &forged.to_json(), &none),
            Incoming::Junk(why) if why.contains("digest")
        ));
        // A task that was never dead-lettered has no business here.
        assert!(matches!(
            classify(&project("p"), &task().to_json(), &none),
            Incoming::Junk(_)
        ));
        // Unreadable, dead-lettered by an executant: the message id names the task.
        let props = tasks::amqp::properties("p/4", Some("unreadable task: malformed JSON"));
        match classify(&project("p"), b"{oops", &props) {
            Incoming::DeadLettered(r) => assert_eq!(r.index, 4),
            other => panic!("{other:?}"),
        }
        match classify(
            &project("p"),
            &task().to_json(),
            &dead_props("delivery_limit"),
        ) {
            Incoming::DeadLettered(r) => match r.outcome {
                tasks::Outcome::Failed { reason } => {
                    assert!(reason.contains("delivery_limit"), "{reason}")
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
}
