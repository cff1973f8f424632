//! Where the JWT secret comes from: `auth.jwt_secret`, or else a random secret generated on first
//! start and kept (mode 0600) in the data directory, where `presence token` finds it too. There
//! is never a built-in secret.

use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::config::{Config, Secret};

/// The generated secret's file, inside `nats.data_dir`.
pub const SECRET_FILE: &str = "jwt-secret";

/// Where the secret came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Configured,
    Generated(PathBuf),
    Existing(PathBuf),
}

/// The configured secret, or the one kept in the data directory (created if need be).
pub fn resolve(config: &Config) -> std::io::Result<(Secret, SecretSource)> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok((secret.clone(), SecretSource::Configured));
    }
    load_or_generate(&config.nats.data_dir.join(SECRET_FILE))
}

/// The secret a running node uses, found as [`resolve`] finds it, but never made up: for a
/// client of the node (`presence token`), a new secret would sign tokens the node refuses.
pub fn find(config: &Config) -> std::io::Result<(Secret, SecretSource)> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok((secret.clone(), SecretSource::Configured));
    }
    let path = config.nats.data_dir.join(SECRET_FILE);
    if !path.exists() {
        let shown = std::path::absolute(&path).unwrap_or(path);
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no JWT secret: auth.jwt_secret is not configured and {} does not exist; run this where \
                 the node runs, or name its data directory (--data-dir) or its configuration (--config)",
                shown.display()
            ),
        ));
    }
    let secret = read(&path)?;
    Ok((secret, SecretSource::Existing(path)))
}

/// The secret kept at `path`, generated (32 random bytes, hex) and written with mode 0600 if
/// there is none yet.
pub(crate) fn load_or_generate(path: &Path) -> std::io::Result<(Secret, SecretSource)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let fresh = hex::encode(bytes);
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            file.write_all(fresh.as_bytes())?;
            file.sync_all()?;
            Ok((Secret::new(fresh), SecretSource::Generated(path.to_path_buf())))
        }
        // Another process (or an earlier start) made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((read(path)?, SecretSource::Existing(path.to_path_buf())))
        }
        Err(e) => Err(e),
    }
}

/// The secret kept at `path`, which exists.
fn read(path: &Path) -> std::io::Result<Secret> {
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the JWT secret file is readable by others; chmod 600 it");
    }
    let text = std::fs::read_to_string(path)?;
    let secret = text.trim().to_string();
    if secret.len() < 32 {
        return Err(std::io::Error::other(format!(
            "{} holds fewer than 32 bytes; delete it to generate a new secret",
            path.display()
        )));
    }
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_secret_shorter_than_32_bytes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        std::fs::write(&path, "a".repeat(31)).unwrap();
        let error = load_or_generate(&path).unwrap_err().to_string();
        assert!(error.contains("fewer than 32 bytes"), "{error}");
        std::fs::write(&path, "a".repeat(32)).unwrap();
        assert_eq!(load_or_generate(&path).unwrap().0.expose(), "a".repeat(32));
    }

    #[test]
    fn generated_once_private_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(SECRET_FILE);
        let (first, source) = load_or_generate(&path).unwrap();
        assert_eq!(source, SecretSource::Generated(path.clone()));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (second, source) = load_or_generate(&path).unwrap();
        assert_eq!(source, SecretSource::Existing(path));
        assert_eq!(first.expose(), second.expose());
        assert_eq!(first.expose().len(), 64);
    }
}
