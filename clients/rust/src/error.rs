//! What can go wrong, as one enum.

/// An error of the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A URL the client was given is not one it can use.
    #[error("not a usable URL: {0}")]
    Url(String),
    /// The node could not be reached (refused, reset, timed out, TLS failed).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The node's URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The token was refused (401): expired, or not signed by the node's secret. The client
    /// stops reconnecting until it is given a new one (`connect`).
    #[error("the token was refused: {0}")]
    Unauthorized(String),
    /// The token's user may not do this (403).
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// No token provider: writes and sessions need one.
    #[error("this needs a token: build the client with a token provider")]
    NoToken,
    /// The token provider failed.
    #[error("the token provider failed: {0}")]
    Token(String),
    /// The node answered with an error (its JSON envelope's message).
    #[error("the node answered {status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's message.
        message: String,
    },
    /// An answer that is not what the protocol says.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
}

impl Error {
    /// Whether trying again later can help (an unreachable node, a 429 or 5xx), unlike a refused
    /// token or bad input.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
