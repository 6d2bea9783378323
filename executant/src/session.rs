//! The worker protocol, written once: tasks go to a worker container's standard input, one
//! JSON line each, and each answer comes back as one JSON line on its standard output, read
//! under the task's time limit. What comes back is an answer, a timeout, the end of the
//! output (the worker exited) or an error, and nothing else.

use std::pin::Pin;
use std::time::Duration;

use bollard::container::{AttachContainerResults, LogOutput};
use futures_util::{FutureExt, Stream, StreamExt};
use tasks::{Task, TaskResult};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::RunError;

/// The most standard output a task may produce (a result must stay a reasonable message).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// How much of a failing task's standard error is kept (for its reason).
const STDERR_TAIL: usize = 512;

/// A worker container serving tasks on its standard input, one JSON line each.
pub(crate) struct Session {
    pub(crate) id: String,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    buffer: Vec<u8>,
    /// The tail of what the worker wrote on standard error.
    pub(crate) stderr: Vec<u8>,
    /// How many tasks it has answered.
    pub(crate) served: u32,
}

/// What came back for one task.
pub(crate) enum Answer {
    /// The worker answered: its result, or an error if the answer was not for this task.
    Result(Result<TaskResult, RunError>),
    /// No answer within the task's time limit.
    TimedOut,
    /// The worker's output ended without an answer (it exited).
    Ended,
    /// The stream from the engine failed.
    Failed(RunError),
}

impl Session {
    /// A session over a started container's attached streams.
    pub(crate) fn new(id: String, attached: AttachContainerResults) -> Session {
        Session {
            id,
            input: attached.input,
            output: attached.output,
            buffer: Vec::new(),
            stderr: Vec::new(),
            served: 0,
        }
    }

    /// Writes `tasks` to the worker, one line each, at once.
    pub(crate) async fn send<'a>(
        &mut self,
        tasks: impl Iterator<Item = &'a Task>,
    ) -> Result<(), RunError> {
        let mut lines = Vec::new();
        for task in tasks {
            lines.extend_from_slice(&task.to_json());
            lines.push(b'\n');
        }
        self.input
            .write_all(&lines)
            .await
            .map_err(|e| RunError::Lost(format!("writing tasks to the worker: {e}")))?;
        let _ = self.input.flush().await;
        Ok(())
    }

    /// Whether the worker's output has already ended (the container exited, or was killed
    /// while it waited for work), found without waiting: what it wrote meanwhile is kept
    /// for the next answers. A lane asks before it sends a batch to a container that has
    /// been waiting, so that tasks never sent to a live worker are not charged its death.
    pub(crate) fn ended(&mut self) -> bool {
        loop {
            match self.output.next().now_or_never() {
                None => return false,
                Some(None) | Some(Some(Err(_))) => return true,
                Some(Some(Ok(LogOutput::StdOut { message }))) => {
                    self.buffer.extend_from_slice(&message)
                }
                Some(Some(Ok(LogOutput::StdErr { message }))) => {
                    keep_tail(&mut self.stderr, &message)
                }
                Some(Some(Ok(_))) => {}
            }
        }
    }

    /// Waits (at most `timeout`) for the worker's answer to `task`, the next one it owes.
    pub(crate) async fn answer(&mut self, task: &Task, timeout: Duration) -> Answer {
        match tokio::time::timeout(timeout, self.read_line()).await {
            Err(_) => Answer::TimedOut,
            Ok(Ok(Some(line))) => {
                self.served += 1;
                Answer::Result(parse_answer(task, &line))
            }
            Ok(Ok(None)) => Answer::Ended,
            Ok(Err(e)) => Answer::Failed(e),
        }
    }

    /// Reads the next line the worker wrote; `None` when its output ended.
    async fn read_line(&mut self) -> Result<Option<Vec<u8>>, RunError> {
        loop {
            if let Some(pos) = self.buffer.iter().position(|&b| b == b'\n') {
                let rest = self.buffer.split_off(pos + 1);
                let mut line = std::mem::replace(&mut self.buffer, rest);
                line.pop();
                return Ok(Some(line));
            }
            match self.output.next().await {
                Some(Ok(LogOutput::StdOut { message })) => {
                    self.buffer.extend_from_slice(&message);
                    if self.buffer.len() > MAX_OUTPUT_BYTES {
                        return Err(RunError::Lost("the worker's answer is too long".into()));
                    }
                }
                Some(Ok(LogOutput::StdErr { message })) => keep_tail(&mut self.stderr, &message),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(RunError::Engine(e)),
                None => return Ok(None),
            }
        }
    }
}

/// Reads a worker's answer for `task`: a result for another task means the worker is broken.
fn parse_answer(task: &Task, line: &[u8]) -> Result<TaskResult, RunError> {
    let result = TaskResult::from_json(line)
        .map_err(|e| RunError::Lost(format!("the worker answered something unreadable: {e}")))?;
    if result.project != task.project || result.index != task.index {
        return Err(RunError::Lost(
            "the worker answered for another task".into(),
        ));
    }
    Ok(result)
}

/// Appends `message` to `buffer`, keeping only the last [`STDERR_TAIL`] bytes.
pub(crate) fn keep_tail(buffer: &mut Vec<u8>, message: &[u8]) {
    buffer.extend_from_slice(message);
    if buffer.len() > STDERR_TAIL {
        buffer.drain(..buffer.len() - STDERR_TAIL);
    }
}

/// The reason of a task killed at its time limit.
pub(crate) fn timeout_reason(timeout: Duration) -> String {
    format!(
        "timed out after {} s (wall-clock limit); the container was killed",
        timeout.as_secs()
    )
}
