//! A project's priority: which work queue its tasks go to ([`crate::amqp::todo_queue`]).
//! Quorum queues on RabbitMQ 3.10 have no message priorities, so each priority has a queue
//! of its own, and executants start the highest-priority delivery they hold first.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How soon a project's tasks run compared with other projects' (`--priority`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Before every normal and low task waiting (queue `todo.high`).
    High,
    /// The default (queue `todo`).
    #[default]
    Normal,
    /// Only when no high or normal task waits (queue `todo.low`).
    Low,
}

impl Priority {
    /// Every priority, highest first: the order in which an executant starts deliveries.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The name a person writes (`high`, `normal`, `low`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Its rank in [`Priority::ALL`] (0 = highest).
    pub fn rank(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority that is not `high`, `normal` or `low`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority `{0}`: expected high, normal or low")]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Priority, UnknownPriority> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPriority(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::Priority;

    #[test]
    fn names_round_trip_and_order() {
        for (name, priority) in [
            ("high", Priority::High),
            ("normal", Priority::Normal),
            ("low", Priority::Low),
        ] {
            assert_eq!(name.parse::<Priority>().unwrap(), priority);
            assert_eq!(priority.to_string(), name);
            assert_eq!(
                serde_json::to_string(&priority).unwrap(),
                format!("\"{name}\"")
            );
        }
        assert!(Priority::High < Priority::Normal && Priority::Normal < Priority::Low);
        assert_eq!(Priority::default(), Priority::Normal);
        let e = "urgent".parse::<Priority>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown priority `urgent`: expected high, normal or low"
        );
        assert!("High".parse::<Priority>().is_err());
    }
}
