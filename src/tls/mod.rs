//! TLS: the process's one crypto provider, the HTTPS server's certificate (reloadable), and the
//! development certificates of `presence certs`.
//!
//! rustls runs on the `ring` provider only: async-nats brings it, and a second provider in the
//! tree (`aws-lc-rs`) would leave rustls unable to choose one (see docs/architecture.md,
//! "Links and storage").

pub mod certs;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Installs `ring` as the process-wide rustls provider (once; later calls do nothing).
pub fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only if another provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the certificate in {cert} does not go with the key in {key}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The HTTPS server's certificate and key, read from their files at start and on every
/// [`ServerTls::reload`], with TLS 1.2 and 1.3 and ALPN `h2`, `http/1.1`.
#[derive(Debug)]
pub struct ServerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let current = RwLock::new(Arc::new(server_config(cert_file, key_file)?));
        Ok(Self { cert_file: cert_file.to_path_buf(), key_file: key_file.to_path_buf(), current })
    }

    /// Re-reads the files; connections accepted afterwards use the new certificate. On an error
    /// the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(server_config(&self.cert_file, &self.key_file)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// When the first certificate in the PEM file `path` expires (Unix seconds); none if the file
/// cannot be read or parsed.
pub(crate) fn not_after(path: &Path) -> Option<i64> {
    let der = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn read_error(path: &Path, source: rustls_pki_types::pem::Error) -> TlsError {
    TlsError::Read { path: path.to_path_buf(), source }
}

fn server_config(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, TlsError> {
    install_provider();
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|source| read_error(cert_file, source))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| read_error(cert_file, source))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| read_error(key_file, source))?;
    let mut config =
        ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Mismatch {
                cert: cert_file.to_path_buf(),
                key: key_file.to_path_buf(),
                source,
            })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
