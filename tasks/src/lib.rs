//! The shared model of the platform: projects, tasks and results (JSON), project splitting
//! and result reassembly, and the N-queens engine.
//!
//! This crate does no I/O, except in the optional `amqp` module (feature `amqp`), which holds
//! the one definition of the RabbitMQ topology that every binary uses.

pub mod backoff;
pub mod chain;
pub mod compute;
pub mod layout;
pub mod model;
pub mod nqueens;
pub mod priority;
pub mod progress;
pub mod provenance;
pub mod reassemble;
pub mod results;
pub mod split;
pub mod trace;

#[cfg(feature = "amqp")]
pub mod amqp;

#[cfg(feature = "test-support")]
pub mod test_support;

pub use model::{
    ExecSpec, Outcome, Project, ProjectSpec, Symmetry, Task, TaskError, TaskOutput, TaskResult,
    TaskSpec, Tasks, MIN_SCHEMA_VERSION, SCHEMA_VERSION,
};
pub use priority::Priority;
pub use reassemble::{ProjectResult, Reassembly};
