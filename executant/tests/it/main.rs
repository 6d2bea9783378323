//! Integration tests of the executant against the real RabbitMQ and Docker engine.

mod cli;
mod run;
mod script;
mod support;
