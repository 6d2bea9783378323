//! Queue names accepted by the API: a type, so handlers never see an unchecked name.

use std::fmt;

use crate::error::ApiError;

/// The rule, stated in error answers.
pub const RULE: &str = "a queue name is 1 to 255 characters of A-Z a-z 0-9 . _ : - and does not start with `amq.` (reserved by RabbitMQ)";

/// A valid queue name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueName(String);

impl QueueName {
    /// Checks `name` against [`RULE`].
    pub fn parse(name: &str) -> Result<Self, ApiError> {
        let shown: String = name.chars().take(64).collect();
        let why = if name.is_empty() {
            Some("it is empty".to_string())
        } else if name.len() > 255 {
            Some(format!("it is {} bytes long", name.len()))
        } else if name.starts_with("amq.") {
            Some("it starts with `amq.`".to_string())
        } else {
            name.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
                .map(|c| format!("it contains {c:?}"))
        };
        match why {
            None => Ok(QueueName(name.to_string())),
            Some(why) => Err(ApiError::Invalid {
                message: format!("invalid queue name {shown:?}: {why}"),
                rule: Some(RULE),
            }),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::QueueName;

    #[test]
    fn the_rule() {
        let long = "a".repeat(255);
        let too_long = "a".repeat(256);
        let table: &[(&str, bool)] = &[
            ("todo", true),
            ("results.p-1", true),
            ("a:b_c-d.e", true),
            (&long, true),
            ("", false),
            (&too_long, false),
            ("amq.gen-x", false),
            ("amq.", false),
            ("amqx", true),
            ("a b", false),
            ("a/b", false),
            ("é", false),
            ("a%2F", false),
        ];
        for (name, ok) in table {
            assert_eq!(QueueName::parse(name).is_ok(), *ok, "{name:?}");
        }
    }
}
