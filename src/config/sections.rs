//! The sections of the configuration file, one struct each, with their built-in defaults (the
//! `nats` section is in `nats.rs`; `service`, `stream` and `sessions` in `service.rs`).

use std::{fmt, time::Duration};

use serde::Deserialize;

use super::{ConfigError, units};

/// `center_node:` of the discovery layout (docs/regions.md, "Regions").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterNodeConfig {
    pub host: String,
    #[serde(default = "default_client_port")]
    pub nats_port: u16,
    #[serde(default = "default_leaf_port")]
    pub leaf_port: u16,
}

fn default_client_port() -> u16 {
    4222
}

fn default_leaf_port() -> u16 {
    7422
}

/// One entry of `leaf_nodes:` of the discovery layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafNodeConfig {
    pub region: String,
    pub host: String,
}

/// The audit log of presence events.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// The JetStream stream that keeps `presence.update.>` and `presence.expire.>`.
    pub stream: String,
    /// How long events are kept.
    #[serde(with = "units::duration")]
    pub retention: Duration,
    /// The newest events of each kind (update, expire) kept per user: what bounds the work of a
    /// history read. Older ones leave the audit log.
    pub max_per_user: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            stream: "PRESENCE_EVENTS".into(),
            retention: Duration::from_secs(30 * 24 * 3600),
            max_per_user: 1000,
        }
    }
}

/// Rate limits: reads per client IP, writes per user (the JWT's `sub`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub reads_per_second: u32,
    pub read_burst: u32,
    pub writes_per_second: u32,
    pub write_burst: u32,
    /// The reverse proxies in front of the service (addresses or networks). `X-Forwarded-For`
    /// is read only on connections from them, from the right, and the client is the first
    /// address that is not one of them. Default: none, and the header is ignored.
    #[serde(deserialize_with = "units::networks::deserialize")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Replaced by `trusted_proxies`; `true` is refused with a hint.
    pub trust_forwarded_for: Option<bool>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reads_per_second: 1000,
            read_burst: 2000,
            writes_per_second: 10,
            write_burst: 20,
            trusted_proxies: Vec::new(),
            trust_forwarded_for: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// `quick_cache` (what we run), `ristretto` (the original design's name) and `moka` (what an
    /// earlier version ran) all mean the same cache.
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes of approximate presence cost the cache may hold.
    #[serde(with = "units::bytes")]
    pub max_cost: u64,
    /// Ristretto's counter count; accepted for compatibility, quick_cache keeps no counters.
    pub num_counters: u64,
    /// Ristretto's write buffer; accepted for compatibility, quick_cache needs none.
    pub buffer_items: u64,
    pub metrics: bool,
    /// How long the cache remembers that the bucket has nothing for a user (never seen, or
    /// erased), so that asking again costs no KV read.
    #[serde(with = "units::duration")]
    pub negative_ttl: Duration,
    /// The most such "nothing here" entries the cache holds for users it knew nothing of before:
    /// however many unknown ids clients ask for, they cannot fill the cache.
    pub max_negative_entries: u64,
    /// How often a center that keeps its cache's snapshot writes one while it runs (when its
    /// watcher applied something since the last), so that a start after a crash finds a recent
    /// one; `0s`: only when it stops.
    #[serde(with = "units::duration")]
    pub snapshot_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            kind: "quick_cache".into(),
            max_cost: 512 * 1024 * 1024,
            num_counters: 10_000_000,
            buffer_items: 64,
            metrics: true,
            negative_ttl: Duration::from_secs(30),
            max_negative_entries: 100_000,
            snapshot_interval: Duration::from_secs(300),
        }
    }
}

impl CacheConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError::new(key, why));
        if !matches!(self.kind.as_str(), "quick_cache" | "ristretto" | "moka") {
            return fail("cache.type", "must be `quick_cache` (`ristretto`, `moka`: the same cache)");
        }
        if self.max_cost < 1024 {
            return fail("cache.max_cost", "must be at least 1KB");
        }
        if self.negative_ttl < Duration::from_secs(1) {
            return fail("cache.negative_ttl", "must be at least 1s");
        }
        if !self.snapshot_interval.is_zero() && self.snapshot_interval < Duration::from_secs(1) {
            return fail("cache.snapshot_interval", "must be 0s (only when the node stops) or at least 1s");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret; when absent, a generated one is kept in the data directory.
    pub jwt_secret: Option<Secret>,
    pub jwt_issuer: String,
    /// Lifetime of tokens minted by `presence token`.
    #[serde(with = "units::duration")]
    pub jwt_ttl: Duration,
    /// Tokens whose lifetime (`exp - iat`) is longer than this are refused.
    #[serde(with = "units::duration")]
    pub max_token_ttl: Duration,
    /// When set, a token's `aud` must name it.
    pub jwt_audience: Option<String>,
    /// The secret before the last rotation: tokens it signed are still accepted (new ones are
    /// signed with `jwt_secret`). Remove it once `max_token_ttl` has passed since the rotation.
    pub previous_jwt_secret: Option<Secret>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_issuer: "presence-service".into(),
            jwt_ttl: Duration::from_secs(24 * 3600),
            max_token_ttl: Duration::from_secs(30 * 24 * 3600),
            jwt_audience: None,
            previous_jwt_secret: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A level (`info`) or a tracing filter (`info,presence=debug`).
    pub level: String,
    pub format: LogFormat,
    /// Which requests get an access-log line.
    pub requests: RequestLogs,
    /// A request slower than this counts as an error for `requests: errors`.
    #[serde(with = "units::duration")]
    pub slow_request: Duration,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            requests: RequestLogs::Errors,
            slow_request: Duration::from_secs(1),
        }
    }
}

/// `logging.requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLogs {
    /// No access log.
    Off,
    /// Server errors (5xx), rate-limited requests (429), refused tokens (401) and requests slower
    /// than `logging.slow_request`.
    Errors,
    /// Every request.
    All,
}

/// A secret string that never shows in logs or `Debug` output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
