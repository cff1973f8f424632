//! What secures each link and the store: `service.tls` (HTTPS, or a TLS-terminating proxy in
//! front), `nats.tls` (the client port), `nats.leaf_tls` (leafnode links, mutual TLS) and
//! `nats.jetstream.encryption` (the store at rest), and the rule that binds them: nothing listens
//! beyond loopback without authentication and TLS (docs/security.md, "Security").

use std::path::PathBuf;

use serde::Deserialize;

use super::{Config, ConfigError, NodeType, Secret, fail, units};

/// `service.tls`: HTTPS in process (`mode: direct`, the default, with `cert_file`/`key_file`), or
/// plain HTTP behind a TLS-terminating proxy (`mode: proxy`) that is believed only from
/// `trusted_proxies`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceTls {
    pub mode: TlsMode,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `mode: proxy`: the proxies whose `X-Forwarded-Proto` / `Forwarded: proto=` is believed.
    #[serde(deserialize_with = "units::networks::deserialize")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The `Strict-Transport-Security` value of every HTTPS answer; empty turns it off.
    pub hsts: String,
}

impl Default for ServiceTls {
    fn default() -> Self {
        Self {
            mode: TlsMode::Direct,
            cert_file: None,
            key_file: None,
            trusted_proxies: Vec::new(),
            hsts: "max-age=31536000; includeSubDomains".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Direct,
    Proxy,
}

/// `nats.tls`. With the embedded server: its client port serves TLS with `cert_file`/`key_file`
/// and the service checks it against `ca_file`. With an external NATS: the CA bundle that signs
/// the server's certificate, and optionally the service's own client certificate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `nats.leaf_tls`: mutual TLS on leafnode links. The CA signs every node's certificate. A
/// center admits the leaves named in `leaves` (a name from the leaf certificate's subject
/// alternative names or subject), each as its own NATS user with a leaf's permissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    #[serde(default)]
    pub leaves: Vec<String>,
}

/// `nats.jetstream.encryption`: JetStream encryption at rest of the embedded server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    #[serde(default)]
    pub cipher: Cipher,
    pub key: Secret,
    /// The key the store was encrypted with until now: the first start with both re-keys it.
    pub previous_key: Option<Secret>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cipher {
    #[default]
    Chachapoly,
    Aes,
}

impl Cipher {
    pub fn as_str(self) -> &'static str {
        match self {
            Cipher::Chachapoly => "chachapoly",
            Cipher::Aes => "aes",
        }
    }
}

/// The environment variable the documentation (docs/security.md) suggests for `encryption.key` (`${PRESENCE_JS_KEY}`),
/// and the one the embedded server reads it from.
pub const KEY_VAR: &str = "PRESENCE_JS_KEY";
/// The same for `encryption.previous_key`.
pub const PREVIOUS_KEY_VAR: &str = "PRESENCE_JS_PREVIOUS_KEY";

/// The shortest encryption key accepted (nats-server takes any, even an empty one, which turns
/// encryption off without a word).
pub const MIN_KEY_BYTES: usize = 32;

impl Config {
    /// The rules of `service.tls`, `nats.tls`, `nats.leaf_tls`, `nats.leaf_host` and
    /// `nats.jetstream.encryption`.
    pub(super) fn validate_links(&self) -> Result<(), ConfigError> {
        self.validate_https()?;
        let nats = &self.nats;
        if let Some(tls) = &nats.tls {
            if nats.embedded && (tls.cert_file.is_none() || tls.key_file.is_none() || tls.ca_file.is_none()) {
                return fail(
                    "nats.tls",
                    "the embedded server needs cert_file and key_file (its certificate) and ca_file (what the service checks it against)",
                );
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return fail("nats.tls", "cert_file and key_file go together");
            }
        }
        if nats.embedded && !nats.host.is_loopback() && nats.tls.is_none() {
            return fail(
                "nats.host",
                "the client port listens beyond loopback: set nats.tls (cert_file, key_file, ca_file)",
            );
        }
        let leaf_host = nats.leaf_host.unwrap_or(nats.host);
        let center = self.service.node_type == NodeType::Center;
        if nats.embedded && center && !leaf_host.is_loopback() && nats.leaf_tls.is_none() {
            return fail(
                "nats.leaf_host",
                "the leafnode listener listens beyond loopback: set nats.leaf_tls (mutual TLS for leaf links)",
            );
        }
        if let Some(leaf) = &nats.leaf_tls
            && center
            && leaf.leaves.is_empty()
        {
            return fail(
                "nats.leaf_tls.leaves",
                "name the leaves the center admits (their certificate names)",
            );
        }
        if nats.leaf_tls.as_ref().is_some_and(|l| l.leaves.iter().any(|n| n.trim().is_empty())) {
            return fail("nats.leaf_tls.leaves", "a leaf name must not be empty");
        }
        self.validate_credentials()?;
        self.validate_encryption()
    }

    fn validate_https(&self) -> Result<(), ConfigError> {
        let service = &self.service;
        match (&service.tls, service.host) {
            (None, host) if !host.is_loopback() => fail(
                "service.tls",
                "the HTTP port listens beyond loopback: serve HTTPS (service.tls.cert_file, key_file) \
                 or name the TLS-terminating proxy (service.tls.mode: proxy, trusted_proxies)",
            ),
            (Some(tls), _)
                if tls.mode == TlsMode::Direct && (tls.cert_file.is_none() || tls.key_file.is_none()) =>
            {
                fail("service.tls", "HTTPS needs cert_file and key_file (or mode: proxy)")
            }
            (Some(tls), _) if tls.mode == TlsMode::Proxy && tls.trusted_proxies.is_empty() => fail(
                "service.tls.trusted_proxies",
                "mode: proxy needs the addresses of the TLS-terminating proxies",
            ),
            (Some(tls), _) if tls.hsts.contains(['\r', '\n']) => fail("service.tls.hsts", "must be one line"),
            _ => Ok(()),
        }
    }

    fn validate_credentials(&self) -> Result<(), ConfigError> {
        let nats = &self.nats;
        let ways = [nats.user.is_some(), nats.token.is_some(), nats.credentials.is_some()];
        if ways.into_iter().filter(|w| *w).count() > 1 {
            return fail(
                "nats.credentials",
                "use one of nats.credentials, nats.user/password and nats.token",
            );
        }
        if nats.embedded && (nats.token.is_some() || nats.credentials.is_some()) {
            return fail(
                "nats.credentials",
                "the embedded server makes its own credentials; these are for an external NATS",
            );
        }
        Ok(())
    }

    fn validate_encryption(&self) -> Result<(), ConfigError> {
        let Some(encryption) = &self.nats.jetstream.encryption else { return Ok(()) };
        if !self.nats.embedded {
            return fail(
                "nats.jetstream.encryption",
                "configures the embedded server; an external one has its own",
            );
        }
        for (key, secret) in [
            ("nats.jetstream.encryption.key", Some(&encryption.key)),
            ("nats.jetstream.encryption.previous_key", encryption.previous_key.as_ref()),
        ] {
            if secret.is_some_and(|s| s.expose().len() < MIN_KEY_BYTES) {
                return fail(key, "must be at least 32 bytes (an empty key would turn encryption off)");
            }
        }
        Ok(())
    }
}
