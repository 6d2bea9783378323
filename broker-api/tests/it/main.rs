//! Integration tests of broker-api against the real RabbitMQ (one test binary).
//!
//! Every test uses queues of its own (`bapi-test-<label>-<random>`) and deletes them at the
//! end, pass or fail; the platform's `todo`, `todo.dead` and `results.*` queues are never
//! deleted or purged. "Broker down" goes through a TCP proxy the test cuts, so other suites
//! using the broker at the same time are not disturbed.

mod auth;
mod binary;
mod broker_down;
mod cancel;
mod messages;
mod metrics;
mod openapi;
mod page;
mod projects;
mod queues;
mod support;
