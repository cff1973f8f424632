//! Certificate rotation without a restart: on SIGHUP the node re-reads its HTTPS certificate and
//! key, and asks the embedded nats-server to reload, which re-reads the certificates of its
//! client port and leafnode links. (The NATS client re-reads its own files at each reconnect.)

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    nats::ServerStatus,
    tls::{ServerTls, TlsError},
};

/// What a reload touches; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    pub(super) https: Option<Arc<ServerTls>>,
    pub(super) nats: Option<Arc<ServerStatus>>,
}

impl Reloader {
    /// Reloads now. On an error (a missing or mismatched file) the HTTPS port keeps its
    /// previous certificate.
    pub fn reload(&self) -> Result<(), TlsError> {
        if let Some(nats) = &self.nats {
            if nats.reload() {
                tracing::info!("asked the embedded nats-server to reload its certificates");
            } else {
                tracing::warn!("the embedded nats-server is not running; nothing to reload there");
            }
        }
        if let Some(https) = &self.https {
            https.reload()?;
            tracing::info!("HTTPS certificate reloaded");
        }
        Ok(())
    }

    /// Reloads on every SIGHUP until `stop`.
    pub(super) async fn on_sighup(self, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; certificates reload only with a restart");
            return;
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = hangups.recv() => {
                    if let Err(e) = self.reload() {
                        tracing::error!(error = %crate::telemetry::chain(&e), "SIGHUP: reload failed; the previous certificate stays in use");
                    }
                }
            }
        }
    }
}
