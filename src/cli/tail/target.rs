//! The node `presence watch` follows: its address, over plain HTTP or TLS with a given CA.

use std::{path::Path, sync::Arc};

use anyhow::{Context, bail};
use http_body_util::Empty;
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tokio::net::TcpStream;

/// The node to connect to.
pub(super) struct Target {
    host: String,
    port: u16,
    pub(super) authority: String,
    tls: Option<(tokio_rustls::TlsConnector, rustls_pki_types::ServerName<'static>)>,
}

impl Target {
    pub(super) fn parse(url: &str, ca: Option<&Path>) -> anyhow::Result<Self> {
        let (scheme, rest) = url.split_once("://").context("--url must start with http:// or https://")?;
        let authority = rest.trim_end_matches('/').to_string();
        anyhow::ensure!(
            !authority.is_empty() && !authority.contains('/'),
            "--url must be scheme://host[:port]"
        );
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_string(), p.parse().context("--url: bad port")?)
            }
            _ => (authority.clone(), if scheme == "https" { 443 } else { 80 }),
        };
        let tls = match scheme {
            "http" => None,
            "https" => {
                let ca =
                    ca.context("an https:// node needs --ca, the CA bundle that signed its certificate")?;
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("cannot read {}", ca.display()))?;
                for cert in certs {
                    roots.add(cert.context("--ca: not a PEM certificate bundle")?)?;
                }
                let config =
                    rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
                let name = rustls_pki_types::ServerName::try_from(host.clone()).context("--url: bad host")?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => bail!("--url must start with http:// or https://"),
        };
        Ok(Self { host, port, authority, tls })
    }

    pub(super) async fn send(
        &self,
        request: Request<Empty<Bytes>>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot connect to {}", self.authority))?;
        match &self.tls {
            None => exchange(TokioIo::new(tcp), request).await,
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), tcp).await.context("TLS handshake failed")?;
                exchange(TokioIo::new(stream), request).await
            }
        }
    }
}

async fn exchange<IO>(
    io: IO,
    request: Request<Empty<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}
