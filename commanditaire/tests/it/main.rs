//! Integration tests of the client through the whole platform: the real broker, a real
//! executant in this process, real containers, real git repositories.

mod platform;
mod provenance;
mod remote;
mod support;
mod tracking;
mod url_file;
