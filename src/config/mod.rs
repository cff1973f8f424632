//! The service's configuration: the YAML shape of the design document's section 9.1, the keys that
//! `DECISIONS.md` adds, built-in defaults, and validation that names the offending key.
//!
//! Layers, later wins: defaults, the YAML file (with `${VAR}` interpolation), `PRESENCE_...`
//! environment variables, command-line flags. See [`load`].

mod load;
pub mod units;

use std::{fmt, net::IpAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

pub use load::{ConfigError, Overrides, from_sources, load};

/// The longest `ttl` a client may ask for (DECISIONS section 3).
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A rough per-presence cost in the cache, used to say how many presences `cache.max_cost` holds.
pub const APPROX_PRESENCE_COST: u64 = 320;

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
    /// The design document's section 8.3 layout: where the center is.
    pub center_node: Option<CenterNodeConfig>,
    /// The design document's section 8.3 layout: the leaves by region (informational, and the
    /// registry's list of nodes to expect).
    pub leaf_nodes: Vec<LeafNodeConfig>,
}

/// `center_node:` of the design document's section 8.3.
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

/// One entry of `leaf_nodes:` of the design document's section 8.3.
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
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { stream: "PRESENCE_EVENTS".into(), retention: Duration::from_secs(30 * 24 * 3600) }
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
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    pub embedded: bool,
    pub data_dir: PathBuf,
    /// The NATS server(s) to use when `embedded: false`; a comma-separated list is accepted.
    pub url: String,
    /// Bind address of the embedded server's client and leafnode listeners.
    pub host: IpAddr,
    /// Client port of the embedded server.
    pub port: u16,
    /// Leafnode listener of the embedded server on a center node.
    pub leaf_port: u16,
    /// Cluster listener; accepted for the clustered center, not used by a single node.
    pub cluster_port: Option<u16>,
    /// Path to `nats-server`; else `NATS_SERVER_BIN`, else the project's copy, else `PATH`.
    pub server_bin: Option<PathBuf>,
    /// Where a leaf node's leafnode connection goes.
    pub center_url: Option<String>,
    /// Upper bound on one KV request (get, or put until acknowledged).
    #[serde(with = "units::duration")]
    pub request_timeout: Duration,
    /// How long the embedded server may take to serve JetStream after it was started.
    #[serde(with = "units::duration")]
    pub startup_timeout: Duration,
    pub breaker: BreakerConfig,
    pub jetstream: JetStreamConfig,
    pub kv: KvConfig,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            embedded: true,
            data_dir: PathBuf::from("./nats-data"),
            url: "nats://127.0.0.1:4222".into(),
            host: IpAddr::from([127, 0, 0, 1]),
            port: 4222,
            leaf_port: 7422,
            cluster_port: None,
            server_bin: None,
            center_url: None,
            request_timeout: Duration::from_secs(2),
            startup_timeout: Duration::from_secs(30),
            breaker: BreakerConfig::default(),
            jetstream: JetStreamConfig::default(),
            kv: KvConfig::default(),
        }
    }
}

/// The circuit breaker in front of NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed NATS calls that open the breaker.
    pub failures: u32,
    /// How long it stays open before one probe call is let through.
    #[serde(with = "units::duration")]
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failures: 3, cooldown: Duration::from_secs(2) }
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
    /// Take the client IP from the first `X-Forwarded-For` entry (behind a trusted proxy only).
    pub trust_forwarded_for: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reads_per_second: 1000,
            read_burst: 2000,
            writes_per_second: 10,
            write_burst: 20,
            trust_forwarded_for: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JetStreamConfig {
    #[serde(with = "units::bytes")]
    pub max_memory: u64,
    #[serde(with = "units::bytes")]
    pub max_file: u64,
    /// The embedded server's JetStream domain on a leaf (default: the node id). A center's is
    /// always `center`, where the bucket lives.
    pub domain: Option<String>,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self { max_memory: 1_000_000_000, max_file: 10_000_000_000, domain: None }
    }
}

/// The JetStream domain of the center, where the bucket and the audit log live.
pub const CENTER_DOMAIN: &str = "center";
/// How often a leaf's embedded server pings the center, so that a dead link shows in seconds.
pub const LEAF_PING_INTERVAL: &str = "3s";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvConfig {
    pub bucket: String,
    /// The default `ttl` of a presence when a write names none.
    #[serde(with = "units::duration")]
    pub ttl: Duration,
    /// How long a record stays in the bucket after its last write (the bucket's `max_age`).
    #[serde(with = "units::duration")]
    pub retention: Duration,
    pub replicas: usize,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self {
            bucket: "presence".into(),
            ttl: Duration::from_secs(3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            replicas: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// `ristretto` (the design document's) and `moka` (what we run) both mean the same cache.
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
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            kind: "moka".into(),
            max_cost: 512 * 1024 * 1024,
            num_counters: 10_000_000,
            buffer_items: 64,
            metrics: true,
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
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_issuer: "presence-service".into(),
            jwt_ttl: Duration::from_secs(24 * 3600),
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
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
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
        let fail = |key: &str, reason: &str| Err(ConfigError::new(key, reason));
        if self.service.node_type == NodeType::Leaf && self.nats.embedded {
            if self.center_url().is_none() {
                return fail("nats.center_url", "a leaf needs nats.center_url (or center_node.host)");
            }
            if self.leaf_domain() == CENTER_DOMAIN || !crate::model::is_valid_token(&self.leaf_domain()) {
                return fail(
                    "nats.jetstream.domain",
                    "a leaf's domain must be 1 to 128 characters of A-Z a-z 0-9 _ - and not `center`",
                );
            }
        }
        let id = &self.service.node_id;
        if !id.is_empty() && !crate::model::is_valid_token(id) {
            return fail("service.node_id", "must be 1 to 128 characters of A-Z a-z 0-9 _ -");
        }
        let kv = &self.nats.kv;
        if !crate::model::is_valid_token(&kv.bucket) {
            return fail("nats.kv.bucket", "must be 1 to 128 characters of A-Z a-z 0-9 _ -");
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
        if !crate::model::is_valid_token(&self.events.stream) {
            return fail("events.stream", "must be 1 to 128 characters of A-Z a-z 0-9 _ -");
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
        let rl = &self.rate_limit;
        if rl.enabled {
            for (key, value) in [
                ("rate_limit.reads_per_second", rl.reads_per_second),
                ("rate_limit.read_burst", rl.read_burst),
                ("rate_limit.writes_per_second", rl.writes_per_second),
                ("rate_limit.write_burst", rl.write_burst),
            ] {
                if value == 0 {
                    return fail(
                        key,
                        "must be at least 1 (set rate_limit.enabled: false to turn limits off)",
                    );
                }
            }
        }
        if !matches!(self.cache.kind.as_str(), "ristretto" | "moka") {
            return fail("cache.type", "must be `ristretto` or `moka` (both mean the moka cache)");
        }
        if self.cache.max_cost < 1024 {
            return fail("cache.max_cost", "must be at least 1KB");
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.expose().len() < 32
        {
            return fail(
                "auth.jwt_secret",
                "must be at least 32 bytes (HS256 needs a key as long as its hash)",
            );
        }
        if self.auth.jwt_issuer.trim().is_empty() {
            return fail("auth.jwt_issuer", "must not be empty");
        }
        if self.auth.jwt_ttl < Duration::from_secs(1) {
            return fail("auth.jwt_ttl", "must be at least 1s");
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
