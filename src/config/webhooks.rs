//! `webhooks:`: the application's endpoints that hear of presence (docs/webhooks.md). Each has a
//! name, a URL, and a Standard Webhooks secret (`whsec_` + base64 of at least 24 random bytes;
//! `${VAR}` like any other secret; never logged or shown).

use std::path::PathBuf;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;

use super::{ConfigError, Secret};
use crate::model::is_valid_token;

/// The fewest random bytes a webhook secret may hold.
pub const MIN_SECRET_BYTES: usize = 24;

/// One endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the endpoint in metrics, health and `presence webhooks test NAME`.
    pub name: String,
    /// `https://...` (`http://` only with `allow_insecure`).
    pub url: String,
    pub secret: Secret,
    /// During a rotation: requests are signed with both.
    #[serde(default)]
    pub previous_secret: Option<Secret>,
    /// Plain `http://` is allowed (tests, a receiver on the same host).
    #[serde(default)]
    pub allow_insecure: bool,
    /// Addresses that are loopback, private, link-local or cloud metadata are allowed.
    #[serde(default)]
    pub allow_private: bool,
    /// The CA bundle that signs the endpoint's certificate (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The key bytes of a `whsec_...` secret, or why it is not one (never what it was).
pub fn webhook_secret_bytes(secret: &Secret) -> Result<Vec<u8>, &'static str> {
    let encoded = secret.expose().trim().strip_prefix("whsec_").ok_or("must start with `whsec_`")?;
    let bytes = STANDARD.decode(encoded).map_err(|_| "must be `whsec_` and base64")?;
    if bytes.len() < MIN_SECRET_BYTES {
        return Err("must hold at least 24 random bytes (`whsec_` and 32 base64 characters or more)");
    }
    Ok(bytes)
}

/// Checks every endpoint; the error names the key (`webhooks[0].url`).
pub(super) fn validate(webhooks: &[WebhookConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    for (i, hook) in webhooks.iter().enumerate() {
        let key = |field: &str| format!("webhooks[{i}].{field}");
        if !is_valid_token(&hook.name) {
            return Err(ConfigError::new(key("name"), "1 to 128 characters of A-Z a-z 0-9 _ -"));
        }
        if !names.insert(hook.name.as_str()) {
            return Err(ConfigError::new(key("name"), "another endpoint has this name"));
        }
        let url = hook.url.trim();
        let rest = match url.split_once("://") {
            Some(("https", rest)) => rest,
            Some(("http", rest)) if hook.allow_insecure => rest,
            Some(("http", _)) => {
                return Err(ConfigError::new(key("url"), "plain http:// needs allow_insecure: true"));
            }
            _ => return Err(ConfigError::new(key("url"), "must start with https://")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(ConfigError::new(key("url"), "must name a host (and no user or password)"));
        }
        for (field, secret) in
            [("secret", Some(&hook.secret)), ("previous_secret", hook.previous_secret.as_ref())]
        {
            if let Some(Err(why)) = secret.map(webhook_secret_bytes) {
                return Err(ConfigError::new(key(field), why));
            }
        }
    }
    Ok(())
}
