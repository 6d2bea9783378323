//! What a message on a project's results queue is: the one place that decides.

use lapin::BasicProperties;
use tasks::amqp;
use tasks::{Task, TaskResult};

/// A message of `results.<project>`, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A task's result, from an executant.
    Result(TaskResult),
    /// One of the project's tasks, dead-lettered (by the broker: delivery limit, rejected,
    /// ...; or by an executant): a failed outcome carrying that reason.
    DeadLettered(TaskResult),
    /// Anything else (not JSON, another project's result, a task never dead-lettered):
    /// dropped at once, with the reason, so that it never holds the consumer up.
    Junk(String),
}

/// Classifies the body and properties of a message found on `project`'s results queue.
pub fn classify(project: &str, body: &[u8], props: &BasicProperties) -> Incoming {
    let not_a_result = match TaskResult::from_json(body) {
        Ok(result) if result.project == project => return Incoming::Result(result),
        Ok(result) => {
            return Incoming::Junk(format!("a result of another project ({})", result.project))
        }
        Err(e) => e,
    };
    if let Some(reason) = amqp::dead_letter_reason(props) {
        if let Ok(task) = Task::from_json(body) {
            if task.project == project {
                return Incoming::DeadLettered(TaskResult::failed(&task, reason));
            }
        }
        // A body an executant could not read: the message id still names the task.
        let id = amqp::message_id_of(props);
        if let Some((p, index)) = amqp::task_of_message_id(&id) {
            if p == project {
                return Incoming::DeadLettered(TaskResult {
                    schema: tasks::SCHEMA_VERSION,
                    project: project.to_string(),
                    index,
                    outcome: tasks::Outcome::Failed { reason },
                    duration_ms: 0,
                    executor: None,
                });
            }
        }
    }
    Incoming::Junk(format!("not a result: {not_a_result}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldArray, FieldTable};

    fn task() -> Task {
        tasks::split::nqueens_project("p", 6, 1).unwrap().tasks[0].clone()
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
            classify("p", &result.to_json(), &none),
            Incoming::Result(_)
        ));
        assert!(matches!(
            classify("q", &result.to_json(), &none),
            Incoming::Junk(_)
        ));
        assert!(matches!(
            classify("p", b"\xff junk", &none),
            Incoming::Junk(_)
        ));
        // A task that was never dead-lettered has no business here.
        assert!(matches!(
            classify("p", &task().to_json(), &none),
            Incoming::Junk(_)
        ));
        // Unreadable, dead-lettered by an executant: the message id names the task.
        let props = tasks::amqp::properties("p/4", Some("unreadable task: malformed JSON"));
        match classify("p", b"{oops", &props) {
            Incoming::DeadLettered(r) => assert_eq!(r.index, 4),
            other => panic!("{other:?}"),
        }
        match classify("p", &task().to_json(), &dead_props("delivery_limit")) {
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
