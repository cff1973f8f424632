//! Start-up and shutdown: [`Application::build`] brings up NATS (embedded or external), opens the
//! bucket and binds the HTTP listener; [`Application::run_until`] serves until told to stop, then
//! drains requests, the NATS client and the embedded server, in that order.

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{
        Authenticator,
        secret::{self, SecretSource},
    },
    cache::{PresenceCache, watcher},
    config::{APPROX_PRESENCE_COST, CENTER_DOMAIN, Config, NodeType},
    directory::{self, Directory},
    http::{
        self, AppState, RateLimits, Shared,
        listener::{ClientAddr, CountingListener},
    },
    lifecycle::{
        events::Events,
        expiry::{Expirer, ExpiryQueue},
    },
    nats::{self, EmbeddedServer},
    store::{PresenceStore, breaker::Breaker},
    telemetry::Metrics,
    topology::{self, Registry},
};

/// How often idle rate-limit keys are forgotten.
const LIMITS_RETAIN_EVERY: Duration = Duration::from_secs(60);

pub struct Application {
    listener: CountingListener,
    local_addr: SocketAddr,
    router: axum::Router,
    client: async_nats::Client,
    embedded: Option<EmbeddedServer>,
    /// Stops the watcher and other background tasks.
    background: CancellationToken,
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
            tracing::warn!("nats.cluster_port is set but a single center node opens no cluster listener");
        }
        tracing::info!(
            max_cost = config.cache.max_cost,
            approx_presences = config.cache.max_cost / APPROX_PRESENCE_COST,
            "cache size"
        );

        let embedded =
            if config.nats.embedded { Some(EmbeddedServer::start(&config, &node_id).await?) } else { None };
        let url = embedded.as_ref().map_or(config.nats.url.clone(), |e| e.client_url().to_string());
        let background = CancellationToken::new();
        let built = async {
            let client = nats::connect(&url, &config, &node_id).await?;
            // A leaf reaches the bucket and the audit log in the center's JetStream domain.
            let jetstream = match config.service.node_type {
                NodeType::Center => async_nats::jetstream::new(client.clone()),
                NodeType::Leaf => async_nats::jetstream::with_domain(client.clone(), CENTER_DOMAIN),
            };
            let metrics = Arc::new(Metrics::new());
            let deadline = Instant::now() + config.nats.startup_timeout;
            let store = retry_until(deadline, || {
                PresenceStore::open(&jetstream, &config.nats.kv, config.nats.request_timeout, metrics.clone())
            })
            .await
            .with_context(|| format!("cannot open KV bucket `{}`", config.nats.kv.bucket))?;
            let kv = store.kv().clone();
            let events = retry_until(deadline, || {
                Events::open(
                    jetstream.clone(),
                    &config.events.stream,
                    config.events.retention,
                    config.nats.kv.replicas,
                    config.nats.request_timeout,
                )
            })
            .await
            .with_context(|| format!("cannot open the audit-log stream `{}`", config.events.stream))?;
            let cache = PresenceCache::with_metrics(config.cache.max_cost, &metrics);
            let coherence = watcher::Coherence::new(true);
            let expiry = ExpiryQueue::new();
            let stop = background.clone();
            watcher::spawn(
                kv.clone(),
                client.clone(),
                cache.clone(),
                coherence.clone(),
                expiry.clone(),
                stop,
            );
            let expirer = Expirer {
                queue: expiry.clone(),
                kv: kv.clone(),
                events: events.clone(),
                metrics: metrics.clone(),
                coherence: coherence.clone(),
                node_id: node_id.clone(),
            };
            tokio::spawn(expirer.run(background.clone()));
            let registry = Registry::new();
            let local = topology::Local {
                node_id: node_id.clone(),
                node_type: config.service.node_type,
                region: config.service.region.clone(),
                cache: cache.clone(),
                coherence: coherence.clone(),
                started: Instant::now(),
            };
            topology::spawn(client.clone(), local, registry.clone(), background.clone());
            let directory = Directory::new(directory::Parts {
                store,
                cache,
                coherence,
                breaker: Breaker::new(config.nats.breaker.failures, config.nats.breaker.cooldown),
                events,
                expiry,
                metrics: metrics.clone(),
                node_id: node_id.clone(),
            });

            let addr = SocketAddr::new(config.service.host, config.service.port);
            let tcp = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (service.host, service.port)"))?;
            let local_addr = tcp.local_addr()?;
            let listener = CountingListener::new(tcp, metrics.open_connections.clone());
            let state = AppState::new(Shared {
                directory,
                auth: Authenticator::new(&secret, &config.auth),
                limits: RateLimits::new(&config.rate_limit),
                metrics,
                nats: client.clone(),
                jetstream,
                kv,
                node_type: config.service.node_type,
                default_ttl: config.nats.kv.ttl,
                max_cost: config.cache.max_cost,
                registry,
                started: Instant::now(),
            });
            tokio::spawn(retain_limits(state.clone(), background.clone()));
            anyhow::Ok((listener, local_addr, http::router(state), client))
        };
        match built.await {
            Ok((listener, local_addr, router, client)) => {
                Ok(Self { listener, local_addr, router, client, embedded, background, config })
            }
            Err(e) => {
                background.cancel();
                if let Some(server) = embedded {
                    server.stop().await;
                }
                Err(e)
            }
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then drains in-flight requests (at most
    /// `service.shutdown_timeout`), flushes the NATS client and stops the embedded server.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        tracing::info!(addr = %self.local_addr(), node_id = %self.config.node_id(), "serving");
        let serve =
            axum::serve(self.listener, self.router.into_make_service_with_connect_info::<ClientAddr>())
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
        self.background.cancel();
        let _ = tokio::time::timeout(grace, self.client.drain()).await;
        if let Some(server) = self.embedded {
            server.stop().await;
        }
        served
    }
}

/// Retries `attempt` until it succeeds or `deadline` passes (a leaf's link to the center may
/// take a moment to come up after its embedded server started).
async fn retry_until<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    deadline: Instant,
    mut attempt: impl FnMut() -> F,
) -> Result<T, E> {
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => tracing::info!(error = %e, "JetStream not reachable yet; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn retain_limits(state: AppState, stop: CancellationToken) {
    let mut every = tokio::time::interval(LIMITS_RETAIN_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => state.limits.retain_recent(),
        }
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
