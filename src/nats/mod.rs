//! NATS: the embedded server's supervisor, and the service's client connection to whichever
//! server it uses (embedded, or external with `nats.embedded: false`).

pub mod server;
mod supervisor;

use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event};

pub use supervisor::EmbeddedServer;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("{0}")]
    Binary(String),
    #[error("embedded NATS: {0}")]
    Start(String),
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
}

/// Connects the service's client, retrying until `nats.startup_timeout`. After that the client
/// reconnects by itself for as long as the service runs.
pub async fn connect(url: &str, config: &Config, node_id: &str) -> Result<Client, NatsError> {
    let deadline = Instant::now() + config.nats.startup_timeout;
    let servers: Vec<&str> = url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    loop {
        let options = ConnectOptions::new()
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
            let client = options
                .connect(servers.as_slice())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            client.flush().await.map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok::<_, std::io::Error>(client)
        });
        let reason = match attempt.await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 3s".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(NatsError::Connect { url: url.to_string(), reason });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
