//! Issue 13, items 1 and 2: the platform on a 3-node RabbitMQ cluster started by the tests
//! (`scripts/rabbitmq-cluster.sh`, its own ports 5701-5703, stopped even on failure),
//! with a node killed or paused mid-project; and a second follower of a project refused there.

mod cluster;
mod failover;
mod followers;
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;
