//! A real HTTPS client for tests: rustls (ring) with a chosen CA and ALPN, then hyper's HTTP/2
//! or HTTP/1.1 client on the negotiated protocol.

use std::{net::SocketAddr, path::Path, sync::Arc};

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer, pki_types::ServerName};

/// What one HTTPS request returned.
pub(crate) struct Answer {
    pub alpn: Option<Vec<u8>>,
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// A TLS connector that trusts `ca` alone and offers `alpn`.
fn connector(ca: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    presence::tls::install_provider();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `GET path` on `addr` over TLS as `host`, trusting `ca`, offering `alpn`. Err if the TLS
/// handshake fails (an unknown CA, a plain-text server).
pub(crate) async fn get(
    addr: SocketAddr,
    host: &str,
    ca: &Path,
    alpn: &[&[u8]],
    path: &str,
) -> Result<Answer, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string()).unwrap();
    let tls = connector(ca, alpn).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let request = hyper::Request::get(format!("https://{host}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender.send_request(request).await.map_err(|e| e.to_string())?
    } else {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender.send_request(request).await.map_err(|e| e.to_string())?
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer { alpn, status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}
