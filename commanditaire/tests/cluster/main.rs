//! Issue 13, items 1 and 2: the platform on a 3-node RabbitMQ cluster started by the tests
//! (`scripts/rabbitmq-cluster.sh` through `faults::cluster`, nodes `cluster-1..3` on their
//! own ports 5701-5703, stopped even on failure),
//! with a node killed or paused mid-project; a second follower of a project refused there;
//! broker-api failing over when its node is killed; `verify`'s sampled re-run there.

mod broker_api;
mod failover;
mod followers;
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;
