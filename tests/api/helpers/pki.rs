//! Certificates for tests: a development CA and one certificate per host, made by the same code
//! as `presence certs`, in a temporary directory.

use std::path::PathBuf;

use presence::config::LeafTls;
use tempfile::TempDir;

pub(crate) struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A CA and a certificate for each of `hosts` (each also valid for localhost and 127.0.0.1).
    pub(crate) fn new(hosts: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        presence::tls::certs::generate(dir.path(), &hosts).unwrap();
        Self { dir }
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub(crate) fn cert(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("{host}.pem"))
    }

    pub(crate) fn key(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("{host}-key.pem"))
    }

    /// Replaces `host`'s certificate and key files with `other`'s, in place and atomically
    /// (written beside, then renamed), as a certificate manager would.
    pub(crate) fn replace_with(&self, other: &Pki, host: &str) {
        for (from, to) in [(other.cert(host), self.cert(host)), (other.key(host), self.key(host))] {
            let staged = to.with_extension("staged");
            std::fs::copy(&from, &staged).unwrap();
            std::fs::rename(&staged, &to).unwrap();
        }
    }

    /// `nats.leaf_tls` of a center presenting `host`'s certificate and admitting `leaves`.
    pub(crate) fn center(&self, host: &str, leaves: &[&str]) -> LeafTls {
        LeafTls { leaves: leaves.iter().map(|l| l.to_string()).collect(), ..self.leaf(host) }
    }

    /// `nats.leaf_tls` of a leaf presenting `host`'s certificate.
    pub(crate) fn leaf(&self, host: &str) -> LeafTls {
        LeafTls {
            cert_file: self.cert(host),
            key_file: self.key(host),
            ca_file: self.ca(),
            leaves: Vec::new(),
        }
    }
}
