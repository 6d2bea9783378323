//! Bearer tokens and their scopes: who may do what, in one place.
//!
//! Three tokens, each optional and each from its own variable: `BROKER_API_READ_TOKEN`
//! ([`Scope::Read`]: lists, queues' depth, projects, metrics), `BROKER_API_TOKEN`
//! ([`Scope::User`]: also create, publish to, get from and delete the queues users made) and
//! `BROKER_API_ADMIN_TOKEN` ([`Scope::Admin`]: also the platform's own queues, `todo`,
//! `todo.dead` and `results.*`, which every other token only reads). A presented token is
//! compared in constant time with every configured one; [`required_scope`] says what a
//! request needs, and [`require_scope`] answers 401 (no or unknown token) or 403 (a token
//! whose scope is too small) before any handler runs.

use std::fmt;
use std::path::Path;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
pub use crate::scope::Scope;
use crate::AppState;

/// Whether `queue` is one of the platform's own queues, which only [`Scope::Admin`] may
/// change: the work queues (`todo.high`, `todo`, `todo.low`), `todo.dead`, every
/// `results.<project>` and every delay queue (`todo.delay.<wait>`, holding tasks until their
/// next attempt).
pub fn is_platform_queue(queue: &str) -> bool {
    tasks::amqp::is_todo_queue(queue)
        || queue == tasks::amqp::DEAD_QUEUE
        || queue.starts_with(tasks::amqp::RESULTS_QUEUE_PREFIX)
        || queue.starts_with(tasks::amqp::delay::DELAY_QUEUE_PREFIX)
}

/// The scope a request needs: reading (`GET`) needs [`Scope::Read`]; any other method on a
/// queue needs [`Scope::User`], or [`Scope::Admin`] for a platform queue
/// ([`is_platform_queue`]).
pub fn required_scope(method: &Method, queue: Option<&str>) -> Scope {
    if method == Method::GET || method == Method::HEAD {
        Scope::Read
    } else if queue.is_some_and(is_platform_queue) {
        Scope::Admin
    } else {
        Scope::User
    }
}

/// The route that cancels a project: it stops the project's tasks on every executant and
/// deletes its results queue, so it needs [`Scope::Admin`].
pub const CANCEL_ROUTE: &str = "/api/projects/{id}/cancel";

/// The scope a request needs on the route `matched` (axum's matched path): [`CANCEL_ROUTE`]
/// needs [`Scope::Admin`]; any other, [`required_scope`].
pub fn route_scope(method: &Method, matched: Option<&str>, queue: Option<&str>) -> Scope {
    if matched == Some(CANCEL_ROUTE) && method == Method::POST {
        Scope::Admin
    } else {
        required_scope(method, queue)
    }
}

/// Why a request needs `needed`, in words a person can act on.
fn refusal(needed: Scope, queue: Option<&str>) -> String {
    match (needed, queue) {
        (Scope::Admin, Some(queue)) => format!(
            "`{queue}` is one of the platform's queues (todo, todo.delay.*, todo.dead, results.*): only the \
             `admin` scope (BROKER_API_ADMIN_TOKEN) may change it; other tokens read it"
        ),
        (Scope::Admin, None) => "cancelling a project stops its tasks on every executant and \
             deletes its results queue: only the `admin` scope (BROKER_API_ADMIN_TOKEN) may"
            .to_string(),
        (needed, _) => format!(
            "this request needs the `{needed}` scope ({}); this token's scope is smaller",
            needed.variable()
        ),
    }
}

/// The configured tokens, one per scope (each optional).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// The [`Scope::Read`] token.
    pub read: Option<Token>,
    /// The [`Scope::User`] token.
    pub user: Option<Token>,
    /// The [`Scope::Admin`] token.
    pub admin: Option<Token>,
}

/// Why a set of tokens cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// No token at all.
    #[error("no API token is configured: set BROKER_API_READ_TOKEN, BROKER_API_TOKEN or BROKER_API_ADMIN_TOKEN")]
    None,
    /// Two scopes share one token, so a request's scope would be ambiguous.
    #[error("{0} and {1} hold the same token: give each scope its own")]
    Shared(&'static str, &'static str),
}

impl From<Token> for Tokens {
    /// One token, of the [`Scope::User`] scope (`BROKER_API_TOKEN`).
    fn from(token: Token) -> Self {
        Tokens {
            user: Some(token),
            ..Tokens::default()
        }
    }
}

impl Tokens {
    /// The token of `scope`, if configured.
    pub fn get(&self, scope: Scope) -> Option<&Token> {
        match scope {
            Scope::Read => self.read.as_ref(),
            Scope::User => self.user.as_ref(),
            Scope::Admin => self.admin.as_ref(),
        }
    }

    /// Checks that at least one token is set and that no two scopes share one.
    pub fn validate(&self) -> Result<(), TokensError> {
        let set: Vec<(Scope, &Token)> = Scope::ALL
            .iter()
            .filter_map(|s| self.get(*s).map(|t| (*s, t)))
            .collect();
        if set.is_empty() {
            return Err(TokensError::None);
        }
        for (i, (a, ta)) in set.iter().enumerate() {
            for (b, tb) in &set[i + 1..] {
                if ta.matches(tb.expose().as_bytes()) {
                    return Err(TokensError::Shared(a.variable(), b.variable()));
                }
            }
        }
        Ok(())
    }

    /// The scope of a presented token: every configured token is compared, in constant
    /// time, whichever matches (so the time does not tell which scope, if any, it is).
    pub fn scope_of(&self, presented: &[u8]) -> Option<Scope> {
        let mut granted = None;
        for scope in Scope::ALL {
            if let Some(token) = self.get(scope) {
                if token.matches(presented) {
                    granted = Some(scope);
                }
            }
        }
        granted
    }
}

/// A secret API token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is empty (after trimming).
    #[error("the API token is empty")]
    Empty,
    /// The token holds characters an HTTP header cannot carry.
    #[error("the API token must be printable ASCII without spaces")]
    Unprintable,
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No randomness for a generated token.
    #[error("cannot generate a token: {0}")]
    Random(String),
}

impl Token {
    /// A token given as text (surrounding whitespace, such as a file's final newline, is
    /// trimmed).
    pub fn new(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Unprintable);
        }
        Ok(Token(token.to_string()))
    }

    /// Reads a token from a file.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::File {
            path: path.display().to_string(),
            source,
        })?;
        Token::new(&text)
    }

    /// A fresh random token (256 bits, hex).
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The secret itself: only to hand it to a person once, or to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this token, in time independent of where they differ (the
    /// length of the token is not secret).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Middleware of every protected route: 401 unless the request carries
/// `Authorization: Bearer <token>` with a configured token, 403 when that token's scope is
/// smaller than what [`required_scope`] asks for this method and queue.
pub async fn require_scope(
    State(state): State<AppState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return ApiError::MissingToken.into_response();
    };
    let bytes = value.as_bytes();
    let presented = match bytes.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &bytes[7..],
        _ => return ApiError::MissingToken.into_response(),
    };
    let Some(granted) = state.tokens.scope_of(presented.trim_ascii()) else {
        return ApiError::WrongToken.into_response();
    };
    // Only the queue routes (`/api/queues/{name}...`) have a `name`.
    let matched = request.extensions().get::<MatchedPath>();
    let queue = matched
        .filter(|m| m.as_str().starts_with("/api/queues/"))
        .and(params.ok())
        .and_then(|params| {
            params
                .iter()
                .find(|(key, _)| *key == "name")
                .map(|(_, value)| value.to_string())
        });
    let needed = route_scope(
        request.method(),
        matched.map(MatchedPath::as_str),
        queue.as_deref(),
    );
    if granted < needed {
        return ApiError::Forbidden {
            needed,
            why: refusal(needed, queue.as_deref()),
        }
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::{required_scope, route_scope, Method, Scope, Token, Tokens, CANCEL_ROUTE};

    #[test]
    fn cancelling_needs_admin() {
        let table = [
            (Method::POST, Some(CANCEL_ROUTE), Scope::Admin),
            (Method::GET, Some("/api/projects/{id}"), Scope::Read),
            (Method::POST, Some("/api/queues/{name}/get"), Scope::User),
        ];
        for (method, matched, want) in table {
            assert_eq!(
                route_scope(&method, matched, None),
                want,
                "{method} {matched:?}"
            );
        }
    }

    #[test]
    fn scopes() {
        let table: &[(Method, Option<&str>, Scope)] = &[
            (Method::GET, None, Scope::Read),
            (Method::GET, Some("todo"), Scope::Read),
            (Method::GET, Some("results.p"), Scope::Read),
            (Method::PUT, Some("mine"), Scope::User),
            (Method::POST, Some("mine"), Scope::User),
            (Method::DELETE, Some("mine"), Scope::User),
            (Method::DELETE, Some("todo"), Scope::Admin),
            (Method::POST, Some("todo"), Scope::Admin),
            (Method::PUT, Some("todo.dead"), Scope::Admin),
            (Method::POST, Some("todo.high"), Scope::Admin),
            (Method::DELETE, Some("todo.low"), Scope::Admin),
            (Method::DELETE, Some("results.p"), Scope::Admin),
            (Method::POST, Some("results.x.y"), Scope::Admin),
            (Method::DELETE, Some("todo.other"), Scope::User),
            (Method::DELETE, Some("todo.delay.1s"), Scope::Admin),
            (Method::DELETE, Some("results"), Scope::User),
        ];
        for (method, queue, want) in table {
            assert_eq!(required_scope(method, *queue), *want, "{method} {queue:?}");
        }
        let t = |s: &str| Some(Token::new(s).unwrap());
        let tokens = Tokens {
            read: t("r-token"),
            user: t("u-token"),
            admin: t("a-token"),
        };
        tokens.validate().unwrap();
        assert_eq!(tokens.scope_of(b"r-token"), Some(Scope::Read));
        assert_eq!(tokens.scope_of(b"u-token"), Some(Scope::User));
        assert_eq!(tokens.scope_of(b"a-token"), Some(Scope::Admin));
        assert_eq!(tokens.scope_of(b"x-token"), None);
        assert!(Tokens::default().validate().is_err());
        let shared = Tokens {
            read: t("shared-secret-x"),
            admin: t("shared-secret-x"),
            ..Tokens::default()
        };
        let e = shared.validate().unwrap_err().to_string();
        assert!(
            e.contains("BROKER_API_READ_TOKEN") && !e.contains("shared-secret-x"),
            "{e}"
        );
    }

    #[test]
    fn tokens() {
        let t = Token::new(" abc\n").unwrap();
        assert!(t.matches(b"abc"));
        assert!(!t.matches(b"abd"));
        assert!(!t.matches(b"ab"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert!(Token::new("  \n").is_err());
        assert!(Token::new("a b").is_err());
        let g = Token::generate().unwrap();
        assert_eq!(g.expose().len(), 64);
        assert_ne!(g, Token::generate().unwrap());
    }
}
