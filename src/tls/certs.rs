//! `presence certs`: a development certificate authority and one certificate per host, so that a
//! TLS center and its leaves can be tried on one machine in minutes. Not for production: there,
//! certificates come from the organisation's own CA.
//!
//! Every host certificate is good for both ends of a link (extended key usages `serverAuth` and
//! `clientAuth`): a center presents it on its leafnode listener and its HTTPS port, a leaf when it
//! dials the center, where `verify_and_map` reads the host name from its subject alternative
//! names. Each also names `localhost` and `127.0.0.1`, so that the demo works on loopback.

use std::path::{Path, PathBuf};

use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long the generated certificates are valid, from today.
const VALID_DAYS: i64 = 365;

/// The files written: the CA's certificate and key, then a certificate and key per host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub hosts: Vec<HostFiles>,
}

/// One host's certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFiles {
    pub host: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no host given: name at least one, as in --hosts center.example,leaf-eu.example")]
    NoHosts,
    #[error("{0:?} is not a host name or IP address for a certificate")]
    BadHost(String),
    #[error("cannot generate a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `ca.pem`, `ca-key.pem` and, for each host, `{host}.pem` and `{host}-key.pem` into
/// `dir` (created if missing). Keys are written readable by their owner only.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<CertFiles, CertError> {
    if hosts.is_empty() {
        return Err(CertError::NoHosts);
    }
    for host in hosts {
        let bad = host.is_empty() || host.contains(['/', '\\', ' ']) || host.starts_with('.');
        if bad {
            return Err(CertError::BadHost(host.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write { path: dir.to_path_buf(), source })?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "Presence development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let written = CertFiles {
        ca_cert: write(dir, "ca.pem", &ca_cert.pem(), false)?,
        ca_key: write(dir, "ca-key.pem", &ca_key.serialize_pem(), true)?,
        hosts: Vec::new(),
    };
    let issuer = Issuer::new(ca_params, ca_key);
    hosts.iter().try_fold(written, |mut written, host| {
        written.hosts.push(host_certificate(dir, host, &issuer)?);
        Ok(written)
    })
}

fn host_certificate(dir: &Path, host: &str, issuer: &Issuer<'_, KeyPair>) -> Result<HostFiles, CertError> {
    let mut names = vec![host.to_string()];
    for extra in ["localhost", "127.0.0.1"] {
        if host != extra {
            names.push(extra.to_string());
        }
    }
    let mut params = CertificateParams::new(names).map_err(|_| CertError::BadHost(host.to_string()))?;
    params.distinguished_name.push(DnType::CommonName, host);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(HostFiles {
        host: host.to_string(),
        cert: write(dir, &format!("{host}.pem"), &cert.pem(), false)?,
        key: write(dir, &format!("{host}-key.pem"), &key.serialize_pem(), true)?,
    })
}

/// From the start of today (UTC) for [`VALID_DAYS`].
fn validity(params: &mut CertificateParams) {
    let day = |d: chrono::NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let today = chrono::Utc::now().date_naive();
    params.not_before = day(today);
    params.not_after = day(today + chrono::Days::new(VALID_DAYS as u64));
}

/// Writes atomically (a temporary file renamed into place), so that a server re-reading the
/// file never sees half of it; keys are created with mode 0600.
fn write(dir: &Path, name: &str, text: &str, private: bool) -> Result<PathBuf, CertError> {
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.tmp"));
    let error = |source| CertError::Write { path: path.clone(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&temporary).map_err(error)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, &path).map_err(error)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_and_host_certificates_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["center.example".to_string(), "10.0.0.7".to_string()];
        let written = generate(dir.path(), &hosts).unwrap();
        assert_eq!(written.hosts.len(), 2);
        for files in &written.hosts {
            let pem = std::fs::read_to_string(&files.cert).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{} must be private", files.key.display());
            }
        }
        assert!(matches!(generate(dir.path(), &[]), Err(CertError::NoHosts)));
        assert!(matches!(generate(dir.path(), &["../x".into()]), Err(CertError::BadHost(_))));
    }
}
