//! The scopes a token may have: the one fact that the authentication layer and the error
//! answers share (each imports it; neither imports the other for it).

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a token may do; each scope includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read: list and inspect queues, projects, metrics (`BROKER_API_READ_TOKEN`).
    Read,
    /// Also create, publish to, get from and delete queues other than the platform's
    /// (`BROKER_API_TOKEN`).
    User,
    /// Also change the platform's own queues: `todo`, `todo.dead`, `results.*`
    /// (`BROKER_API_ADMIN_TOKEN`).
    Admin,
}

impl Scope {
    /// Every scope, smallest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::User, Scope::Admin];

    /// The scope's name, as in error answers and the OpenAPI document.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::User => "user",
            Scope::Admin => "admin",
        }
    }

    /// The environment variable holding this scope's token (`..._FILE` names a file).
    pub fn variable(self) -> &'static str {
        match self {
            Scope::Read => "BROKER_API_READ_TOKEN",
            Scope::User => "BROKER_API_TOKEN",
            Scope::Admin => "BROKER_API_ADMIN_TOKEN",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
