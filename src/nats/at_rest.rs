//! Encryption at rest of the embedded server's JetStream store, and the start-up guard against
//! its data-loss trap (docs/architecture.md, "Links and storage").
//!
//! The key reaches nats-server through its environment ([`KEY_VAR`], [`PREVIOUS_KEY_VAR`]),
//! never through the configuration file written to disk. nats-server started with a wrong key,
//! or none, on an encrypted store logs a warning, reports ready, and simply lacks the encrypted
//! streams; creating the bucket then makes the server delete the stream's directory. So before
//! anything is created, [`check_store_loaded`] compares the stream directories on disk with the
//! streams the server loaded, and stops the start if one is missing.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use async_nats::Client;
use futures::TryStreamExt;

use super::NatsError;
use crate::config::{Config, KEY_VAR, PREVIOUS_KEY_VAR, Secret};

/// The `jetstream {}` lines that turn encryption on (the key by reference only).
pub(crate) fn config_lines(config: &Config) -> String {
    let Some(encryption) = &config.nats.jetstream.encryption else { return String::new() };
    let mut lines = format!("  cipher: {}\n  key: ${KEY_VAR}\n", encryption.cipher.as_str());
    if encryption.previous_key.is_some() {
        lines.push_str(&format!("  prev_key: ${PREVIOUS_KEY_VAR}\n"));
    }
    lines
}

/// The variables to set in the child's environment; every other one of ours is removed.
pub(crate) fn environment(config: &Config) -> Vec<(&'static str, Option<Secret>)> {
    let encryption = config.nats.jetstream.encryption.as_ref();
    vec![
        (KEY_VAR, encryption.map(|e| e.key.clone())),
        (PREVIOUS_KEY_VAR, encryption.and_then(|e| e.previous_key.clone())),
    ]
}

/// The directory of the streams of the account the service uses (`$G`).
fn streams_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("jetstream").join("$G").join("streams")
}

/// Fails if a stream directory of the store did not load into the server: nothing may be
/// created before this passed.
pub(crate) async fn check_store_loaded(client: &Client, data_dir: &Path) -> Result<(), NatsError> {
    let dir = streams_dir(data_dir);
    let on_disk: BTreeSet<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(NatsError::Io { context: format!("cannot list {}", dir.display()), source });
        }
    };
    if on_disk.is_empty() {
        return Ok(());
    }
    let js = async_nats::jetstream::new(client.clone());
    let loaded: BTreeSet<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|e| NatsError::Start(format!("cannot list the streams the server loaded: {e}")))?;
    let missing: Vec<&String> = on_disk.difference(&loaded).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(NatsError::Start(format!(
        "the store in {} holds stream(s) {} that nats-server did not load. The likely cause: the store is \
         encrypted and nats.jetstream.encryption.key is wrong or missing (or the store was encrypted and \
         encryption is now off). Nothing was created or changed; start again with the key the store was \
         encrypted with (as key, or as previous_key to re-key it).",
        dir.display(),
        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    )))
}
