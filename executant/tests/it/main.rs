//! Integration tests of the executant against the real RabbitMQ and Docker engine.

mod cli;
mod consumer_timeout;
mod dashboard;
mod defaults;
mod engines;
mod metrics;
mod reconnect;
mod run;
mod script;
mod support;
