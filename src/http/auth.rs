//! The extractors that authenticate a request: [`AuthUser`] (a valid bearer token), [`Owner`]
//! (a valid token whose subject is the path's user) and [`Reader`] (a valid token if any). A
//! handler that takes one of the first two can only run for a request that passed it. Every
//! token failure answers the same 401 body, so that the answer tells an attacker nothing about
//! which check failed; the access log says which (one line).

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, request::Parts},
};

use super::{ApiError, AppState, extract::UserPath};
use crate::{model::UserId, telemetry::chain};

/// `Authorization` headers longer than this are refused before any decoding.
pub(super) const MAX_AUTH_HEADER: usize = 8 * 1024;

/// The authenticated caller: the `sub` of a valid bearer token, and its `rooms` claim.
#[derive(Debug, Clone)]
pub(crate) struct AuthUser(pub String, pub Vec<String>);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Self::from_headers(&parts.headers, state)
    }
}

impl AuthUser {
    /// The subject of the bearer token in `headers`, or a 401 (counted as a refused token).
    pub(super) fn from_headers(headers: &HeaderMap, state: &AppState) -> Result<Self, ApiError> {
        Self::verify(headers, state).map_err(|reason| refused(state, reason))
    }

    /// The subject of `token` (a WebSocket `hello`'s), or a 401 (counted as a refused token).
    pub(super) fn from_token(token: &str, state: &AppState) -> Result<Self, ApiError> {
        Self::verify_token(token, state).map_err(|reason| refused(state, reason))
    }

    /// The token's subject, or why the token is refused.
    fn verify(headers: &HeaderMap, state: &AppState) -> Result<Self, String> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| reject("no Authorization header"))?;
        if header.len() > MAX_AUTH_HEADER {
            return Err(reject("Authorization header over 8 KiB"));
        }
        header.to_str().map_err(|_| reject("Authorization header is not ASCII"))?;
        let token = bearer(headers).ok_or_else(|| reject("Authorization is not a bearer token"))?;
        Self::verify_token(token, state)
    }

    /// The subject of `token`, or why it is refused.
    fn verify_token(token: &str, state: &AppState) -> Result<Self, String> {
        let verified = state.auth.verify(token).map_err(|e| chain(&e).to_string())?;
        if verified.signed_with_previous {
            state.metrics.tokens_previous_secret.inc();
        }
        Ok(AuthUser(verified.subject, verified.rooms))
    }
}

/// Who reads: the `sub` of a valid bearer token, when the request carries one. Reads are public
/// and need none: a token that does not verify does not spoil one, it is read as anyone's.
#[derive(Debug, Clone)]
pub(crate) struct Reader(pub Option<String>);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(axum::http::header::AUTHORIZATION) {
            return Ok(Reader(None));
        }
        Ok(Reader(AuthUser::verify(&parts.headers, state).ok().map(|AuthUser(subject, _)| subject)))
    }
}

/// The path's `{user_id}`, when the bearer token's `sub` is that user: the owner of the resource,
/// with the token that proves it (a leaf hands it on to the center, which checks it again).
/// Invalid ids answer 400, token failures 401, someone else's token 403, in that order.
#[derive(Debug, Clone)]
pub(crate) struct Owner(pub UserId, pub String);

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let UserPath(user) = UserPath::from_request_parts(parts, state).await?;
        let AuthUser(subject, _) = AuthUser::from_request_parts(parts, state).await?;
        if subject != user.as_str() {
            return Err(ApiError::Forbidden);
        }
        let token = bearer(&parts.headers).unwrap_or_default().to_string();
        Ok(Owner(user, token))
    }
}

/// The bearer token of `Authorization`, if that is what it holds. The scheme is
/// case-insensitive (RFC 7235 2.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let text = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A refused token: counted, and answered with the one 401 whose reason only the log sees.
fn refused(state: &AppState, reason: String) -> ApiError {
    state.metrics.tokens_refused.inc();
    ApiError::Unauthorized(reason)
}

fn reject(why: &str) -> String {
    why.to_string()
}
