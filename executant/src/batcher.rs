//! Results published in batches, one project's at a time.
//!
//! Every result goes out with a publisher confirm, and its TODO delivery is acked only after
//! that confirm. A confirm per result costs the broker a message and the executant a round
//! trip per task, which short tasks cannot afford. So the results of a project that are
//! ready together go out as one message (a batch, [`tasks::results`], at most
//! [`MAX_BATCH`] results): the first result of a quiet project is published alone at once
//! (as a message of one result, the format of earlier builds); the results that become ready
//! while its confirm is awaited go out together in the next message, and so on. Nothing
//! waits for a batch to fill. Each handler learns whether the message carrying its result
//! was confirmed, and acks or returns its delivery by that, as before: a batch that is not
//! confirmed leaves every delivery in it unacked (each published again on a new connection
//! by the publisher's retries, or returned), and a batch confirmed but acked only in part
//! (the executant killed in between) comes back as duplicates, which the client ignores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tasks::amqp::{self, Message};
use tasks::trace::TraceParent;
use tasks::TaskResult;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::publisher::{PublishError, Publisher};

/// The most results in one message (about 200 bytes each with their provenance).
pub(crate) const MAX_BATCH: usize = 256;

/// Whether the message carrying a result was confirmed (shared by every result in it).
pub(crate) type Published = Result<(), Arc<PublishError>>;

/// One result waiting for its message.
struct Waiting {
    result: TaskResult,
    traceparent: Option<TraceParent>,
    /// Until when its publication may be retried (its delivery's consumer timeout).
    deadline: Instant,
    done: oneshot::Sender<Published>,
}

/// The results of every project waiting to be published. A project is in the map while a
/// flusher runs for it; the flusher removes it when it finds nothing left to publish.
pub(crate) struct Batcher {
    publisher: Arc<Publisher>,
    projects: Mutex<HashMap<String, Vec<Waiting>>>,
}

impl Batcher {
    /// Batches results published through `publisher`.
    pub(crate) fn new(publisher: Arc<Publisher>) -> Arc<Batcher> {
        Arc::new(Batcher {
            publisher,
            projects: Mutex::new(HashMap::new()),
        })
    }

    /// Publishes `result` (its project's results queue already declared) in the next message
    /// of its project, and returns once that message was confirmed, or could not be.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        result: TaskResult,
        traceparent: Option<TraceParent>,
        deadline: Instant,
    ) -> Published {
        let (done, confirmed) = oneshot::channel();
        let project = result.project.clone();
        let waiting = Waiting {
            result,
            traceparent,
            deadline,
            done,
        };
        let start_flusher = {
            let mut projects = self.projects.lock().expect("batcher lock");
            match projects.get_mut(&project) {
                Some(queue) => {
                    queue.push(waiting);
                    false
                }
                None => {
                    projects.insert(project.clone(), vec![waiting]);
                    true
                }
            }
        };
        if start_flusher {
            tokio::spawn(self.clone().flush(project));
        }
        confirmed
            .await
            .unwrap_or_else(|_| Err(Arc::new(PublishError::Abandoned)))
    }

    /// Publishes `project`'s waiting results, a message at a time, until none is left.
    async fn flush(self: Arc<Self>, project: String) {
        loop {
            let batch: Vec<Waiting> = {
                let mut projects = self.projects.lock().expect("batcher lock");
                let Some(queue) = projects.get_mut(&project) else {
                    return;
                };
                if queue.is_empty() {
                    projects.remove(&project);
                    return;
                }
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            let published = self.send(&project, &batch).await.map_err(Arc::new);
            for waiting in batch {
                // A handler that stopped waiting (its session ended) has nothing to settle.
                let _ = waiting.done.send(published.clone());
            }
        }
    }

    /// One message for `batch`: a message of one result as earlier builds wrote it (its
    /// trace context in a header), or a batch.
    async fn send(&self, project: &str, batch: &[Waiting]) -> Result<(), PublishError> {
        let deadline = batch
            .iter()
            .map(|w| w.deadline)
            .min()
            .expect("a batch is never empty");
        if let [one] = batch {
            let id = format!("{}/{}", one.result.project, one.result.index);
            let message = Message {
                exchange: amqp::RESULTS_EXCHANGE,
                routing_key: project,
                message_id: &id,
                body: &one.result.to_json(),
                reason: None,
            };
            return self
                .publisher
                .publish(message, one.traceparent.as_ref(), deadline)
                .await;
        }
        let body = tasks::results::batch_json(
            batch
                .iter()
                .map(|w| (w.traceparent.as_ref().map(ToString::to_string), &w.result)),
        );
        // Not a task id: a batch answers several tasks (`<project>/batch-<first index>`).
        let id = format!("{project}/batch-{}", batch[0].result.index);
        let message = Message {
            exchange: amqp::RESULTS_EXCHANGE,
            routing_key: project,
            message_id: &id,
            body: &body,
            reason: None,
        };
        self.publisher.publish(message, None, deadline).await
    }
}
