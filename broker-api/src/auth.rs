//! The bearer token every `/api/` route requires, compared in constant time, and never
//! shown by `Debug`.

use std::fmt;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::AppState;

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

/// Middleware: answers 401 unless the request carries `Authorization: Bearer <token>`.
pub async fn require_token(
    State(state): State<AppState>,
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
    if state.token.matches(presented.trim_ascii()) {
        next.run(request).await
    } else {
        ApiError::WrongToken.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

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
