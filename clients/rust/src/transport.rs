//! Connections to a node: TCP, with TLS (rustls, ring; the system's roots or a given CA) for
//! `https://` URLs, for REST calls and the WebSocket alike.

use std::{path::Path, pin::Pin, sync::Arc, time::Duration};

use hyper::Uri;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::Error;

/// A byte stream to a node, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub(crate) type Stream = Pin<Box<dyn Io>>;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's base URL, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// As given, without a trailing slash (`https://presence.example.com`).
    pub base: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Node {
    pub(crate) fn parse(url: &str) -> Result<Self, Error> {
        let base = url.trim().trim_end_matches('/').to_string();
        let uri: Uri = base.parse().map_err(|_| Error::Url(url.into()))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(Error::Url(format!("{url} (http:// or https://)"))),
        };
        let host = uri.host().ok_or_else(|| Error::Url(url.into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self { base, host, port, tls })
    }

    /// `Host` as requests name it.
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }

    /// The WebSocket's URL.
    pub(crate) fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/api/v2/ws", self.authority())
    }

    /// A connection to the node.
    pub(crate) async fn connect(&self, tls: &Tls) -> Result<Stream, Error> {
        let unreachable = |reason: String| Error::Unreachable { url: self.base.clone(), reason };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if !self.tls {
            return Ok(Box::pin(tcp));
        }
        let name = ServerName::try_from(self.host.clone()).map_err(|_| Error::Url(self.base.clone()))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.0.connect(name, tcp))
            .await
            .map_err(|_| unreachable("the TLS handshake timed out".into()))?
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
        Ok(Box::pin(stream))
    }
}

/// The TLS settings for `https://` nodes.
#[derive(Clone)]
pub(crate) struct Tls(tokio_rustls::TlsConnector);

impl Tls {
    /// The system's roots, or only the CA in `ca_file`.
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<Self, Error> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let bad = |e: String| Error::Url(format!("CA file {}: {e}", path.display()));
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                    roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Url(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self(tokio_rustls::TlsConnector::from(Arc::new(config))))
    }
}
