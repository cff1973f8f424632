//! Start-up and shutdown: [`Application::build`] brings up NATS (embedded or external), opens the
//! bucket and binds the HTTP listener; [`Application::run_until`] serves until told to stop, then
//! drains requests, the NATS client and the embedded server, in that order.

use std::{future::Future, net::SocketAddr, time::Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{
        Authenticator,
        secret::{self, SecretSource},
    },
    config::{APPROX_PRESENCE_COST, Config},
    http::{self, AppState, Shared},
    nats::{self, EmbeddedServer},
    store::PresenceStore,
};

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    client: async_nats::Client,
    embedded: Option<EmbeddedServer>,
    config: Config,
}

impl Application {
    /// Everything up to, but not including, serving requests. The HTTP port may be 0 (tests);
    /// [`Application::local_addr`] says which one the OS chose.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let node_id = config.node_id();
        let (secret, source) =
            secret::resolve(&config).context("auth: cannot load or create the JWT secret")?;
        match &source {
            SecretSource::Configured => tracing::info!("JWT secret from auth.jwt_secret"),
            SecretSource::Generated(path) | SecretSource::Existing(path) => tracing::warn!(
                path = %path.display(),
                "running with a generated development JWT secret; set auth.jwt_secret (e.g. JWT_SECRET) in production"
            ),
        }
        if config.nats.cluster_port.is_some() {
            tracing::warn!(
                "nats.cluster_port is set but a single center node opens no cluster listener"
            );
        }
        tracing::info!(
            max_cost = config.cache.max_cost,
            approx_presences = config.cache.max_cost / APPROX_PRESENCE_COST,
            "cache size"
        );

        let embedded = if config.nats.embedded {
            Some(EmbeddedServer::start(&config, &node_id).await?)
        } else {
            None
        };
        let url = embedded
            .as_ref()
            .map_or(config.nats.url.clone(), |e| e.client_url().to_string());
        let built = async {
            let client = nats::connect(&url, &config, &node_id).await?;
            let js = async_nats::jetstream::new(client.clone());
            let store = PresenceStore::open(&js, &config.nats.kv, config.nats.request_timeout)
                .await
                .with_context(|| format!("cannot open KV bucket `{}`", config.nats.kv.bucket))?;
            let addr = SocketAddr::new(config.service.host, config.service.port);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (service.host, service.port)"))?;
            let state = AppState::new(Shared {
                store,
                auth: Authenticator::new(&secret, &config.auth),
                nats: client.clone(),
                node_id: node_id.clone(),
                node_type: config.service.node_type,
                default_ttl: config.nats.kv.ttl,
                started: Instant::now(),
            });
            anyhow::Ok((listener, http::router(state), client))
        };
        match built.await {
            Ok((listener, router, client)) => Ok(Self {
                listener,
                router,
                client,
                embedded,
                config,
            }),
            Err(e) => {
                if let Some(server) = embedded {
                    server.stop().await;
                }
                Err(e)
            }
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains in-flight requests (at most
    /// `service.shutdown_timeout`), flushes the NATS client and stops the embedded server.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        tracing::info!(addr = %self.local_addr(), node_id = %self.config.node_id(), "serving");
        let serve = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
        let grace = self.config.service.shutdown_timeout;
        let served = tokio::select! {
            result = serve => result.context("HTTP server failed"),
            () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "requests still in flight after the shutdown timeout; closing");
                Ok(())
            }
        };
        tracing::info!("HTTP server stopped; draining NATS");
        let _ = tokio::time::timeout(grace, self.client.drain()).await;
        if let Some(server) = self.embedded {
            server.stop().await;
        }
        served
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
