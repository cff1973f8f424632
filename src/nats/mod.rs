//! NATS: the embedded server's supervisor, the service's client connection to whichever server
//! it uses (embedded, or external with `nats.embedded: false`), and the `Caller` that every
//! request to it goes through.

pub(crate) mod at_rest;
mod binding;
pub(crate) mod breaker;
mod call;
mod last;
mod placement;
mod publish;
mod scan;
pub mod server;
pub(crate) mod settings;
mod status;
mod supervisor;
pub(crate) mod watch;

use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event};

pub(crate) use binding::Binding;
pub(crate) use call::{BoxError, CallError, Caller, retry_for, wrong_last_sequence};
pub(crate) use last::last_on;
pub(crate) use placement::Placement;
pub(crate) use publish::{API_PREFIX, acked, kv_put_prefix};
pub(crate) use scan::{Scan, ScanError};
pub(crate) use status::ServerStatus;
pub(crate) use supervisor::EmbeddedServer;

use crate::config::{Config, Secret};

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("{0}")]
    Binary(String),
    #[error("embedded NATS: {0}")]
    Start(String),
    #[error("embedded NATS: {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Credentials(String),
    #[error("cannot connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: BoxError,
    },
}

/// Connects the service's client, retrying until `nats.startup_timeout`. After that the client
/// reconnects by itself for as long as the service runs.
/// `credentials` are the embedded server's user and password for the service (none for an
/// external NATS, whose come from the configuration: see [`authenticated`]).
pub(crate) async fn connect(
    url: &str,
    config: &Config,
    node_id: &str,
    credentials: Option<(&str, &Secret)>,
) -> Result<Client, NatsError> {
    let deadline = Instant::now() + config.nats.startup_timeout;
    let servers: Vec<&str> = url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    loop {
        let options = authenticated(config, credentials).await?;
        let options = options
            .name(format!("presence {node_id}"))
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(config.nats.request_timeout))
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    Event::Connected => tracing::info!("NATS connected"),
                    Event::Disconnected => tracing::warn!("NATS disconnected; reconnecting"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        let attempt = tokio::time::timeout(Duration::from_secs(3), async {
            let client = options.connect(servers.as_slice()).await.map_err(BoxError::from)?;
            client.flush().await.map_err(BoxError::from)?;
            Ok::<_, BoxError>(client)
        });
        let source = match attempt.await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => e,
            Err(_) => "no answer within 3s".into(),
        };
        if Instant::now() >= deadline {
            return Err(NatsError::Connect { url: url.to_string(), source });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The service's credentials and TLS settings: the embedded server's generated user, else
/// `nats.credentials`, `nats.token` or `nats.user`/`nats.password`; with `nats.tls`, TLS is
/// required (a forged INFO cannot downgrade the link) and the server is checked against
/// `nats.tls.ca_file` alone. Against an external NATS, `nats.tls.cert_file` is the service's
/// client certificate; on the embedded server it is the server's own.
async fn authenticated(
    config: &Config,
    embedded: Option<(&str, &Secret)>,
) -> Result<ConnectOptions, NatsError> {
    let nats = &config.nats;
    let mut options = match (embedded, &nats.credentials, &nats.token) {
        (Some((user, password)), ..) => {
            ConnectOptions::with_user_and_password(user.into(), password.expose().into())
        }
        (None, Some(path), _) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| NatsError::Credentials(format!("nats.credentials {}: {e}", path.display())))?,
        (None, None, Some(token)) => ConnectOptions::with_token(token.expose().into()),
        (None, None, None) => match nats.user.as_deref().zip(nats.password.as_ref()) {
            Some((user, password)) => {
                ConnectOptions::with_user_and_password(user.into(), password.expose().into())
            }
            None => ConnectOptions::new(),
        },
    };
    if let Some(tls) = &nats.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (false, Some(cert), Some(key)) = (nats.embedded, &tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(options)
}

/// What one look at the connection found, for `/health/nats`.
#[derive(Debug, Clone)]
pub struct ConnectionProbe {
    pub connected: bool,
    /// The connected server's version, as it announced itself.
    pub server_version: Option<String>,
    /// One ping to the server and back.
    pub rtt: Option<Duration>,
    /// JetStream answered an account-info request.
    pub jetstream: bool,
}

/// Pings the server and asks JetStream for account info, each within `limit`.
pub async fn probe(client: &Client, js: &async_nats::jetstream::Context, limit: Duration) -> ConnectionProbe {
    let connected = client.connection_state() == async_nats::connection::State::Connected;
    if !connected {
        return ConnectionProbe { connected, server_version: None, rtt: None, jetstream: false };
    }
    let started = Instant::now();
    let pinged = tokio::time::timeout(limit, client.flush()).await.is_ok_and(|r| r.is_ok());
    let rtt = pinged.then(|| started.elapsed());
    let jetstream = tokio::time::timeout(limit, js.query_account()).await.is_ok_and(|r| r.is_ok());
    ConnectionProbe { connected, server_version: Some(client.server_info().version), rtt, jetstream }
}
