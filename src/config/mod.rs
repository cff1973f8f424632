//! The service's configuration (docs/configuration.md, "Configuration"): sections `service`, `nats`, `cache`,
//! `auth`, `logging`, `rate_limit`, `events`, `stream`, `sessions`, `rooms` and the discovery layout, built-in defaults, and
//! validation that names the offending key.
//!
//! Layers, later wins: defaults, the YAML file (with `${VAR}` interpolation), `PRESENCE_...`
//! environment variables, command-line flags. See [`load`].

mod load;
mod nats;
mod rooms;
mod sections;
mod service;
mod tls;
pub mod units;
mod webhooks;

use std::time::Duration;

use serde::Deserialize;

use crate::model::{MAX_TTL, is_valid_token};

pub use load::{ConfigError, Overrides, from_sources, load};
pub use nats::*;
pub use rooms::RoomsConfig;
pub use sections::*;
pub use service::*;
pub use tls::*;
pub use webhooks::*;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub service: ServiceConfig,
    pub nats: NatsConfig,
    pub cache: CacheConfig,
    pub auth: AuthConfig,
    pub logging: LoggingConfig,
    pub rate_limit: RateLimitConfig,
    pub events: EventsConfig,
    pub stream: StreamConfig,
    pub sessions: SessionsConfig,
    pub rooms: RoomsConfig,
    /// The application's endpoints that hear of presence (docs/webhooks.md).
    pub webhooks: Vec<WebhookConfig>,
    /// The discovery layout (docs/regions.md, "Regions"): where the center is.
    pub center_node: Option<CenterNodeConfig>,
    /// The discovery layout: the leaves by region (informational, and the
    /// registry's list of nodes to expect).
    pub leaf_nodes: Vec<LeafNodeConfig>,
}

impl Config {
    /// The node id, derived from the node type and host name when the config names none.
    pub fn node_id(&self) -> String {
        if !self.service.node_id.is_empty() {
            return self.service.node_id.clone();
        }
        let host = hostname().unwrap_or_else(|| "localhost".into());
        let host: String = host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
            .collect();
        format!("{}-{}", self.service.node_type.as_str(), host)
    }

    /// Where a leaf's leafnode connection goes: `nats.center_url`, else `center_node`'s host and
    /// leaf port.
    pub fn center_url(&self) -> Option<String> {
        let url = match (&self.nats.center_url, &self.center_node) {
            (Some(url), _) if !url.trim().is_empty() => url.trim().to_string(),
            (_, Some(center)) => format!("{}:{}", center.host, center.leaf_port),
            _ => return None,
        };
        Some(if url.contains("://") { url } else { format!("nats-leaf://{url}") })
    }

    /// The center's leafnode URLs: `center_url` may list several (a clustered center).
    pub fn center_urls(&self) -> Vec<String> {
        let Some(urls) = self.center_url() else { return Vec::new() };
        urls.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| if u.contains("://") { u.to_string() } else { format!("nats-leaf://{u}") })
            .collect()
    }

    /// A leaf's own JetStream domain.
    pub fn leaf_domain(&self) -> String {
        self.nats.jetstream.domain.clone().unwrap_or_else(|| self.node_id())
    }

    /// Checks what serde cannot: ranges, lengths and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_node()?;
        self.validate_nats()?;
        self.validate_rate_limits()?;
        self.validate_links()?;
        self.validate_stream()?;
        self.validate_sessions()?;
        self.rooms.validate()?;
        webhooks::validate(&self.webhooks)?;
        self.validate_cache_auth_logging()
    }

    fn validate_node(&self) -> Result<(), ConfigError> {
        if self.service.node_type == NodeType::Leaf && self.nats.embedded {
            if self.center_url().is_none() {
                return fail("nats.center_url", "a leaf needs nats.center_url (or center_node.host)");
            }
            if self.leaf_domain() == CENTER_DOMAIN || !is_valid_token(&self.leaf_domain()) {
                return fail(
                    "nats.jetstream.domain",
                    "a leaf's domain must be 1 to 128 characters of A-Z a-z 0-9 _ - and not `center`",
                );
            }
        }
        let id = &self.service.node_id;
        if !id.is_empty() && !is_valid_token(id) {
            return fail("service.node_id", TOKEN_RULE);
        }
        let service = &self.service;
        for (key, value) in [
            ("service.header_timeout", service.header_timeout),
            ("service.body_timeout", service.body_timeout),
            ("service.idle_timeout", service.idle_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return fail(key, "must be at least 100ms");
            }
        }
        at_least_one(&[
            ("service.max_connections", service.max_connections),
            ("service.max_connections_per_ip", service.max_connections_per_ip),
        ])
    }

    fn validate_stream(&self) -> Result<(), ConfigError> {
        let stream = &self.stream;
        if stream.batch_window > Duration::from_secs(1) {
            return fail("stream.batch_window", "must be at most 1s");
        }
        if stream.write_timeout < Duration::from_millis(100) {
            return fail("stream.write_timeout", "must be at least 100ms");
        }
        if stream.keep_alive < Duration::from_secs(1) {
            return fail("stream.keep_alive", "must be at least 1s");
        }
        if stream.keep_alive >= self.service.idle_timeout {
            return fail("stream.keep_alive", "must be shorter than service.idle_timeout");
        }
        at_least_one(&[
            ("stream.max_connections", stream.max_connections),
            ("stream.max_connections_per_ip", stream.max_connections_per_ip),
            ("stream.messages_per_second", stream.messages_per_second),
            ("stream.message_burst", stream.message_burst),
        ])?;
        if !self.service.cors.allowed_origins.iter().all(|o| CorsConfig::valid_origin(o)) {
            return fail(
                "service.cors.allowed_origins",
                "each must be `*` or an origin like https://app.example.com (scheme and host, no path)",
            );
        }
        Ok(())
    }

    fn validate_sessions(&self) -> Result<(), ConfigError> {
        let sessions = &self.sessions;
        if sessions.idle_after < Duration::from_secs(1) {
            return fail("sessions.idle_after", "must be at least 1s");
        }
        if sessions.grace < Duration::from_millis(100) || sessions.grace > Duration::from_secs(3600) {
            return fail("sessions.grace", "must be between 100ms and 1h");
        }
        // Heartbeats go out every 2 s: a shorter timeout would take live nodes for dead.
        if sessions.node_timeout < Duration::from_secs(5) {
            return fail("sessions.node_timeout", "must be at least 5s");
        }
        if sessions.write_interval > Duration::from_secs(10) {
            return fail("sessions.write_interval", "must be at most 10s");
        }
        if !(1..=100).contains(&sessions.max_devices) {
            return fail("sessions.max_devices", "must be between 1 and 100");
        }
        Ok(())
    }

    fn validate_nats(&self) -> Result<(), ConfigError> {
        let kv = &self.nats.kv;
        if !is_valid_token(&kv.bucket) {
            return fail("nats.kv.bucket", TOKEN_RULE);
        }
        if kv.ttl < Duration::from_secs(1) || kv.ttl > MAX_TTL {
            return fail("nats.kv.ttl", "must be between 1s and 7d");
        }
        if kv.ttl.subsec_nanos() != 0 {
            return fail("nats.kv.ttl", "must be whole seconds");
        }
        if kv.retention < Duration::from_secs(1) {
            return fail("nats.kv.retention", "must be at least 1s");
        }
        if self.events.retention < Duration::from_secs(1) {
            return fail("events.retention", "must be at least 1s");
        }
        if !(1..=100_000).contains(&self.events.max_per_user) {
            return fail("events.max_per_user", "must be between 1 and 100000");
        }
        if !is_valid_token(&self.events.stream) {
            return fail("events.stream", TOKEN_RULE);
        }
        if kv.replicas == 0 || kv.replicas > 5 {
            return fail("nats.kv.replicas", "must be between 1 and 5");
        }
        if self.nats.embedded && self.nats.port == self.nats.leaf_port && self.nats.port != 0 {
            return fail("nats.leaf_port", "must differ from nats.port");
        }
        if !self.nats.embedded && self.nats.url.trim().is_empty() {
            return fail("nats.url", "is required when nats.embedded is false");
        }
        if self.nats.request_timeout < Duration::from_millis(10) {
            return fail("nats.request_timeout", "must be at least 10ms");
        }
        if self.nats.breaker.failures == 0 {
            return fail("nats.breaker.failures", "must be at least 1");
        }
        if self.nats.user.is_some() != self.nats.password.is_some() {
            return fail("nats.password", "nats.user and nats.password go together");
        }
        if self.nats.leaf_password.as_ref().is_some_and(|p| p.expose().len() > MAX_PASSWORD_BYTES) {
            return fail("nats.leaf_password", PASSWORD_TOO_LONG);
        }
        let users = self.nats.operators.iter().map(|u| ("nats.operators", u));
        let mut seen = std::collections::HashSet::new();
        for (key, u) in users.chain(self.nats.event_readers.iter().map(|u| ("nats.event_readers", u))) {
            if !is_valid_token(&u.user) || u.user == SERVICE_USER {
                return fail(key, "a user must be 1 to 128 characters of A-Z a-z 0-9 _ - and not `presence`");
            }
            if u.password.expose().len() < 16 {
                return fail(key, "a password must be at least 16 characters");
            }
            if u.password.expose().len() > MAX_PASSWORD_BYTES {
                return fail(key, PASSWORD_TOO_LONG);
            }
            if !seen.insert(u.user.as_str()) {
                return fail(key, "a user name appears twice");
            }
        }
        Ok(())
    }

    fn validate_rate_limits(&self) -> Result<(), ConfigError> {
        let rl = &self.rate_limit;
        if rl.trust_forwarded_for == Some(true) {
            return fail(
                "rate_limit.trust_forwarded_for",
                "was replaced by rate_limit.trusted_proxies: list the addresses or networks of your proxies",
            );
        }
        if !rl.enabled {
            return Ok(());
        }
        for (key, value) in [
            ("rate_limit.reads_per_second", rl.reads_per_second),
            ("rate_limit.read_burst", rl.read_burst),
            ("rate_limit.writes_per_second", rl.writes_per_second),
            ("rate_limit.write_burst", rl.write_burst),
        ] {
            if value == 0 {
                return fail(key, "must be at least 1 (set rate_limit.enabled: false to turn limits off)");
            }
        }
        Ok(())
    }

    fn validate_cache_auth_logging(&self) -> Result<(), ConfigError> {
        self.cache.validate()?;
        if let Some(secret) = &self.auth.jwt_secret
            && secret.expose().len() < 32
        {
            return fail(
                "auth.jwt_secret",
                "must be at least 32 bytes (HS256 needs a key as long as its hash)",
            );
        }
        if let Some(previous) = &self.auth.previous_jwt_secret {
            if previous.expose().len() < 32 {
                return fail("auth.previous_jwt_secret", "must be at least 32 bytes, as auth.jwt_secret");
            }
            if self.auth.jwt_secret.as_ref().is_none_or(|s| s.expose() == previous.expose()) {
                return fail(
                    "auth.previous_jwt_secret",
                    "goes with a new auth.jwt_secret that differs from it (the rotation's new secret)",
                );
            }
        }
        if self.auth.jwt_issuer.trim().is_empty() {
            return fail("auth.jwt_issuer", "must not be empty");
        }
        if self.auth.jwt_ttl < Duration::from_secs(1) {
            return fail("auth.jwt_ttl", "must be at least 1s");
        }
        if self.auth.jwt_ttl > self.auth.max_token_ttl {
            return fail("auth.jwt_ttl", "must not exceed auth.max_token_ttl (tokens that long are refused)");
        }
        if self.auth.jwt_audience.as_deref().is_some_and(|a| a.trim().is_empty()) {
            return fail("auth.jwt_audience", "must not be empty when set");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err() {
            return fail(
                "logging.level",
                "must be a level (error, warn, info, debug, trace) or a tracing filter",
            );
        }
        Ok(())
    }
}

const TOKEN_RULE: &str = "must be 1 to 128 characters of A-Z a-z 0-9 _ -";

fn fail(key: &str, reason: &str) -> Result<(), ConfigError> {
    Err(ConfigError::new(key, reason))
}

/// The first of `counts` that is 0 is an error naming its key.
fn at_least_one(counts: &[(&str, usize)]) -> Result<(), ConfigError> {
    match counts.iter().find(|(_, n)| *n == 0) {
        Some((key, _)) => fail(key, "must be at least 1"),
        None => Ok(()),
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}
