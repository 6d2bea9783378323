//! Integration tests of the client through the whole platform: the real broker, a real
//! executant in this process, real containers, real git repositories.

mod cancel;
mod default_split;
mod growth;
mod kept_link;
mod killed_publishing;
mod platform;
mod priorities;
mod progress_json;
mod provenance;
mod remote;
mod replicas;
mod replicas_killed;
mod support;
mod trace;
mod tracking;
mod url_file;
mod verify_priority;
mod what_a_person_sees;
mod workspace;
