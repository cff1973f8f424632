//! One signed request to an endpoint: the name resolved and every address checked (no private
//! one without `allow_private`), a connection to the address checked, TLS with the system's
//! roots (or the endpoint's CA), a POST with the Standard Webhooks headers, 15 s at most for the
//! answer, and no redirect followed (a 3xx is an answer like any other).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;

use super::{address::is_public, sign::Signer};
use crate::config::WebhookConfig;

/// The longest an endpoint may take to answer.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(15);

/// An endpoint ready to be sent to.
pub(crate) struct Endpoint {
    uri: Uri,
    host: String,
    port: u16,
    signer: Signer,
    allow_private: bool,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// What the endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    /// How long `Retry-After` asks to wait.
    pub retry_after: Option<Duration>,
}

/// Why an endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EndpointError {
    #[error("webhook {0}: the url is not one")]
    Url(String),
    #[error("webhook {0}: {1}")]
    Secret(String, &'static str),
    #[error("webhook {0}: cannot read its CA bundle")]
    Ca(String, #[source] std::io::Error),
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error("{0} resolves to no public address, and the endpoint does not say allow_private: refused")]
    Private(String),
    #[error("cannot resolve {0}")]
    Resolve(String, #[source] std::io::Error),
    #[error("cannot connect to {0}")]
    Connect(SocketAddr, #[source] std::io::Error),
    #[error("the TLS handshake with {0} failed")]
    Tls(String, #[source] std::io::Error),
    #[error("the request failed")]
    Http(#[source] hyper::Error),
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
}

impl Endpoint {
    pub(crate) fn new(config: &WebhookConfig) -> Result<Self, EndpointError> {
        let name = config.name.clone();
        let uri: Uri = config.url.trim().parse().map_err(|_| EndpointError::Url(name.clone()))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or_else(|| EndpointError::Url(name.clone()))?;
        let host = host.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let signer = Signer::new(&config.secret, config.previous_secret.as_ref())
            .map_err(|why| EndpointError::Secret(name.clone(), why))?;
        let tls = match https {
            false => None,
            true => {
                Some(connector(config.ca_file.as_deref()).map_err(|e| EndpointError::Ca(name.clone(), e))?)
            }
        };
        Ok(Self { uri, host, port, signer, allow_private: config.allow_private, tls })
    }

    /// POSTs `body` (JSON) as message `id`, signed now.
    pub(crate) async fn post(&self, id: &str, body: Bytes) -> Result<Answer, DeliveryError> {
        tokio::time::timeout(TIMEOUT, self.exchange(id, body)).await.map_err(|_| DeliveryError::Timeout)?
    }

    async fn exchange(&self, id: &str, body: Bytes) -> Result<Answer, DeliveryError> {
        let addr = self.address().await?;
        let tcp = TcpStream::connect(addr).await.map_err(|e| DeliveryError::Connect(addr, e))?;
        // A small request answered at once: nothing to gain from Nagle's algorithm holding a
        // write back for an acknowledgement.
        tcp.set_nodelay(true).map_err(|e| DeliveryError::Connect(addr, e))?;
        let timestamp = chrono::Utc::now().timestamp();
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let request = Request::post(path)
            .header(header::HOST, self.uri.authority().map_or(self.host.as_str(), |a| a.as_str()))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("presence-webhooks/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", self.signer.sign(id, timestamp, &body))
            .body(Full::new(body))
            .expect("a request of valid parts");
        match &self.tls {
            None => send(TokioIo::new(tcp), request).await,
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| DeliveryError::Tls(self.host.clone(), std::io::Error::other(e)))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| DeliveryError::Tls(self.host.clone(), e))?;
                send(TokioIo::new(stream), request).await
            }
        }
    }

    /// The first address the host resolves to that the endpoint may reach.
    async fn address(&self) -> Result<SocketAddr, DeliveryError> {
        let resolved = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| DeliveryError::Resolve(self.host.clone(), e))?;
        let mut allowed = resolved.filter(|a| self.allow_private || is_public(a.ip()));
        allowed.next().ok_or_else(|| DeliveryError::Private(self.host.clone()))
    }
}

async fn send<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<Answer, DeliveryError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(DeliveryError::Http)?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(DeliveryError::Http)?;
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, std::time::SystemTime::now()));
    Ok(Answer { status: response.status().as_u16(), retry_after })
}

/// A `Retry-After` value (RFC 9110: seconds, or an HTTP date) as a wait from `now`.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// TLS to endpoints: the CA bundle given, else the system's roots.
fn connector(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector, std::io::Error> {
    crate::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = match ca_file {
        Some(path) => CertificateDer::pem_file_iter(path)
            .map_err(std::io::Error::other)?
            .collect::<Result<_, _>>()
            .map_err(std::io::Error::other)?,
        None => rustls_native_certs::load_native_certs().certs,
    };
    for cert in certs {
        // A system bundle may hold a certificate rustls cannot use: the others still count.
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::retry_after;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example).
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO), "a date gone by");
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", SystemTime::now()), None);
    }
}
