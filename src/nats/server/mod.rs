//! Finding the `nats-server` binary, checking its version, and writing its configuration.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use crate::config::{
    CENTER_DOMAIN, Config, LEAF_PING_INTERVAL, LEAF_USER, NatsTls, NodeType, Secret, SyncInterval,
};

use super::NatsError;
use users::authorization;

mod users;

/// Per-key TTL and expiry markers arrived in nats-server 2.11.
pub const MIN_VERSION: (u64, u64, u64) = (2, 11, 0);
/// Where `scripts/install-nats-server` puts the pinned binary, relative to the project.
pub const PROJECT_BIN: &str = ".tools/bin/nats-server";
const INSTALL_HINT: &str = "install the pinned nats-server with `scripts/install-nats-server` \
    (from the project folder), or set nats.server_bin or NATS_SERVER_BIN to a nats-server 2.11 or newer";

/// The binary to run: `nats.server_bin`, else `NATS_SERVER_BIN`, else the project's installed
/// copy (beside the working directory or the source tree), else the first on `PATH`.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, NatsError> {
    if let Some(path) = configured {
        return existing(path).ok_or_else(|| {
            NatsError::Binary(format!("nats.server_bin {} does not exist; {INSTALL_HINT}", path.display()))
        });
    }
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return existing(&path).ok_or_else(|| {
            NatsError::Binary(format!("NATS_SERVER_BIN {} does not exist; {INSTALL_HINT}", path.display()))
        });
    }
    let project = [PathBuf::from(PROJECT_BIN), Path::new(env!("CARGO_MANIFEST_DIR")).join(PROJECT_BIN)];
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|dir| dir.join("nats-server")).collect::<Vec<_>>())
        .unwrap_or_default();
    project
        .into_iter()
        .chain(on_path)
        .find_map(|p| existing(&p))
        .ok_or_else(|| NatsError::Binary(format!("nats-server not found; {INSTALL_HINT}")))
}

fn existing(path: &Path) -> Option<PathBuf> {
    path.is_file().then(|| path.to_path_buf())
}

/// Runs `nats-server --version` and refuses versions older than [`MIN_VERSION`].
pub async fn check_version(bin: &Path) -> Result<String, NatsError> {
    let output = tokio::process::Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| NatsError::Binary(format!("cannot run {}: {e}; {INSTALL_HINT}", bin.display())))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let version = parse_version(&text).ok_or_else(|| {
        NatsError::Binary(format!("{} --version printed {text:?}, not a nats-server version", bin.display()))
    })?;
    if version < MIN_VERSION {
        let (a, b, c) = MIN_VERSION;
        return Err(NatsError::Binary(format!(
            "{} is nats-server {text}; Presence needs {a}.{b}.{c} or newer (per-key TTL and expiry markers); {INSTALL_HINT}",
            bin.display()
        )));
    }
    Ok(text)
}

/// `nats-server: v2.15.1` (or `2.15.1-beta`) → (2, 15, 1).
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let v = text.rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u64>());
    Some((parts.next()?.ok()?, parts.next()?.ok()?, parts.next()?.ok()?))
}

/// The configuration file of the embedded server: on a center, JetStream domain `center` and a
/// leafnode listener; on a leaf, its own domain and a leafnode remote to the center, with a short
/// ping interval so that a dead link is noticed in seconds. Leafnode traffic is compressed
/// (`s2_auto`) on both sides.
/// `password` is the service's own; `leaf_password` what a center's leafnode listener accepts.
pub fn render_config(
    config: &Config,
    server_name: &str,
    data_dir: &Path,
    password: &Secret,
    leaf_password: Option<&Secret>,
) -> String {
    let nats = &config.nats;
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let authorization = authorization(config, password, leaf_password);
    let host = nats.host.to_string();
    let (domain, leafnodes, pings) = leafnodes(config);
    let sync = match nats.jetstream.sync_interval {
        None => String::new(),
        Some(SyncInterval::Always) => "  sync_interval: always\n".into(),
        Some(SyncInterval::Every(every)) => format!("  sync_interval: \"{}s\"\n", every.as_secs().max(1)),
    };
    format!(
        "# Written by Presence at start-up; edits are overwritten.\n\
         server_name: {name}\n\
         listen: {listen}\n\
         pid_file: {pid}\n\
         logtime: false\n\
         max_payload: 1MB\n\
         {pings}\
         jetstream {{\n  domain: {domain}\n  store_dir: {store}\n  max_memory_store: {mem}\n  max_file_store: {file}\n{sync}{encryption}}}\n\
         {leafnodes}\
         {client_tls}\
         {authorization}",
        name = quote(server_name),
        listen = quote(&format!("{host}:{}", nats.port)),
        pid = quote(&data_dir.join(PID_FILE).to_string_lossy()),
        domain = quote(&domain),
        store = quote(&data_dir.to_string_lossy()),
        mem = nats.jetstream.max_memory,
        file = nats.jetstream.max_file,
        client_tls = client_tls(config),
        encryption = super::at_rest::config_lines(config),
    )
}

/// The node's JetStream domain, its `leafnodes` block, and (on a leaf) its ping settings: a
/// center listens for leaves (admitting those with the leaf password), a leaf dials the center.
fn leafnodes(config: &Config) -> (String, String, String) {
    let nats = &config.nats;
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
    match config.service.node_type {
        NodeType::Center => (
            CENTER_DOMAIN.to_string(),
            format!(
                "leafnodes {{\n  listen: {}\n  no_advertise: true\n  compression: s2_auto\n{}}}\n",
                quote(&format!("{}:{}", nats.leaf_host.unwrap_or(nats.host), nats.leaf_port)),
                leaf_admission(config)
            ),
            String::new(),
        ),
        NodeType::Leaf => {
            let urls = config
                .center_urls()
                .iter()
                .enumerate()
                .map(|(i, u)| match (&nats.leaf_tls, &nats.leaf_password) {
                    (Some(_), _) => quote(&over_tls(u)),
                    // The URL carries the leaf password: it reaches the server through its
                    // environment (`leaf_remotes`), never through this file.
                    (None, Some(_)) => format!("${}", remote_var(i)),
                    (None, None) => quote(u),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let tls = nats.leaf_tls.as_ref().map_or_else(String::new, |t| {
                format!(
                    ", tls {{ {}, handshake_first: true }}",
                    tls_files(&t.cert_file, &t.key_file, Some(&t.ca_file))
                )
            });
            (
                config.leaf_domain(),
                format!("leafnodes {{\n  remotes: [ {{ urls: [{urls}], compression: s2_auto{tls} }} ]\n}}\n"),
                format!("ping_interval: {}\nping_max: 2\n", quote(LEAF_PING_INTERVAL)),
            )
        }
    }
}

/// TLS on the client port with `nats.tls` (clients still authenticate with a password).
fn client_tls(config: &Config) -> String {
    match &config.nats.tls {
        Some(NatsTls { cert_file: Some(cert), key_file: Some(key), .. }) => {
            format!("tls {{ {}, timeout: 2, min_version: \"1.2\" }}\n", tls_files(cert, key, None))
        }
        _ => String::new(),
    }
}

/// Who a center's leafnode listener admits. With `nats.leaf_tls`: mutual TLS, and the name in
/// the leaf's certificate is mapped to one of the users [`authorization`] lists for the leaves
/// (certificate-only, leafnode connections only). Without: the leaf password (loopback-only
/// listeners, see `config::tls`).
fn leaf_admission(config: &Config) -> String {
    match &config.nats.leaf_tls {
        Some(tls) => format!(
            "  tls {{ {}, verify_and_map: true, timeout: 2, handshake_first: true, min_version: \"1.2\" }}\n",
            tls_files(&tls.cert_file, &tls.key_file, Some(&tls.ca_file))
        ),
        // The leaf password's user is among the server's users ([`authorization`]), with a
        // leaf's permissions: a leafnode `authorization {}` block would admit it with none.
        None => String::new(),
    }
}

/// `cert_file`, `key_file` and (when given) `ca_file` of a `tls {}` block.
fn tls_files(cert: &Path, key: &Path, ca: Option<&Path>) -> String {
    let quote = |p: &Path| serde_json::to_string(&p.to_string_lossy()).expect("strings serialize");
    let mut text = format!("cert_file: {}, key_file: {}", quote(cert), quote(key));
    if let Some(ca) = ca {
        text.push_str(&format!(", ca_file: {}", quote(ca)));
    }
    text
}

/// A center URL dialled over TLS: `nats-leaf://h:p` (or no scheme) becomes `tls://h:p`.
fn over_tls(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => format!("tls://{rest}"),
        None => format!("tls://{url}"),
    }
}

/// The environment variable that carries a leaf's `i`th center URL, with its credentials.
fn remote_var(i: usize) -> String {
    format!("PRESENCE_LEAF_REMOTE_{i}")
}

/// What a leaf's server gets in its environment: each center URL with the leaf password in it,
/// as the configuration file names them (nothing without a leaf password, or over TLS).
pub(crate) fn leaf_remotes(config: &Config) -> Vec<(String, Secret)> {
    let nats = &config.nats;
    match (config.service.node_type, &nats.leaf_tls, &nats.leaf_password) {
        (NodeType::Leaf, None, Some(password)) => config
            .center_urls()
            .iter()
            .enumerate()
            .map(|(i, u)| (remote_var(i), Secret::new(with_leaf_credentials(u, password))))
            .collect(),
        _ => Vec::new(),
    }
}

/// `url` with `leaf:{password}@` after its scheme, the password percent-encoded.
fn with_leaf_credentials(url: &str, password: &Secret) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let encoded: String = password
        .expose()
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{scheme}://{LEAF_USER}:{encoded}@{rest}")
}

/// The embedded server's pid file, inside the data directory.
pub const PID_FILE: &str = "nats-server.pid";

#[cfg(test)]
mod tests;
