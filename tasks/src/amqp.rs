//! The RabbitMQ contract, in one place: queue and exchange names, their arguments, how a
//! message is published (persistent JSON with a confirm), and how a client connects.
//!
//! Every binary declares the topology through [`declare_todo`] and [`declare_results`], so
//! that they agree on every argument (a mismatch makes the broker refuse the declaration).

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

pub use crate::trace::TRACEPARENT_HEADER;
use crate::trace::{TraceId, TraceParent};
use crate::Priority;

pub mod delay;
pub mod nodes;

pub use nodes::{Link, Nodes};

/// The broker a binary talks to when nothing else is configured.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The work queue every executant consumes (quorum, competing consumers): normal priority.
pub const TODO_QUEUE: &str = "todo";
/// The work queue of high-priority projects, declared like `todo`.
pub const TODO_HIGH_QUEUE: &str = "todo.high";
/// The work queue of low-priority projects, declared like `todo`.
pub const TODO_LOW_QUEUE: &str = "todo.low";
/// The exchange `todo` dead-letters to.
pub const DEAD_LETTER_EXCHANGE: &str = "todo.dlx";
/// Where tasks that failed too often, or could not be read, end up.
pub const DEAD_QUEUE: &str = "todo.dead";
/// The exchange results are published to, routed by project id.
pub const RESULTS_EXCHANGE: &str = "results";
/// How many times `todo` takes a message back (a nack, or a channel lost with it in hand)
/// before dead-lettering it: a message is delivered at most `DELIVERY_LIMIT + 1` times, its
/// `x-delivery-count` going from 0 to `DELIVERY_LIMIT` (measured on RabbitMQ 3.10).
///
/// RabbitMQ 3.10 quorum queues have no default limit, so a poison task would loop forever.
pub const DELIVERY_LIMIT: i64 = 5;
/// Header carrying why a message was dead-lettered by a client (not by the broker).
pub const REASON_HEADER: &str = "x-platform-reason";
/// Header asking executants of that name not to run the task (a `verify` re-run wants
/// another executant than the first run's, a `--replicas` run every one that answered):
/// the named one passes it on (see [`pass_on_properties`]) up to [`AVOID_RETURNS`] times
/// per name, then runs it (no other executant may be there).
pub const AVOID_HEADER: &str = "x-avoid-executant";
/// How many times a task is passed on per avoided executant before it runs anyway.
pub const AVOID_RETURNS: i64 = 2;
/// How long an avoided executant holds a task before passing it on: time for another
/// executant to free a slot (passed on at once, a task mostly lands on an avoided executant
/// again when the others are busy).
pub const AVOID_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
/// Header counting how many times avoided executants passed a task on: a copy published
/// again starts with no `x-delivery-count`.
pub const PASSED_ON_HEADER: &str = "x-passed-on";
/// Header carrying a task's project id, so that a dead-lettered task also reaches its
/// project's results queue (through [`DEAD_PROJECTS_EXCHANGE`]).
pub const PROJECT_HEADER: &str = "x-project";
/// The headers exchange bound to [`DEAD_LETTER_EXCHANGE`]: it routes each dead-lettered task
/// by its [`PROJECT_HEADER`] to its project's results queue, where the client turns it into
/// a failed outcome. `todo.dead` keeps its own copy.
pub const DEAD_PROJECTS_EXCHANGE: &str = "todo.dead.projects";
/// The JSON content type every message carries.
pub const CONTENT_TYPE: &str = "application/json";

/// The prefix of every project's results queue.
pub const RESULTS_QUEUE_PREFIX: &str = "results.";

/// The work queue of a priority: `todo.high`, `todo` (normal) or `todo.low`. Every executant
/// consumes the three, starting the highest-priority delivery it holds first.
pub fn todo_queue(priority: Priority) -> &'static str {
    match priority {
        Priority::High => TODO_HIGH_QUEUE,
        Priority::Normal => TODO_QUEUE,
        Priority::Low => TODO_LOW_QUEUE,
    }
}

/// Whether `queue` is one of the work queues ([`todo_queue`]).
pub fn is_todo_queue(queue: &str) -> bool {
    Priority::ALL.into_iter().any(|p| todo_queue(p) == queue)
}

/// The durable queue holding one project's results.
pub fn results_queue(project: &str) -> String {
    format!("{RESULTS_QUEUE_PREFIX}{project}")
}

/// The project whose results queue `queue` is (the inverse of [`results_queue`]); `None`
/// for any other queue.
pub fn project_of_results_queue(queue: &str) -> Option<&str> {
    queue
        .strip_prefix(RESULTS_QUEUE_PREFIX)
        .filter(|p| !p.is_empty())
}

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No connection could be made.
    #[error("cannot connect to the broker at {url}: {source} (is RabbitMQ running there?)")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// What lapin said.
        source: lapin::Error,
    },
    /// The broker refused or dropped an operation.
    #[error("broker operation `{op}` failed: {source}")]
    Operation {
        /// What was attempted.
        op: &'static str,
        /// What lapin said.
        source: lapin::Error,
    },
    /// The broker did not take responsibility for a published message.
    #[error("the broker refused the message published to `{destination}` ({why})")]
    NotConfirmed {
        /// Exchange and routing key.
        destination: String,
        /// Nack, or unroutable.
        why: Unconfirmed,
    },
}

/// Why the broker did not take responsibility for a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unconfirmed {
    /// The broker nacked it (a full queue, a resource alarm).
    #[error("nack")]
    Nack,
    /// No queue was bound for it: the broker returned it.
    #[error("unroutable: no queue is bound for it")]
    Unroutable,
}

/// Names a failed broker operation: `.map_err(op("declare todo"))`.
pub fn op(op: &'static str) -> impl FnOnce(lapin::Error) -> BrokerError {
    move |source| BrokerError::Operation { op, source }
}

/// How long a broker operation (an ack, a nack, a channel, a declaration, a consume, a
/// close) may stay unanswered before its connection is given up. lapin's futures can stay
/// pending forever when a connection breaks at the wrong moment (or a node stops answering
/// without closing it), and its heartbeat notices only after two missed intervals (120 s by
/// default): every long-lived client bounds its broker operations with [`answered`] and
/// reconnects (to the next node of a cluster) when one is not answered in time.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// `op`, or `None` when it did not complete within [`OP_TIMEOUT`] (the connection it runs
/// on is then to be treated as lost).
pub async fn answered<T>(op: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(OP_TIMEOUT, op).await.ok()
}

/// The error of a broker operation `op` that was not answered within [`OP_TIMEOUT`].
pub fn unanswered(op: &'static str) -> BrokerError {
    BrokerError::Operation {
        op,
        source: lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {OP_TIMEOUT:?}"),
        )),
    }
}

/// `op` bounded by [`OP_TIMEOUT`]: its own error, or [`unanswered`] when it took too long.
pub async fn bounded<T>(
    what: &'static str,
    op: impl std::future::Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    answered(op).await.unwrap_or_else(|| Err(unanswered(what)))
}

/// Hides the user info (user and password, or a token standing alone as the user) of
/// every URL in `url` (one URL, or several separated by commas), for messages, logs and
/// records: `https://TOKEN@host/x` -> `https://***@host/x`, `git@host:x` -> `***@host:x`.
pub fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

/// [`redact_url`] applied to every `scheme://` URL found in free text (a library's error
/// message that quotes the URL it failed on, say).
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = i + 3;
        let end = rest[start..]
            .find(|c: char| c == '/' || c.is_whitespace() || "?#\"'()<>,;".contains(c))
            .map_or(rest.len(), |e| start + e);
        let authority = &rest[start..end];
        out.push_str(&rest[..start]);
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn redact_one(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        // scp-like `user@host:path`: the user info ends before the first `:` or `/`.
        None => ("", url),
    };
    let authority_end = if head.is_empty() {
        rest.find([':', '/']).unwrap_or(rest.len())
    } else {
        rest.find(['/', '?', '#']).unwrap_or(rest.len())
    };
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{head}***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// Connects once, with an error a person can act on.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    Connection::connect(url, props)
        .await
        .map_err(|source| BrokerError::Connect {
            url: redact_url(url),
            source,
        })
}

/// Connects, retrying with exponential backoff (0.2 s doubling to 5 s) until `deadline`
/// has passed; `None` retries forever. `url` may list several nodes ([`Nodes`]).
pub async fn connect_with_backoff(
    url: &str,
    name: &str,
    deadline: Option<Duration>,
) -> Result<Connection, BrokerError> {
    Nodes::parse(url)
        .connect_with_backoff(name, deadline)
        .await
        .map(|link| link.connection)
}

fn quorum_todo_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
    );
    args.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// Declares the dead-letter exchange `todo.dlx` (fanout) and [`DEAD_PROJECTS_EXCHANGE`]
/// (headers), bound to it exchange-to-exchange (idempotent). `todo`'s arguments do not
/// change, so queues declared before this routing existed keep working.
async fn declare_dead_letter_routing(channel: &Channel) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(op("declare exchange todo.dlx"))?;
    channel
        .exchange_declare(
            DEAD_PROJECTS_EXCHANGE.into(),
            ExchangeKind::Headers,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(op("declare exchange todo.dead.projects"))?;
    channel
        .exchange_bind(
            DEAD_PROJECTS_EXCHANGE.into(),
            DEAD_LETTER_EXCHANGE.into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(op("bind todo.dead.projects to todo.dlx"))?;
    Ok(())
}

/// Queue `name` as the broker has it (its ready messages and its consumers), without
/// declaring it: a passive declaration, which fails, and closes `channel`, when the queue
/// does not exist.
pub async fn inspect(channel: &Channel, name: &str) -> Result<lapin::Queue, lapin::Error> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
}

/// Declares the work queues (`todo.high`, `todo`, `todo.low`, the same arguments), their
/// dead-letter exchange and `todo.dead` (idempotent).
pub async fn declare_todo(channel: &Channel) -> Result<(), BrokerError> {
    declare_dead_letter_routing(channel).await?;
    let mut dead_args = FieldTable::default();
    dead_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(DEAD_QUEUE.into(), durable(), dead_args)
        .await
        .map_err(op("declare queue todo.dead"))?;
    channel
        .queue_bind(
            DEAD_QUEUE.into(),
            DEAD_LETTER_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(op("bind todo.dead"))?;
    for priority in Priority::ALL {
        channel
            .queue_declare(
                todo_queue(priority).into(),
                durable(),
                quorum_todo_arguments(),
            )
            .await
            .map_err(op("declare a todo queue"))?;
    }
    Ok(())
}

/// Declares the results exchange and the durable results queue of `project` (idempotent),
/// bound to the results exchange by the project id and to [`DEAD_PROJECTS_EXCHANGE`] by the
/// [`PROJECT_HEADER`], so that the project's dead-lettered tasks reach it too.
///
/// The queue's type follows the broker the binary was given, decided here and nowhere else:
/// a quorum queue (replicated) on a cluster ([`Nodes::is_cluster`]: several node URLs), a
/// classic one on one node. Every binary of a broker must be given the same node list, or
/// the broker refuses the second declaration (the type differs).
pub async fn declare_results(
    channel: &Channel,
    project: &str,
    nodes: &Nodes,
) -> Result<String, BrokerError> {
    declare_dead_letter_routing(channel).await?;
    channel
        .exchange_declare(
            RESULTS_EXCHANGE.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(op("declare exchange results"))?;
    let queue = results_queue(project);
    channel
        .queue_declare(
            queue.as_str().into(),
            durable(),
            results_arguments(nodes.is_cluster()),
        )
        .await
        .map_err(op("declare results queue"))?;
    channel
        .queue_bind(
            queue.as_str().into(),
            RESULTS_EXCHANGE.into(),
            project.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(op("bind results queue"))?;
    // `all-with-x` (RabbitMQ 3.10+): a plain `all` ignores headers starting with `x-`, so
    // the binding would match every dead-lettered task of every project.
    let mut by_project = FieldTable::default();
    by_project.insert("x-match".into(), AMQPValue::LongString("all-with-x".into()));
    by_project.insert(
        PROJECT_HEADER.into(),
        AMQPValue::LongString(LongString::from(project)),
    );
    channel
        .queue_bind(
            queue.as_str().into(),
            DEAD_PROJECTS_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            by_project,
        )
        .await
        .map_err(op("bind results queue to dead-lettered tasks"))?;
    Ok(queue)
}

/// The fanout exchange of cancellations, to every executant.
pub const CONTROL_EXCHANGE: &str = "control";
/// The stream that keeps the cancellations (bound to [`CONTROL_EXCHANGE`]): every executant
/// reads it from its start, so one that starts after a cancellation knows of it too.
pub const CANCELLATIONS_STREAM: &str = "control.cancellations";
/// How long [`CANCELLATIONS_STREAM`] keeps a cancellation (the stream's `x-max-age`).
pub const CANCELLATIONS_MAX_AGE: &str = "7D";

/// A project was cancelled: its tasks are not run any more, its containers are stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cancellation {
    /// The project.
    pub project: String,
}

/// An executant's answer to a [`Cancellation`] (sent to its `reply_to`): the project's
/// containers it stopped; after it, it publishes nothing more for the project.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stopped {
    /// The executant's name.
    pub executant: String,
    /// The project.
    pub project: String,
    /// How many of the project's containers it stopped.
    pub containers: usize,
}

/// Declares [`CONTROL_EXCHANGE`] (fanout) and [`CANCELLATIONS_STREAM`] bound to it
/// (idempotent).
pub async fn declare_control(channel: &Channel) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            CONTROL_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(op("declare exchange control"))?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    args.insert(
        "x-max-age".into(),
        AMQPValue::LongString(CANCELLATIONS_MAX_AGE.into()),
    );
    channel
        .queue_declare(CANCELLATIONS_STREAM.into(), durable(), args)
        .await
        .map_err(op("declare stream control.cancellations"))?;
    channel
        .queue_bind(
            CANCELLATIONS_STREAM.into(),
            CONTROL_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(op("bind control.cancellations"))?;
    Ok(())
}

/// A results queue's arguments: none (classic) on one node, a quorum queue on a cluster.
fn results_arguments(cluster: bool) -> FieldTable {
    let mut args = FieldTable::default();
    if cluster {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    args
}

/// Opens a channel in confirm mode, for publishing.
pub async fn confirm_channel(conn: &Connection) -> Result<Channel, BrokerError> {
    let channel = conn.create_channel().await.map_err(op("open channel"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(op("enable publisher confirms"))?;
    Ok(channel)
}

/// A message to publish: persistent JSON with an id.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The exchange (`""` for the default exchange).
    pub exchange: &'a str,
    /// The routing key (a queue name on the default exchange).
    pub routing_key: &'a str,
    /// The AMQP `message_id` (a task id).
    pub message_id: &'a str,
    /// The JSON body.
    pub body: &'a [u8],
    /// Why the message is dead-lettered, when it is (sets [`REASON_HEADER`]).
    pub reason: Option<&'a str>,
}

/// The properties every message of the platform carries. A message dead-lettered by a
/// client (`reason` set) whose id names a task (`<project>/<index>`) also carries that
/// project in [`PROJECT_HEADER`], so that it reaches the project's client even when its
/// body cannot be read.
pub fn properties(message_id: &str, reason: Option<&str>) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from(CONTENT_TYPE))
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(message_id));
    if let Some(reason) = reason {
        let mut headers = FieldTable::default();
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        if let Some((project, _)) = task_of_message_id(message_id) {
            headers.insert(
                PROJECT_HEADER.into(),
                AMQPValue::LongString(LongString::from(project)),
            );
        }
        props = props.with_headers(headers);
    }
    props
}

/// The project and index a task's message id (`<project>/<index>`, see
/// [`crate::Task::id`]) names, if it names one.
pub fn task_of_message_id(message_id: &str) -> Option<(&str, u32)> {
    let (project, index) = message_id.split_once('/')?;
    crate::model::validate_project_id(project).ok()?;
    Some((project, index.parse().ok()?))
}

/// The properties of a task published to `todo`: the platform's, and the task's project in
/// [`PROJECT_HEADER`] (so that the task reaches its project if it is dead-lettered).
pub fn task_properties(task: &crate::Task) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        PROJECT_HEADER.into(),
        AMQPValue::LongString(LongString::from(task.project.as_str())),
    );
    properties(&task.id(), None).with_headers(headers)
}

/// `props` with a [`TRACEPARENT_HEADER`] header added (its other headers kept).
pub fn with_traceparent(props: BasicProperties, traceparent: &TraceParent) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        TRACEPARENT_HEADER.into(),
        AMQPValue::LongString(LongString::from(traceparent.to_string())),
    );
    props.with_headers(headers)
}

/// The properties of a task published to `todo` that executant `avoid` should leave to
/// another ([`AVOID_HEADER`]; several executants: their names joined by commas).
pub fn task_properties_avoiding(task: &crate::Task, avoid: &str) -> BasicProperties {
    let props = task_properties(task);
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        AVOID_HEADER.into(),
        AMQPValue::LongString(LongString::from(avoid)),
    );
    props.with_headers(headers)
}

/// The trace context a message carries in its [`TRACEPARENT_HEADER`] header, if it carries a
/// valid one.
pub fn traceparent_of(props: &BasicProperties) -> Option<TraceParent> {
    let value = props.headers().as_ref()?.inner().get(TRACEPARENT_HEADER)?;
    match value {
        AMQPValue::LongString(s) => TraceParent::parse(&String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => TraceParent::parse(s.as_str()),
        _ => None,
    }
}

/// The executant a delivery asks not to run it ([`AVOID_HEADER`]), if any: the header's
/// whole value (several names are separated by commas, see [`avoided_executants`]).
pub fn avoided_executant(props: &BasicProperties) -> Option<String> {
    match props.headers().as_ref()?.inner().get(AVOID_HEADER)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// The executants a delivery asks not to run it: the [`AVOID_HEADER`] value split on commas
/// (`verify` names one, `--replicas` every executant that already answered the task).
pub fn avoided_executants(props: &BasicProperties) -> Vec<String> {
    avoided_executant(props)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether executant `name` should return this delivery for another executant: the
/// delivery names it in [`AVOID_HEADER`] and has been returned fewer than
/// [`AVOID_RETURNS`] times per executant named (at most [`DELIVERY_LIMIT`] - 1 times, so
/// that the last deliveries always run somewhere).
pub fn leave_to_another(props: &BasicProperties, name: &str) -> bool {
    let avoided = avoided_executants(props);
    if !avoided.iter().any(|a| a == name) {
        return false;
    }
    let returns = (AVOID_RETURNS * avoided.len() as i64).min(DELIVERY_LIMIT - 1);
    delivery_count(props).max(passed_on(props)) < returns
}

/// How many times avoided executants passed this task on ([`PASSED_ON_HEADER`]).
pub fn passed_on(props: &BasicProperties) -> i64 {
    match props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(PASSED_ON_HEADER).cloned())
    {
        Some(AMQPValue::LongLongInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => n.into(),
        _ => 0,
    }
}

/// The properties of the copy of a task an avoided executant publishes again at the tail
/// of `todo` (requeued, a delivery goes back to the head of the queue and mostly to the
/// very slot it just freed): the same, its [`PASSED_ON_HEADER`] one more, without the
/// broker's delivery count.
pub fn pass_on_properties(props: &BasicProperties) -> BasicProperties {
    let count = delivery_count(props).max(passed_on(props)) + 1;
    let mut headers = props.headers().clone().unwrap_or_default();
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        if key.as_str() != "x-delivery-count" {
            kept.insert(key.clone(), value.clone());
        }
    }
    kept.insert(PASSED_ON_HEADER.into(), AMQPValue::LongLongInt(count));
    headers = kept;
    props.clone().with_headers(headers)
}

/// Publishes `message` as mandatory on a confirm channel and waits for the broker's ack;
/// a nack or a returned (unroutable) message is an error.
pub async fn publish(channel: &Channel, message: Message<'_>) -> Result<(), BrokerError> {
    publish_with_properties(
        channel,
        message.exchange,
        message.routing_key,
        message.body,
        properties(message.message_id, message.reason),
    )
    .await
}

/// Publishes `body` with the given properties as mandatory on a confirm channel and waits
/// for the broker's ack; a nack or a returned (unroutable) message is an error.
///
/// [`publish`] is this with the platform's properties; this is for callers (such as an HTTP
/// gateway) that relay messages whose properties they do not choose.
pub async fn publish_with_properties(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), BrokerError> {
    send(channel, exchange, routing_key, body, props)
        .await?
        .check()
        .await
}

/// Publishes raw bytes to `todo` with the platform's properties and waits for the confirm:
/// for a body that is not a [`crate::Task`] (a test's malformed message, say).
pub async fn publish_todo(
    channel: &Channel,
    message_id: &str,
    body: &[u8],
) -> Result<(), BrokerError> {
    let props = properties(message_id, None);
    send(channel, "", TODO_QUEUE, body, props)
        .await?
        .check()
        .await
}

/// How many tasks [`publish_tasks`] keeps in flight before waiting for their confirms.
pub const PUBLISH_WINDOW: usize = 256;

/// Publishes every task to `todo` on a confirm channel and waits for each confirm, with up
/// to [`PUBLISH_WINDOW`] messages in flight at once (a confirm per round trip would cap a
/// client at a few hundred tasks per second). Stops at the first window holding a failure.
pub async fn publish_tasks(channel: &Channel, tasks: &[crate::Task]) -> Result<(), BrokerError> {
    publish_traced_tasks(channel, tasks, None).await
}

/// [`publish_tasks`], each task carrying its span of `trace` in a [`TRACEPARENT_HEADER`]
/// header ([`TraceParent::of_task`]); the client publishes this way.
pub async fn publish_traced_tasks(
    channel: &Channel,
    tasks: &[crate::Task],
    trace: Option<&TraceId>,
) -> Result<(), BrokerError> {
    publish_traced_tasks_to(channel, TODO_QUEUE, tasks, trace).await
}

/// [`publish_traced_tasks`] to the work queue `queue` ([`todo_queue`] of the project's
/// priority).
pub async fn publish_traced_tasks_to(
    channel: &Channel,
    queue: &str,
    tasks: &[crate::Task],
    trace: Option<&TraceId>,
) -> Result<(), BrokerError> {
    for window in tasks.chunks(PUBLISH_WINDOW) {
        send_traced_tasks_to(channel, queue, window, trace)
            .await?
            .confirmed()
            .await?;
    }
    Ok(())
}

/// Messages sent on a confirm channel, whose confirms are still to come
/// ([`Sent::confirmed`]).
pub struct Sent<'a>(Vec<Pending<'a>>);

impl Sent<'_> {
    /// Waits for every confirm: a nack or a returned (unroutable) message is an error.
    pub async fn confirmed(self) -> Result<(), BrokerError> {
        for confirm in self.0 {
            confirm.check().await?;
        }
        Ok(())
    }
}

/// Sends `tasks` (mandatory, each carrying its span of `trace` like
/// [`publish_traced_tasks`]) to the work queue `queue`, without waiting for their confirms:
/// a publisher may send its next window while the broker confirms this one.
pub async fn send_traced_tasks_to<'a>(
    channel: &Channel,
    queue: &'a str,
    tasks: &[crate::Task],
    trace: Option<&TraceId>,
) -> Result<Sent<'a>, BrokerError> {
    let messages: Vec<(Vec<u8>, BasicProperties)> = tasks
        .iter()
        .map(|task| {
            let mut props = task_properties(task);
            if let Some(trace) = trace {
                props = with_traceparent(props, &TraceParent::of_task(trace, task.index));
            }
            (task.to_json(), props)
        })
        .collect();
    // Sent together, in order: each send waits for the connection to take its frames, and
    // one after the other these waits cost more than the broker's confirms.
    let pending = futures_util::future::try_join_all(
        messages
            .into_iter()
            .map(|(body, props)| async move { send(channel, "", queue, &body, props).await }),
    )
    .await?;
    Ok(Sent(pending))
}

/// A message sent on a confirm channel, whose confirm is still to come.
struct Pending<'a> {
    confirm: lapin::PublisherConfirm,
    exchange: &'a str,
    routing_key: &'a str,
}

/// Sends a mandatory message; the broker's answer is read by [`Pending::check`].
async fn send<'a>(
    channel: &Channel,
    exchange: &'a str,
    routing_key: &'a str,
    body: &[u8],
    props: BasicProperties,
) -> Result<Pending<'a>, BrokerError> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            props,
        )
        .await
        .map_err(op("publish"))?;
    Ok(Pending {
        confirm,
        exchange,
        routing_key,
    })
}

impl Pending<'_> {
    /// Waits for the confirm: a nack or a returned (unroutable) message is an error.
    async fn check(self) -> Result<(), BrokerError> {
        let confirm = self
            .confirm
            .await
            .map_err(op("wait for publisher confirm"))?;
        let destination = || format!("{}/{}", self.exchange, self.routing_key);
        if !confirm.is_ack() {
            return Err(BrokerError::NotConfirmed {
                destination: destination(),
                why: Unconfirmed::Nack,
            });
        }
        if confirm.take_message().is_some() {
            return Err(BrokerError::NotConfirmed {
                destination: destination(),
                why: Unconfirmed::Unroutable,
            });
        }
        Ok(())
    }
}

impl BrokerError {
    /// The AMQP reply code the broker answered with (404 not found, 406 precondition
    /// failed, ...), when the error is a broker refusal rather than a lost connection.
    pub fn reply_code(&self) -> Option<u16> {
        let source = match self {
            BrokerError::Connect { source, .. } | BrokerError::Operation { source, .. } => source,
            BrokerError::NotConfirmed { .. } => return None,
        };
        match source.kind() {
            lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
            _ => None,
        }
    }
}

/// Reads the reason header of a delivery, if a client set one.
pub fn reason_of(props: &BasicProperties) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(REASON_HEADER)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Why a message was dead-lettered: the reason a client gave ([`REASON_HEADER`]) or, for
/// the broker's own dead-lettering, the reason and queue of its latest `x-death` entry
/// (`delivery_limit`, `rejected`, `expired`, ...). `None` for a message never dead-lettered.
pub fn dead_letter_reason(props: &BasicProperties) -> Option<String> {
    if let Some(reason) = reason_of(props) {
        return Some(reason);
    }
    let headers = props.headers().as_ref()?.inner();
    let text = |v: Option<&AMQPValue>| match v {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
        _ => None,
    };
    if let Some(AMQPValue::FieldArray(deaths)) = headers.get("x-death") {
        if let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() {
            let death = death.inner();
            if let Some(reason) = text(death.get("reason")) {
                let queue = text(death.get("queue")).unwrap_or_else(|| TODO_QUEUE.into());
                return Some(format!(
                    "dead-lettered by the broker from `{queue}`: {reason}"
                ));
            }
        }
    }
    text(headers.get("x-first-death-reason"))
        .map(|reason| format!("dead-lettered by the broker: {reason}"))
}

/// The message's `message_id` (a task id, `P/index`), or `""` when it has none.
pub fn message_id_of(props: &BasicProperties) -> String {
    props
        .message_id()
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Whether this delivery is the message's last: taken back once more, the broker
/// dead-letters it (reason `delivery_limit`).
pub fn is_last_delivery(props: &BasicProperties) -> bool {
    delivery_count(props) >= DELIVERY_LIMIT
}

/// How many times the broker has delivered a message before (quorum queues count it).
pub fn delivery_count(props: &BasicProperties) -> i64 {
    let Some(headers) = props.headers().as_ref() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => *n as i64,
        Some(AMQPValue::ShortInt(n)) => *n as i64,
        Some(AMQPValue::LongUInt(n)) => *n as i64,
        _ => 0,
    }
}

/// The environment variable (and, in kebab case, the flag) naming a file that holds the
/// broker URL: unlike `AMQP_URL` or `--amqp-url`, it keeps the password out of `ps` and of
/// the process environment.
pub const AMQP_URL_FILE_VAR: &str = "AMQP_URL_FILE";

/// Why a binary's broker URL could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum UrlSourceError {
    /// Both a URL and a URL file were given.
    #[error(
        "the broker URL is given twice: use AMQP_URL (--amqp-url) or AMQP_URL_FILE \
         (--amqp-url-file), not both"
    )]
    Both,
    /// The URL file could not be read.
    #[error("cannot read the broker URL file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The URL file holds nothing but whitespace.
    #[error("the broker URL file {path} is empty")]
    Empty {
        /// The file.
        path: String,
    },
}

/// The broker URL a binary uses: `url` (from `--amqp-url` or `AMQP_URL`), or the content
/// of `file` (from `--amqp-url-file` or `AMQP_URL_FILE`, surrounding whitespace trimmed,
/// otherwise kept as is: it may list several node URLs), or [`DEFAULT_AMQP_URL`] when
/// neither is given. Giving both is an error rather than a silent precedence.
pub fn resolve_url(
    url: Option<String>,
    file: Option<&std::path::Path>,
) -> Result<String, UrlSourceError> {
    match (url, file) {
        (Some(_), Some(_)) => Err(UrlSourceError::Both),
        (Some(url), None) => Ok(url),
        (None, Some(path)) => {
            let shown = || path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| UrlSourceError::Read {
                path: shown(),
                source,
            })?;
            let url = text.trim();
            if url.is_empty() {
                return Err(UrlSourceError::Empty { path: shown() });
            }
            Ok(url.to_string())
        }
        (None, None) => Ok(DEFAULT_AMQP_URL.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        project_of_results_queue, redact_url, resolve_url, results_queue, UrlSourceError,
        DEFAULT_AMQP_URL,
    };

    #[test]
    fn several_avoided_executants_get_more_returns_but_never_the_last_deliveries() {
        use super::{leave_to_another, AVOID_HEADER};
        use lapin::types::{AMQPValue, FieldTable, LongString};
        let props = |avoid: &str, count: i64| {
            let mut headers = FieldTable::default();
            headers.insert(
                AVOID_HEADER.into(),
                AMQPValue::LongString(LongString::from(avoid)),
            );
            headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(count));
            lapin::BasicProperties::default().with_headers(headers)
        };
        // One name (`verify`): returned twice, as before.
        assert!(leave_to_another(&props("a", 1), "a"));
        assert!(!leave_to_another(&props("a", 2), "a"));
        assert!(!leave_to_another(&props("a", 0), "b"));
        // Two names (`--replicas`): four returns, by either.
        assert!(leave_to_another(&props("a,b", 3), "b"));
        assert!(!leave_to_another(&props("a,b", 4), "a"));
        assert!(!leave_to_another(&props("a,b", 0), "c"));
        // Many names: never past the delivery limit less one.
        assert!(!leave_to_another(&props("a,b,c,d", 4), "d"));
    }

    #[test]
    fn results_queue_names_and_their_inverse() {
        for project in ["p", "nq8-d2-0abc", "a.b"] {
            let queue = results_queue(project);
            assert_eq!(project_of_results_queue(&queue), Some(project));
        }
        for other in ["results.", "results", "todo", "todo.dead", "xresults.p"] {
            assert_eq!(project_of_results_queue(other), None, "{other}");
        }
    }

    #[test]
    fn one_work_queue_per_priority() {
        use crate::Priority;
        let names: Vec<_> = Priority::ALL.into_iter().map(super::todo_queue).collect();
        assert_eq!(names, ["todo.high", "todo", "todo.low"]);
        for name in names {
            assert!(super::is_todo_queue(name), "{name}");
        }
        for other in ["todo.dead", "todo.dlx", "results.p", "todo.normal"] {
            assert!(!super::is_todo_queue(other), "{other}");
        }
    }

    #[test]
    fn passwords_are_hidden() {
        let table = [
            (
                "amqp://guest:secret@127.0.0.1:5672/%2f",
                "amqp://***@127.0.0.1:5672/%2f",
            ),
            ("amqp://127.0.0.1", "amqp://127.0.0.1"),
            ("https://TOKEN@host/team", "https://***@host/team"),
            ("https://u:p@w@host/team", "https://***@host/team"),
            ("https://host/a@b", "https://host/a@b"),
            ("git@github.com:me/x.git", "***@github.com:me/x.git"),
            ("/srv/git/a@b", "/srv/git/a@b"),
            (
                "amqp://a:s1@n1:5672/v,amqp://b:s2@n2:5672/v",
                "amqp://***@n1:5672/v,amqp://***@n2:5672/v",
            ),
        ];
        for (url, shown) in table {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert_eq!(
            super::redact_urls_in(
                "error sending request for url (https://me:ghp_x@api.example/user): refused; see http://host/a@b"
            ),
            "error sending request for url (https://***@api.example/user): refused; see http://host/a@b"
        );
    }

    #[test]
    fn url_from_flag_file_or_default() {
        let dir = std::env::temp_dir().join(format!("amqp-url-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("url");
        std::fs::write(&file, "  amqp://u:p@a:5672/%2f,amqp://u:p@b:5672/%2f\n").unwrap();
        assert_eq!(
            resolve_url(None, Some(&file)).unwrap(),
            "amqp://u:p@a:5672/%2f,amqp://u:p@b:5672/%2f"
        );
        assert_eq!(
            resolve_url(Some("amqp://x".into()), None).unwrap(),
            "amqp://x"
        );
        assert_eq!(resolve_url(None, None).unwrap(), DEFAULT_AMQP_URL);
        assert!(matches!(
            resolve_url(Some("amqp://x".into()), Some(&file)),
            Err(UrlSourceError::Both)
        ));
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            resolve_url(None, Some(&file)),
            Err(UrlSourceError::Empty { .. })
        ));
        let missing = dir.join("missing");
        let e = resolve_url(None, Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
