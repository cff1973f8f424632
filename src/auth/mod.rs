//! Authentication of writes: HS256 JWTs signed with the configured secret and issuer, verified
//! by [`Authenticator::verify`] and minted by [`Authenticator::mint`] (for `presence token`).
//! During a rotation of the secret, tokens signed with `auth.previous_jwt_secret` are accepted
//! too (and counted), while every new token is signed with the current one.
//! The HTTP extractors that use it live in `http::auth`.

mod remembered;
pub mod secret;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, Secret};
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 5;

/// The claims Presence requires (`sub`, `iat`, `exp`, `iss`), plus `nbf` when present.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Checked by the validation when `auth.jwt_audience` is set; minted with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The rooms the subject may join and read: patterns where `*` matches any run of characters
    /// (docs/rooms.md, "Who may do what").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
}

/// Why a token was refused (logged; the client only ever hears 401).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token lifetime (exp - iat) of {0} s is over auth.max_token_ttl")]
    TooLong(u64),
    #[error("token header lists critical extensions, which are not supported")]
    Critical,
}

/// A valid token's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub subject: String,
    /// The token's `rooms` claim.
    pub rooms: Vec<String>,
    /// Signed with `auth.previous_jwt_secret` (still accepted during a rotation).
    pub signed_with_previous: bool,
}

/// Verifies tokens and mints them (for `presence token`).
#[derive(Clone)]
pub struct Authenticator {
    decoding: DecodingKey,
    /// `auth.previous_jwt_secret`: still accepted, never used to sign.
    previous: Option<DecodingKey>,
    encoding: EncodingKey,
    validation: Validation,
    issuer: String,
    audience: Option<String>,
    max_ttl: u64,
    /// Tokens verified already, until they expire (shared by the clones).
    remembered: remembered::Remembered,
}

impl Authenticator {
    pub fn new(secret: &Secret, config: &AuthConfig) -> Self {
        let previous =
            config.previous_jwt_secret.as_ref().map(|p| DecodingKey::from_secret(p.expose().as_bytes()));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        // Without a configured audience, a token that names one is refused (RFC 7519 4.1.3).
        if let Some(audience) = &config.jwt_audience {
            validation.set_audience(&[audience]);
            validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
        }
        Self {
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            previous,
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            max_ttl: config.max_token_ttl.as_secs(),
            remembered: remembered::Remembered::new(),
        }
    }

    /// The token's subject, if the token is valid now, and whether it was signed with the
    /// previous secret. A token verified before is recalled while its answer holds.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        if let Some(verified) = self.remembered.recall(token, now_secs()) {
            return Ok(verified);
        }
        let (claims, verified) = self.check(token)?;
        self.remembered.keep(token, &claims, &verified);
        Ok(verified)
    }

    /// The full check of `token`: signature, claims, the limits.
    fn check(&self, token: &str) -> Result<(Claims, Verified), TokenError> {
        let mut signed_with_previous = false;
        let decoded = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Err(e)
                if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature
                    && self.previous.is_some() =>
            {
                signed_with_previous = true;
                let previous = self.previous.as_ref().expect("checked above");
                jsonwebtoken::decode::<Claims>(token, previous, &self.validation)
            }
            other => other,
        };
        let data = decoded.map_err(TokenError::Invalid)?;
        // RFC 7515 4.1.11: extensions marked critical must be understood; we understand none.
        if data.header.crit.is_some() {
            return Err(TokenError::Critical);
        }
        let mut claims = data.claims;
        if claims.iat > now_secs() + LEEWAY_SECS {
            return Err(TokenError::IssuedInFuture);
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        if lifetime > self.max_ttl {
            return Err(TokenError::TooLong(lifetime));
        }
        let (subject, rooms) = (std::mem::take(&mut claims.sub), std::mem::take(&mut claims.rooms));
        Ok((claims, Verified { subject, rooms, signed_with_previous }))
    }

    /// A token for `user`, valid for `ttl` from now.
    pub fn mint(&self, user: &str, ttl: Duration) -> String {
        self.mint_with_rooms(user, ttl, &[])
    }

    /// A token for `user`, valid for `ttl` from now, that may join and read `rooms` (patterns).
    pub fn mint_with_rooms(&self, user: &str, ttl: Duration, rooms: &[String]) -> String {
        let iat = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            iat,
            exp: iat + ttl.as_secs(),
            iss: self.issuer.clone(),
            nbf: None,
            aud: self.audience.clone(),
            rooms: rooms.to_vec(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        let config = AuthConfig { max_token_ttl: Duration::from_secs(3600), ..AuthConfig::default() };
        Authenticator::new(&Secret::new("unit-test-secret-0123456789-0123456789".into()), &config)
    }

    fn token(auth: &Authenticator, iat: u64, exp: u64) -> String {
        let iss = auth.issuer.clone();
        let claims = Claims { sub: "u".into(), iat, exp, iss, nbf: None, aud: None, rooms: Vec::new() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &auth.encoding).unwrap()
    }

    #[test]
    fn the_limits_are_inclusive() {
        let auth = authenticator();
        let now = now_secs();
        // Issued exactly the leeway ahead of this clock: accepted (a skewed issuer).
        assert!(auth.verify(&token(&auth, now + LEEWAY_SECS, now + 600)).is_ok());
        assert!(matches!(
            auth.verify(&token(&auth, now + LEEWAY_SECS + 2, now + 600)),
            Err(TokenError::IssuedInFuture)
        ));
        // A lifetime of exactly auth.max_token_ttl: accepted; a second more: refused.
        assert!(auth.verify(&token(&auth, now, now + 3600)).is_ok());
        assert!(matches!(auth.verify(&token(&auth, now, now + 3601)), Err(TokenError::TooLong(3601))));
    }

    #[test]
    fn a_token_verified_once_is_recalled_only_while_the_full_check_would_pass() {
        let auth = authenticator();
        let now = now_secs();
        let valid = token(&auth, now, now + 600);
        let first = auth.verify(&valid).unwrap();
        assert_eq!(auth.remembered.len(), 1);
        assert_eq!(auth.verify(&valid).unwrap(), first);
        // The same claims under another signature are not the remembered token.
        let (signed, _) = valid.rsplit_once('.').unwrap();
        assert!(matches!(auth.verify(&format!("{signed}.AAAA")), Err(TokenError::Invalid(_))));
        // Refused tokens are not remembered.
        assert!(auth.verify(&token(&auth, now, now + 3601)).is_err());
        assert_eq!(auth.remembered.len(), 1);
        // The window: iat (or a later nbf) to exp, both widened by the leeway, as the check has it.
        let claims = Claims {
            sub: "u".into(),
            iat: 1_000,
            exp: 2_000,
            iss: auth.issuer.clone(),
            nbf: Some(1_100),
            aud: None,
            rooms: vec!["r-*".into()],
        };
        let verified =
            Verified { subject: "u".into(), rooms: vec!["r-*".into()], signed_with_previous: true };
        auth.remembered.keep("t", &claims, &verified);
        assert_eq!(auth.remembered.recall("t", 1_100 - LEEWAY_SECS - 1), None);
        assert_eq!(auth.remembered.recall("t", 1_100 - LEEWAY_SECS), Some(verified.clone()));
        assert_eq!(auth.remembered.recall("t", 2_000 + LEEWAY_SECS), Some(verified));
        assert_eq!(auth.remembered.recall("t", 2_000 + LEEWAY_SECS + 1), None);
    }

    #[test]
    fn an_expired_token_is_refused_though_it_was_remembered() {
        let auth = authenticator();
        let now = now_secs();
        // Valid for the next two seconds of leeway only.
        let short = token(&auth, now - 100, now - LEEWAY_SECS + 1);
        assert!(auth.verify(&short).is_ok());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while now_secs() <= now + 1 {
            assert!(std::time::Instant::now() < deadline, "the clock did not move");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(matches!(auth.verify(&short), Err(TokenError::Invalid(_))));
    }
}
