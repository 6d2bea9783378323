//! Integration tests of the executant against the real RabbitMQ and Docker engine.

mod consumer_timeout;
mod reconnect;
mod run;
mod support;
