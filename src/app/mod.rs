//! Start-up and shutdown: [`Application::build`] brings the node up step by step (`startup`);
//! [`Application::run_until`] serves until told to stop, then drains requests, the background
//! tasks, the NATS client and the embedded server, in that order.

mod background;
mod claim;
mod reload;
mod startup;

pub use reload::Reloader;

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio_util::sync::CancellationToken;

use crate::{
    auth::Authenticator,
    coherence::{self, keeper::Keeper},
    config::{Config, NodeType},
    directory::{self, Directory, Forwarding},
    health::Health,
    http::{
        self, AccessLog, AppState, HttpsPolicy, Origins, RateLimits, Shared, Timeouts,
        listener::CountingListener,
    },
    lifecycle::Repair,
    live::Hub,
    nats::{self, EmbeddedServer, watch::StreamWatch},
    sessions::Sessions,
    telemetry::Metrics,
    tls::ServerTls,
};
use background::Background;

/// How often idle rate-limit keys are forgotten.
const LIMITS_RETAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A node, built and ready to serve.
pub struct Application {
    listener: CountingListener,
    local_addr: SocketAddr,
    app: http::App,
    client: async_nats::Client,
    embedded: Option<EmbeddedServer>,
    background: Background,
    metrics: Arc<Metrics>,
    config: Config,
    https: Option<Arc<ServerTls>>,
    hub: Arc<Hub>,
    /// What the node writes its cache's snapshot with when it stops (a center that keeps one).
    snapshot: Option<Keeper>,
    /// Held while the node lives: no other node starts on its data directory.
    _data_dir: Option<claim::DataDirLock>,
}

impl Application {
    /// Everything up to, but not including, serving requests. The HTTP port may be 0 (tests);
    /// [`Application::local_addr`] says which one the OS chose. A failure stops what was
    /// started already.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Before anything is started or written: the data directory is this node's alone, and
        // the ports it will open are free.
        let data_dir = claim::data_dir(&config)?;
        claim::ports(&config)?;
        let (secret, source) = startup::jwt_secret(&config)?;
        startup::announce(&config, &source);
        let auth = Authenticator::new(&secret, &config.auth);
        let (mut embedded, url) = startup::start_nats(&config, &config.node_id()).await?;
        let built = Self::assemble(config, auth, &url, &mut embedded).await.map(|mut app| {
            app._data_dir = data_dir;
            app
        });
        if built.is_err()
            && let Some(server) = embedded.take()
        {
            server.stop().await;
        }
        built
    }

    /// Steps 2 to 6 on a running NATS; the node takes the embedded server once all succeeded.
    async fn assemble(
        config: Config,
        auth: Authenticator,
        url: &str,
        embedded: &mut Option<EmbeddedServer>,
    ) -> anyhow::Result<Self> {
        let node_id = config.node_id();
        let mut background = Background::new();
        let credentials = embedded.as_ref().map(EmbeddedServer::credentials);
        let client = nats::connect(url, &config, &node_id, credentials).await?;
        if let Some(server) = embedded.as_ref() {
            // Before anything is created: an encrypted store that did not load must stay as it is.
            nats::at_rest::check_store_loaded(&client, server.data_dir()).await?;
        }
        let jetstream = startup::jetstream_of(&config, &client);
        let metrics = Arc::new(Metrics::new());
        let (store, events) = startup::open_storage(&config, &jetstream, &metrics, &mut background).await?;
        let region = startup::open_region_copy(&config, &client, &metrics).await;
        let webhooks = crate::webhooks::Webhooks::prepare(&config, &events).await?;
        let server_name = embedded.as_ref().map(|e| e.server_name().to_string());
        let storage = (&store, &events);
        let nats = (&client, server_name);
        let copy = region.as_ref().map(|r| r.copy.clone());
        let coherent = startup::start_coherence(
            &config,
            storage,
            nats,
            (region, webhooks.occupancy()),
            &metrics,
            &mut background,
        )
        .await;
        let registry = startup::start_topology(&config, &client, &coherent, &mut background);
        if config.service.node_type == NodeType::Center {
            let (store, events, registry) = (store.clone(), events.clone(), registry.clone());
            let repair =
                Repair { store, events, metrics: metrics.clone(), registry, node_id: node_id.clone() };
            background.tasks.spawn(repair.run(background.stop.clone()));
        }
        // Webhooks go out from the center's nodes only: once per event, not once per region.
        let webhook_statuses = webhooks.statuses();
        webhooks.start(&mut background.tasks, (&jetstream, &metrics), &background.stop).await?;
        let (listener, local_addr, https) = startup::listen(&config, &metrics).await?;
        let watch = Arc::new(StreamWatch::default());
        let watching = (jetstream.clone(), store.caller().clone());
        let streams = StreamWatch::watched(&config);
        background.tasks.spawn(watch.clone().run(watching, streams, background.stop.clone()));
        let probed = (
            client.clone(),
            jetstream,
            (store.clone(), events.clone(), watch),
            embedded.as_ref().map(EmbeddedServer::status),
        );
        let kept = (
            coherent.cache.clone(),
            coherent.link.clone(),
            coherent.expiry.clone(),
            coherent.hub.clone(),
            registry.clone(),
            webhook_statuses,
        );
        let health = Health::new(&config, probed, kept, metrics.clone());
        let snapshot = coherence::snapshot::path(&config)
            .map(|path| Keeper::new(path, store.clone(), coherent.cache.clone(), coherent.link.clone()));
        let every = config.cache.snapshot_interval;
        if let Some(keeper) = snapshot.clone().filter(|_| !every.is_zero()) {
            background.tasks.spawn(keeper.keep(every, background.stop.clone()));
        }
        let hub = coherent.hub.clone();
        let forward = (config.service.node_type == NodeType::Leaf)
            .then(|| Forwarding::new(client.clone(), config.nats.request_timeout));
        let directory = Directory::new(
            node_id,
            (store, copy, events),
            (coherent.cache, coherent.landing, coherent.link),
            forward,
            metrics.clone(),
        );
        if config.service.node_type == NodeType::Center {
            let (serve, stop) = ((directory.clone(), auth.clone()), background.stop.clone());
            let ttl = config.nats.kv.ttl;
            background.tasks.spawn(directory::forward::serve(serve, client.clone(), ttl, stop));
        }
        let rooms = coherent.rooms.clone();
        let sessions = Sessions::new(
            directory.clone(),
            (coherent.holdings, registry, rooms.clone()),
            config.sessions.clone(),
            metrics.clone(),
        );
        sessions.spawn(&mut background.tasks, &background.stop);
        let state = AppState::new(Shared {
            directory,
            hub: hub.clone(),
            rooms,
            sessions,
            health,
            auth,
            limits: RateLimits::new(&config.rate_limit),
            access: AccessLog::new(&config.logging),
            body_timeout: config.service.body_timeout,
            metrics: metrics.clone(),
            default_ttl: config.nats.kv.ttl,
            origins: Origins::new(config.service.cors.allowed_origins.clone(), local_addr, https.is_some()),
        });
        background.tasks.spawn(retain_limits(state.clone(), background.stop.clone()));
        let app = http::router(state, HttpsPolicy::new(&config.service));
        let embedded = embedded.take();
        Ok(Self {
            listener,
            local_addr,
            app,
            client,
            embedded,
            background,
            metrics,
            config,
            https,
            hub,
            snapshot,
            _data_dir: None,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What SIGHUP does, callable directly (tests).
    pub fn reloader(&self) -> Reloader {
        Reloader { https: self.https.clone(), nats: self.embedded.as_ref().map(EmbeddedServer::status) }
    }

    /// Serves until `shutdown` completes, then drains in-flight requests (at most
    /// `service.shutdown_timeout`), stops the background tasks, flushes the NATS client and stops
    /// the embedded server.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let reloader = self.reloader();
        self.background.tasks.spawn(reloader.on_sighup(self.background.stop.clone()));
        let (trigger, hub) = (stop.clone(), self.hub.clone());
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
            // Live streams never finish by themselves: end them, so that their connections can.
            hub.shutdown();
        });
        tracing::info!(addr = %self.local_addr(), node_id = %self.config.node_id(), "serving");
        let service = &self.config.service;
        let timeouts = Timeouts { header: service.header_timeout, idle: service.idle_timeout };
        let serve = http::serve(self.listener, self.app, self.https, (timeouts, self.metrics), stop.clone());
        let grace = service.shutdown_timeout;
        let served = tokio::select! {
            () = serve => Ok(()),
            () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "requests still in flight after the shutdown timeout; closing");
                Ok(())
            }
        };
        tracing::info!("HTTP server stopped; draining NATS");
        if let Some(snapshot) = &self.snapshot {
            snapshot.catch_up().await;
        }
        self.background.shutdown(grace).await;
        // The watcher has stopped: the cache holds what it applied, and nothing lands any more.
        if let Some(snapshot) = &self.snapshot {
            snapshot.save(true).await;
        }
        let _ = tokio::time::timeout(grace, self.client.drain()).await;
        if let Some(server) = self.embedded {
            server.stop().await;
        }
        served
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
