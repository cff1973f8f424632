//! `webhooks:`: the application's endpoints that hear of presence (docs/webhooks.md). Each has a
//! name, a URL, and a Standard Webhooks secret (`whsec_` + base64 of at least 24 random bytes;
//! `${VAR}` like any other secret; never logged or shown).

use std::{path::PathBuf, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;

use super::{ConfigError, Secret, units};
use crate::model::{is_valid_room_pattern, is_valid_token};

/// The event types an endpoint may ask for.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "presence.changed",
    "presence.expired",
    "presence.erased",
    "room.joined",
    "room.left",
    "room.occupied",
    "room.vacated",
];

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
    /// The event types it hears (default: all of [`WEBHOOK_EVENTS`]).
    #[serde(default)]
    pub events: Vec<String>,
    /// Only the users these patterns match (`*` matches any run; default: everyone).
    #[serde(default)]
    pub users: Vec<String>,
    /// Only the rooms these patterns match, for room events (default: every room).
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Several events in one request, for receivers that prefer fewer calls (default: one each).
    #[serde(default)]
    pub batch: Option<BatchConfig>,
    /// The waits between a failed attempt and the next (default: the specification's, 5s, 5m,
    /// 30m, 2h, 5h, 10h, 14h, 20h, 24h); after the last, the endpoint is disabled.
    #[serde(default, deserialize_with = "units::durations::deserialize")]
    pub retry_schedule: Option<Vec<Duration>>,
}

/// `batch:` of an endpoint: a request goes when it holds `max_events`, or `max_wait` after its
/// first event, whichever comes first.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    pub max_events: usize,
    #[serde(deserialize_with = "units::duration::deserialize")]
    pub max_wait: Duration,
}

/// The most events one batched request holds.
pub const MAX_BATCH_EVENTS: usize = 1000;

impl WebhookConfig {
    /// Whether the endpoint hears events of type `kind`.
    pub fn hears(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }

    /// Whether the endpoint hears of any room.
    pub fn hears_rooms(&self) -> bool {
        WEBHOOK_EVENTS.iter().filter(|e| e.starts_with("room.")).any(|e| self.hears(e))
    }

    /// The waits between attempts.
    pub fn schedule(&self) -> Vec<Duration> {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        self.retry_schedule.clone().unwrap_or_else(|| {
            let mut schedule =
                vec![Duration::from_secs(5), Duration::from_secs(300), Duration::from_secs(1800)];
            schedule.extend([2, 5, 10, 14, 20, 24].map(hours));
            schedule
        })
    }
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
        if let Some(unknown) = hook.events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
            let why = format!("{unknown:?} is no event type; they are {}", WEBHOOK_EVENTS.join(", "));
            return Err(ConfigError::new(key("events"), why));
        }
        for (field, patterns) in [("users", &hook.users), ("rooms", &hook.rooms)] {
            if !patterns.iter().all(|p| is_valid_room_pattern(p)) {
                return Err(ConfigError::new(
                    key(field),
                    "each pattern is 1 to 128 of A-Z a-z 0-9 _ - and `*`",
                ));
            }
        }
        if let Some(batch) = hook.batch {
            if !(1..=MAX_BATCH_EVENTS).contains(&batch.max_events) {
                return Err(ConfigError::new(key("batch.max_events"), "1 to 1000"));
            }
            if batch.max_wait > Duration::from_secs(60) {
                return Err(ConfigError::new(key("batch.max_wait"), "at most 60s"));
            }
        }
        let week = Duration::from_secs(7 * 86400);
        if hook.retry_schedule.as_ref().is_some_and(|s| s.len() > 20 || s.iter().any(|d| *d > week)) {
            return Err(ConfigError::new(key("retry_schedule"), "at most 20 waits of at most 7 days each"));
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
