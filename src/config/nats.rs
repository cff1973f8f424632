//! The `nats` section: the embedded server or the external one, the JetStream limits, the bucket,
//! the circuit breaker.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{Encryption, LeafTls, NatsTls, Secret, units};

/// The longest password the embedded server can check: it keeps bcrypt hashes, and bcrypt reads
/// at most 72 bytes, the last of them a terminator.
pub const MAX_PASSWORD_BYTES: usize = 71;
pub(super) const PASSWORD_TOO_LONG: &str =
    "a password may be at most 71 bytes (the embedded server keeps bcrypt hashes, which read no more)";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    pub embedded: bool,
    pub data_dir: PathBuf,
    /// The NATS server(s) to use when `embedded: false`; a comma-separated list is accepted.
    pub url: String,
    /// Bind address of the embedded server's client port (and of its leafnode listener unless
    /// `leaf_host` is set).
    pub host: IpAddr,
    /// Bind address of a center's leafnode listener; default `host`.
    pub leaf_host: Option<IpAddr>,
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
    /// Lets a center lower the replicas or the retention of the bucket or the audit log (which
    /// loses fault tolerance, or deletes older records). Refused unless this is `true`.
    pub allow_settings_reduction: bool,
    /// The password of leafnode links (user `leaf`): the center's embedded server accepts only
    /// leaves that present it (when unset, it generates one into its data directory), and a
    /// leaf dials the center with it.
    pub leaf_password: Option<Secret>,
    /// The service's own user and password on an external NATS (`embedded: false`).
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Clients of the embedded server with full access (operators, with the `nats` tool).
    pub operators: Vec<NatsUser>,
    /// Clients of the embedded server that may only subscribe to presence events and heartbeats.
    pub event_readers: Vec<NatsUser>,
    /// A `.creds` file (JWT and NKey seed) for an external NATS.
    pub credentials: Option<PathBuf>,
    /// A token for an external NATS.
    pub token: Option<Secret>,
    /// TLS on the client port (see [`NatsTls`]).
    pub tls: Option<NatsTls>,
    /// Mutual TLS on leafnode links (see [`LeafTls`]).
    pub leaf_tls: Option<LeafTls>,
}

/// The user leaf nodes' links authenticate as.
pub const LEAF_USER: &str = "leaf";

/// The embedded server's user that the service itself connects as.
pub const SERVICE_USER: &str = "presence";

/// A user of the embedded nats-server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsUser {
    pub user: String,
    pub password: Secret,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            embedded: true,
            data_dir: PathBuf::from("./nats-data"),
            url: "nats://127.0.0.1:4222".into(),
            host: IpAddr::from([127, 0, 0, 1]),
            leaf_host: None,
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
            allow_settings_reduction: false,
            leaf_password: None,
            user: None,
            password: None,
            operators: Vec::new(),
            event_readers: Vec::new(),
            credentials: None,
            token: None,
            tls: None,
            leaf_tls: None,
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
    /// How often the embedded server flushes JetStream writes to disk: `always` (before each
    /// acknowledgement: no acknowledged write is lost to a power cut, at a cost in write
    /// throughput) or a duration. Default: nats-server's own (2 minutes); the operating system
    /// still has every acknowledged write, so only a machine crash or power loss can lose them.
    pub sync_interval: Option<SyncInterval>,
    /// Encryption at rest of the embedded server's store (see [`Encryption`]).
    pub encryption: Option<Encryption>,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            max_memory: 1_000_000_000,
            max_file: 10_000_000_000,
            domain: None,
            sync_interval: None,
            encryption: None,
        }
    }
}

/// `nats.jetstream.sync_interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncInterval {
    Always,
    Every(Duration),
}

impl<'de> Deserialize<'de> for SyncInterval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Text(text) if text.trim() == "always" => Ok(SyncInterval::Always),
            Raw::Text(text) => units::parse_duration(&text)
                .map(SyncInterval::Every)
                .map_err(|e| serde::de::Error::custom(format!("{e}, or `always`"))),
            Raw::Seconds(secs) => Ok(SyncInterval::Every(Duration::from_secs(secs))),
        }
    }
}

/// The JetStream domain of the center, where the bucket and the audit log live.
pub const CENTER_DOMAIN: &str = "center";
/// Where leaves send their writes for the center to carry out. Outside `presence.>`, which
/// leaves may subscribe to: a leaf cannot take other regions' writes.
pub const FORWARD_SUBJECT: &str = "$PRESENCE.write";
/// Where leaves send erasures for the center to carry out: a leaf may not purge the audit log.
pub const FORWARD_ERASE_SUBJECT: &str = "$PRESENCE.erase";
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
