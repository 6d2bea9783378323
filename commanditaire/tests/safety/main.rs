//! Regression tests of issue 11 (the client's safety), through the real binary, broker,
//! executant and containers: one follower per project, dead-lettered tasks reach their
//! client, ids are never reused, junk never stalls a follower, URLs are redacted, crash
//! leftovers are cleared, task output never drives the terminal.
//!
//! A test binary of its own: its tests share `todo` only with each other.

#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

mod broker;
mod dead_letters;
mod followers;
mod forged;
mod junk;
mod records;
