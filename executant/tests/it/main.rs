//! Integration tests of the executant against the real RabbitMQ and Docker engine.

mod acks;
mod backoff;
mod batched;
mod cli;
mod consumer_timeout;
mod dashboard;
mod defaults;
mod engines;
mod frozen;
mod killed;
mod lanes;
mod metrics;
mod reconnect;
mod retention;
mod run;
mod script;
mod support;
