//! Why a task must run again: something outside the task went wrong.

use crate::sandbox::SandboxError;
use crate::script::ScriptError;

/// Why a task must run again: nothing the task did.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Docker engine could not be reached or refused an operation.
    #[error("Docker engine: {0}")]
    Engine(#[from] bollard::errors::Error),
    /// The container died for a reason outside the task (killed from outside, engine restart).
    #[error("container lost: {0}")]
    Lost(String),
    /// The engine did not apply the sandbox: no task may run here.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The task's script could not be fetched from its repository.
    #[error("fetching the task's script: {0}")]
    Script(ScriptError),
}
