//! Authentication of writes: HS256 JWTs signed with the configured secret and issuer.
//!
//! [`AuthUser`] is an extractor: a handler that takes one can only run for a request that carries
//! a valid token; [`Owner`] also requires the token's subject to be the path's user. Every token failure answers the same 401 body, so that the answer tells an
//! attacker nothing about which check failed; the log says which.

pub mod secret;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{
    config::{AuthConfig, Secret},
    http::{ApiError, AppState, UserPath},
    model::UserId,
};

/// `Authorization` headers longer than this are refused before any decoding.
pub const MAX_AUTH_HEADER: usize = 8 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 5;

/// The claims Presence requires (design document section 7.1), plus `nbf` when present.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Verifies tokens and mints them (for `presence token`).
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    issuer: String,
}

impl Authenticator {
    pub fn new(secret: &Secret, config: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            issuer: config.jwt_issuer.clone(),
        }
    }

    /// The token's subject, if the token is valid now.
    pub fn verify(&self, token: &str) -> Result<String, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| e.to_string())?;
        if data.claims.iat > now_secs() + LEEWAY_SECS {
            return Err("token issued in the future".into());
        }
        Ok(data.claims.sub)
    }

    /// A token for `user`, valid for `ttl` from now.
    pub fn mint(&self, user: &str, ttl: Duration) -> String {
        let iat = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            iat,
            exp: iat + ttl.as_secs(),
            iss: self.issuer.clone(),
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The authenticated caller: the `sub` of a valid bearer token.
#[derive(Debug, Clone)]
pub struct AuthUser(pub String);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| reject("no Authorization header"))?;
        if header.len() > MAX_AUTH_HEADER {
            return Err(reject("Authorization header over 8 KiB"));
        }
        let text = header.to_str().map_err(|_| reject("Authorization header is not ASCII"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| reject("Authorization is not a bearer token"))?;
        state.auth.verify(token).map(AuthUser).map_err(|why| reject(&why))
    }
}

/// The path's `{user_id}`, when the bearer token's `sub` is that user: the owner of the resource.
/// Invalid ids answer 400, token failures 401, someone else's token 403, in that order.
#[derive(Debug, Clone)]
pub struct Owner(pub UserId);

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let UserPath(user) = UserPath::from_request_parts(parts, state).await?;
        let AuthUser(subject) = AuthUser::from_request_parts(parts, state).await?;
        if subject != user.as_str() {
            return Err(ApiError::Forbidden);
        }
        Ok(Owner(user))
    }
}

fn reject(why: &str) -> ApiError {
    tracing::info!(reason = why, "token refused");
    ApiError::Unauthorized
}
