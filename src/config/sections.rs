//! The sections of the configuration file, one struct each, with their built-in defaults (the
//! `nats` section is in its own file).

use std::{fmt, net::IpAddr, time::Duration};

use serde::Deserialize;

use super::units;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    Center,
    Leaf,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Center => "center",
            NodeType::Leaf => "leaf",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    pub version: String,
    pub host: IpAddr,
    pub port: u16,
    pub node_type: NodeType,
    /// Empty means "derive one": `{node_type}-{hostname}`.
    pub node_id: String,
    pub region: Option<String>,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "units::duration")]
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's headers; also how long a kept-alive
    /// connection may wait for its next request.
    #[serde(with = "units::duration")]
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive in full (408 after that).
    #[serde(with = "units::duration")]
    pub body_timeout: Duration,
    /// A connection that moves no byte in either direction for this long is closed.
    #[serde(with = "units::duration")]
    pub idle_timeout: Duration,
    /// Open connections in all; more are answered 503 and closed.
    pub max_connections: usize,
    /// Open connections from one client address (trusted proxies excepted); more are answered
    /// 429 and closed.
    pub max_connections_per_ip: usize,
    /// HTTPS, or the TLS-terminating proxy in front (see [`super::ServiceTls`]).
    pub tls: Option<super::ServiceTls>,
    /// Which web pages (origins) may call the API from a browser.
    pub cors: CorsConfig,
}

/// `service.cors`: the origins whose pages may call the API, the stream and the WebSocket from a
/// browser. Default: none (only the node's own page, which is same-origin).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
}

/// `stream`: live presence (Server-Sent Events and WebSocket).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Changes for one client within this window after a message go out together, at its end.
    #[serde(with = "units::duration")]
    pub batch_window: Duration,
    /// Open streams on this node; more are answered 503.
    pub max_connections: usize,
    /// Open streams from one client address; more are answered 429.
    pub max_connections_per_ip: usize,
    /// A client that leaves changes unread for this long is disconnected.
    #[serde(with = "units::duration")]
    pub write_timeout: Duration,
    /// A comment (SSE) or a ping (WebSocket) this often keeps an idle stream open; a WebSocket
    /// peer that answers no ping within two of these is dropped.
    #[serde(with = "units::duration")]
    pub keep_alive: Duration,
    /// The newest changes this node keeps for clients that reconnect with `Last-Event-ID`.
    pub resume_buffer: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            batch_window: Duration::from_millis(50),
            max_connections: 10_000,
            max_connections_per_ip: 100,
            write_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(15),
            resume_buffer: 10_000,
        }
    }
}

/// `sessions`: presence that follows connections (docs/sessions.md, "Sessions").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// A device with no `activity` for this long is idle; a user whose devices are all idle
    /// reads `away`.
    #[serde(with = "units::duration")]
    pub idle_after: Duration,
    /// How long a session that ended without a close frame is kept: a device that reconnects
    /// within it continues its session and nobody sees a change.
    #[serde(with = "units::duration")]
    pub grace: Duration,
    /// A node not heard from for this long (then the grace) is taken for dead: the sessions it
    /// held end.
    #[serde(with = "units::duration")]
    pub node_timeout: Duration,
    /// Devices one user may have connected at once; a further `hello` is refused.
    pub max_devices: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_after: Duration::from_secs(600),
            grace: Duration::from_secs(15),
            node_timeout: Duration::from_secs(30),
            max_devices: 10,
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: "presence-service".into(),
            version: "v2".into(),
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            node_type: NodeType::Center,
            node_id: String::new(),
            region: None,
            shutdown_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            tls: None,
            cors: CorsConfig::default(),
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
    /// `ristretto` (the original design's name) and `moka` (what we run) both mean the same cache.
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes of approximate presence cost the cache may hold.
    #[serde(with = "units::bytes")]
    pub max_cost: u64,
    /// Ristretto's counter count; accepted for compatibility, moka sizes its own sketch.
    pub num_counters: u64,
    /// Ristretto's write buffer; accepted for compatibility, moka needs none.
    pub buffer_items: u64,
    pub metrics: bool,
    /// How long the cache remembers that the bucket has nothing for a user (never seen, or
    /// erased), so that asking again costs no KV read.
    #[serde(with = "units::duration")]
    pub negative_ttl: Duration,
    /// The most such "nothing here" entries the cache holds for users it knew nothing of before:
    /// however many unknown ids clients ask for, they cannot fill the cache.
    pub max_negative_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            kind: "moka".into(),
            max_cost: 512 * 1024 * 1024,
            num_counters: 10_000_000,
            buffer_items: 64,
            metrics: true,
            negative_ttl: Duration::from_secs(30),
            max_negative_entries: 100_000,
        }
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
