//! What a message on a project's results queue is: the one place that decides.

use lapin::BasicProperties;
use tasks::amqp;
use tasks::trace::TraceParent;
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

/// Classifies the body and properties of a message found on `project`'s results queue:
/// one entry for a message of one result, a dead-lettered task or junk; one per result for a
/// batch of results ([`tasks::results`]), each with the trace context its task had (a
/// message of one result carries it in a header).
///
/// A result counts only if it carries the digest of the project's task at its index
/// ([`Task::digest`]): a result forged by hand, or answering another version of the task,
/// is junk. A result for an index the project does not have is left to the tracker, which
/// says so.
pub fn classify(
    project: &Project,
    body: &[u8],
    props: &BasicProperties,
) -> Vec<(Incoming, Option<TraceParent>)> {
    let not_a_result = match tasks::results::parse(body) {
        Ok(received) if received.is_empty() => "an empty batch of results".to_string(),
        Ok(received) => {
            let header = amqp::traceparent_of(props);
            return received
                .into_iter()
                .map(|r| {
                    let traceparent = match &r.traceparent {
                        Some(tp) => TraceParent::parse(tp),
                        None => header,
                    };
                    (one_result(project, r.result), traceparent)
                })
                .collect();
        }
        Err(e) => e.to_string(),
    };
    vec![(
        dead_lettered(project, body, props)
            .unwrap_or_else(|| Incoming::Junk(format!("not a result: {not_a_result}"))),
        amqp::traceparent_of(props),
    )]
}

/// A result read from the queue: the project's, with its task's digest, or junk.
fn one_result(project: &Project, result: TaskResult) -> Incoming {
    if result.project != project.id {
        return Incoming::Junk(format!("a result of another project ({})", result.project));
    }
    match digest_mismatch(project, &result) {
        Some(why) => Incoming::Junk(why),
        None => Incoming::Result(result),
    }
}

/// One of the project's tasks dead-lettered to its results queue, as a failed outcome.
fn dead_lettered(project: &Project, body: &[u8], props: &BasicProperties) -> Option<Incoming> {
    let reason = amqp::dead_letter_reason(props)?;
    if let Ok(task) = Task::from_json(body) {
        // Only the project's own task, exactly as recorded.
        if project.tasks.json(task.index as usize) == Some(task.to_json().as_slice()) {
            return Some(Incoming::DeadLettered(TaskResult::failed(&task, reason)));
        }
    }
    // A body an executant could not read: the message id still names the task.
    let id = amqp::message_id_of(props);
    let (p, index) = amqp::task_of_message_id(&id)?;
    (p == project.id).then(|| {
        Incoming::DeadLettered(TaskResult {
            schema: tasks::SCHEMA_VERSION,
            project: project.id.clone(),
            index,
            outcome: tasks::Outcome::Failed { reason },
            duration_ms: 0,
            executor: None,
            digest: None,
            provenance: None,
        })
    })
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

    /// The one entry a message classifies to.
    fn first(project: &Project, body: &[u8], props: &BasicProperties) -> Incoming {
        let mut all = classify(project, body, props);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0).0
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
            first(&project("p"), &result.to_json(), &none),
            Incoming::Result(_)
        ));
        assert!(matches!(
            first(&project("q"), &result.to_json(), &none),
            Incoming::Junk(_)
        ));
        assert!(matches!(
            first(&project("p"), b"\xff junk", &none),
            Incoming::Junk(_)
        ));
        // Forged: another task's digest, or none at all.
        let mut forged = TaskResult::failed(&task(), "x");
        forged.digest = Some(project("p").tasks.digest(1).unwrap());
        assert!(matches!(
            first(&project("p"), &forged.to_json(), &none),
            Incoming::Junk(why) if why.contains("digest")
        ));
        forged.digest = None;
        assert!(matches!(
            first(&project("p"), &forged.to_json(), &none),
            Incoming::Junk(why) if why.contains("digest")
        ));
        // A task that was never dead-lettered has no business here.
        assert!(matches!(
            first(&project("p"), &task().to_json(), &none),
            Incoming::Junk(_)
        ));
        // Unreadable, dead-lettered by an executant: the message id names the task.
        let props = tasks::amqp::properties("p/4", Some("unreadable task: malformed JSON"));
        match first(&project("p"), b"{oops", &props) {
            Incoming::DeadLettered(r) => assert_eq!(r.index, 4),
            other => panic!("{other:?}"),
        }
        match first(
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

    #[test]
    fn a_batch_is_classified_result_by_result() {
        let p = project("p");
        let good = TaskResult::failed(&p.tasks.get(0).unwrap(), "x");
        let mut forged = TaskResult::failed(&p.tasks.get(1).unwrap(), "y");
        forged.digest = Some(p.tasks.get(2).unwrap().digest());
        let other = TaskResult::failed(&project("q").tasks.get(2).unwrap(), "z");
        let tp = TraceParent::of_task(&tasks::trace::TraceId::derived_from("p"), 0);
        let body = tasks::results::batch_json([
            (Some(tp.to_string()), &good),
            (None, &forged),
            (None, &other),
        ]);
        let all = classify(&p, &body, &BasicProperties::default());
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0], (Incoming::Result(good), Some(tp)));
        assert!(matches!(&all[1].0, Incoming::Junk(why) if why.contains("digest")));
        assert!(matches!(&all[2].0, Incoming::Junk(why) if why.contains("another project")));
        // An empty batch is junk, not nothing.
        assert!(matches!(
            first(
                &p,
                br#"{"batch":1,"results":[]}"#,
                &BasicProperties::default()
            ),
            Incoming::Junk(_)
        ));
    }
}
