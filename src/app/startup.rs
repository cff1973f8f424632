//! The steps of [`super::Application::build`], in order: NATS, the store and the audit log, the
//! cache with its coherence tasks, the lifecycle (expiry), the topology (heartbeats), and HTTP.
//! Each step takes what the earlier ones made. See docs/architecture.md, "Start-up and shutdown".

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use async_nats::jetstream;
use tokio::net::TcpListener;

use super::background::Background;
use crate::{
    auth::secret::{self, SecretSource},
    cache::{ENTRY_OVERHEAD, Negative, PresenceCache},
    coherence::{self, Landing, RegionCopy, snapshot::Preload},
    config::{CENTER_DOMAIN, Config, NodeType, ServiceTls, TlsMode},
    http::listener::{Caps, CountingListener},
    lifecycle::{EventError, Events, Expirer, ExpiryQueue, events::StreamSettings},
    link::LinkState,
    live::Hub,
    nats::{API_PREFIX, Caller, EmbeddedServer, breaker::Breaker, settings::Authority},
    rooms::{Occupancy, Rooms},
    store::{PresenceStore, StoreError, region},
    telemetry::Metrics,
    tls::ServerTls,
    topology::{self, Holdings, Registry},
};

/// Step 0: say what the node is about to run with.
pub(super) fn announce(config: &Config, secret_source: &SecretSource) {
    match secret_source {
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
        approx_presences = config.cache.max_cost / ENTRY_OVERHEAD,
        "cache size"
    );
}

/// Step 1: the embedded server (unless `nats.embedded: false`) and the URL to connect to.
pub(super) async fn start_nats(
    config: &Config,
    node_id: &str,
) -> anyhow::Result<(Option<EmbeddedServer>, String)> {
    if !config.nats.embedded {
        return Ok((None, config.nats.url.clone()));
    }
    let server = EmbeddedServer::start(config, node_id).await?;
    let url = server.client_url().to_string();
    Ok((Some(server), url))
}

/// The JetStream context the node uses: a leaf reaches the bucket and the audit log in the
/// center's JetStream domain, over its leafnode link.
pub(super) fn jetstream_of(config: &Config, client: &async_nats::Client) -> jetstream::Context {
    match config.service.node_type {
        NodeType::Center => jetstream::new(client.clone()),
        NodeType::Leaf => jetstream::with_domain(client.clone(), CENTER_DOMAIN),
    }
}

/// The JetStream API prefix of [`jetstream_of`]'s context (a put into a bucket of the center's
/// domain goes under it).
fn api_prefix_of(config: &Config) -> String {
    match config.service.node_type {
        NodeType::Center => API_PREFIX.to_string(),
        NodeType::Leaf => format!("$JS.{CENTER_DOMAIN}.API"),
    }
}

/// How long a leaf waits for its center at start-up before it serves its region on its own.
const LEAF_JOIN_WAIT: Duration = Duration::from_secs(3);

/// Step 2: the bucket and the audit-log stream, behind one breaker. A center makes them and
/// fails to start without them. A leaf binds to the center's, and if its center does not answer
/// within [`LEAF_JOIN_WAIT`], it starts without them and keeps trying in `background`: until it
/// joins, its reads come from what the region remembers and its writes answer 503.
pub(super) async fn open_storage(
    config: &Config,
    js: &jetstream::Context,
    metrics: &Arc<Metrics>,
    background: &mut Background,
) -> anyhow::Result<(PresenceStore, Events)> {
    let caller = caller(config, metrics);
    let store = PresenceStore::unbound(caller.clone());
    let events = Events::unbound(js.clone(), caller, metrics.clone());
    if config.service.node_type == NodeType::Center {
        let deadline = Instant::now() + config.nats.startup_timeout;
        bind_storage(config, js, (&store, &events), Some(deadline)).await?;
        return Ok((store, events));
    }
    let join = {
        let (config, js, store, events) = (config.clone(), js.clone(), store.clone(), events.clone());
        async move {
            if bind_storage(&config, &js, (&store, &events), None).await.is_ok() {
                tracing::info!("joined the center: its bucket and audit log answer");
            }
        }
    };
    let stop = background.stop.clone();
    background.tasks.spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = join => {}
        }
    });
    if tokio::time::timeout(LEAF_JOIN_WAIT, store.wait_bound()).await.is_err() {
        tracing::warn!(
            "the center does not answer; serving this region on its own until it does \
             (reads from what the region remembers, marked stale; writes answer 503)"
        );
    }
    Ok((store, events))
}

/// A `Caller` with breakers of its own (the center's streams share one; a leaf's copy has
/// another, so that local calls failing never refuse calls to the center, nor the other way).
fn caller(config: &Config, metrics: &Arc<Metrics>) -> Caller {
    let breaker = || Arc::new(Breaker::new(config.nats.breaker.failures, config.nats.breaker.cooldown));
    Caller::new(config.nats.request_timeout, breaker(), breaker(), metrics.clone())
}

/// Binds `store` and `events` to the shared streams: the audit log first, so that a bound store
/// means both are. Until `deadline` (`None`: for as long as it takes).
async fn bind_storage(
    config: &Config,
    js: &jetstream::Context,
    (store, events): (&PresenceStore, &Events),
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    // Only the center manages the shared bucket and stream; a leaf binds to what it made.
    let authority = match config.service.node_type {
        NodeType::Center => Authority::Manage { allow_reduction: config.nats.allow_settings_reduction },
        NodeType::Leaf => Authority::Bind,
    };
    let settings = StreamSettings {
        name: &config.events.stream,
        retention: config.events.retention,
        replicas: config.nats.kv.replicas,
        max_per_user: config.events.max_per_user,
        authority,
    };
    retry_until(
        deadline,
        || events.bind(&settings),
        |e| !matches!(e, EventError::Settings(s) if !s.transient()),
    )
    .await
    .with_context(|| format!("cannot open the audit-log stream `{}`", config.events.stream))?;
    let api = api_prefix_of(config);
    let bind_store = || store.bind((js, &api), &config.nats.kv, authority);
    retry_until(deadline, bind_store, |e| !matches!(e, StoreError::Settings(s) if !s.transient()))
        .await
        .with_context(|| format!("cannot open KV bucket `{}`", config.nats.kv.bucket))?;
    Ok(())
}

/// Step 2b, on a leaf: the region's copy of the bucket, in the leaf's own JetStream (see
/// [`crate::store::region`]). Without it (an external NATS without JetStream, say) the leaf
/// still works, but remembers nothing across a restart.
pub(super) async fn open_region_copy(
    config: &Config,
    client: &async_nats::Client,
    metrics: &Arc<Metrics>,
) -> Option<RegionCopy> {
    if config.service.node_type != NodeType::Leaf {
        return None;
    }
    let caller = caller(config, metrics);
    let local = jetstream::new(client.clone());
    match region::open(&local, &config.nats.kv, caller).await {
        Ok(copy) => Some(RegionCopy { copy, local, kv: config.nats.kv.clone() }),
        Err(e) => {
            tracing::error!(
                error = %crate::telemetry::chain(&e),
                "cannot open this region's copy of the bucket in the leaf's own JetStream; \
                 a restart while the center is away will start with nothing"
            );
            None
        }
    }
}

/// What steps 3 and 4 make: the cache, the link state and the expiry schedule, with the tasks
/// that keep them (watcher, monitor, housekeeping, expiry job) running in `background`.
pub(super) struct Coherent {
    pub cache: PresenceCache,
    pub link: Arc<LinkState>,
    pub expiry: Arc<ExpiryQueue>,
    pub hub: Arc<Hub>,
    pub rooms: Arc<Rooms>,
    /// Where records land: the expiry schedule, the cache, the live feed and the rooms above.
    pub landing: Landing,
    pub holdings: Arc<Holdings>,
}

/// Steps 3 and 4: the cache kept coherent with the bucket (and the live feed it feeds), and the
/// expiry job. `server_name` is the embedded server's name for this run (none for an external
/// NATS). On a leaf, the region's copy is read into the cache before this returns.
pub(super) async fn start_coherence(
    config: &Config,
    (store, events): (&PresenceStore, &Events),
    (client, server_name): (&async_nats::Client, Option<String>),
    (region, occupancy): (Option<RegionCopy>, Option<Arc<Occupancy>>),
    metrics: &Arc<Metrics>,
    background: &mut Background,
) -> Coherent {
    let cache = PresenceCache::with_metrics(config.cache.max_cost, Negative::from(&config.cache), metrics);
    let link = LinkState::new();
    if !store.is_bound() {
        // A leaf on its own: stale and refusing writes from its first request.
        link.set_reachable(false);
    }
    let expiry = ExpiryQueue::new();
    let hub = Hub::new(config.stream.clone(), link.clone(), metrics.clone());
    let holdings = Holdings::new();
    let window = config.stream.batch_window;
    let rooms = Rooms::new(&config.node_id(), config.rooms.clone(), window, metrics.clone());
    let landing = Landing::new(cache.clone(), expiry.clone(), (hub.clone(), rooms.clone()));
    let Background { stop, tasks } = background;
    let parts = coherence::Parts {
        store: store.clone(),
        client: client.clone(),
        server_name,
        landing: landing.clone(),
        link: link.clone(),
        holdings: holdings.clone(),
        region,
        occupancy,
        snapshot: Preload::start(config),
    };
    coherence::start(tasks, parts, stop).await;
    tasks.spawn(hub.clone().run(stop.clone()));
    tasks.spawn(rooms.clone().run(client.clone(), stop.clone()));
    tasks.spawn(cache.clone().housekeeping(stop.clone()));
    let expirer = Expirer {
        queue: expiry.clone(),
        store: store.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        link: link.clone(),
        node_id: config.node_id(),
    };
    tasks.spawn(expirer.run(stop.clone()));
    Coherent { cache, link, expiry, hub, rooms, landing, holdings }
}

/// Step 5: heartbeats out, everyone's heartbeats into the registry.
pub(super) fn start_topology(
    config: &Config,
    client: &async_nats::Client,
    coherent: &Coherent,
    background: &mut Background,
) -> Arc<Registry> {
    let registry = Registry::new();
    let local = topology::Local::new(config, coherent.cache.clone(), coherent.link.clone());
    topology::spawn(&mut background.tasks, client.clone(), local, registry.clone(), &background.stop);
    registry
}

/// Step 6: the HTTP listener (port 0 lets the OS choose), with its connection caps.
pub(super) async fn listen(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(CountingListener, SocketAddr, Option<Arc<ServerTls>>)> {
    let https = match &config.service.tls {
        Some(ServiceTls { mode: TlsMode::Direct, cert_file: Some(cert), key_file: Some(key), .. }) => Some(
            Arc::new(ServerTls::load(cert, key).context("service.tls: cannot load the HTTPS certificate")?),
        ),
        _ => None,
    };
    let addr = SocketAddr::new(config.service.host, config.service.port);
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("service.port (--port): cannot listen on {addr}"))?;
    let local_addr = tcp.local_addr()?;
    let caps = Caps {
        total: config.service.max_connections,
        per_ip: config.service.max_connections_per_ip,
        exempt: config.rate_limit.trusted_proxies.clone(),
    };
    Ok((CountingListener::new(tcp, caps, metrics.clone()), local_addr, https))
}

/// The JWT secret: configured, or generated on first start into the data directory.
pub(super) fn jwt_secret(config: &Config) -> anyhow::Result<(crate::config::Secret, SecretSource)> {
    secret::resolve(config).context("auth: cannot load or create the JWT secret")
}

/// Retries `attempt` until it succeeds, fails for good (`transient` says no), or `deadline`
/// passes (a leaf's link to the center may take a moment to come up after its embedded server
/// started, and the center may not have created the bucket yet). Without a deadline, the waits
/// grow to 2 s and only the first failure is logged above debug.
async fn retry_until<T, E, F>(
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> F,
    transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::error::Error + 'static,
    F: Future<Output = Result<T, E>>,
{
    let (mut wait, mut tried) = (Duration::from_millis(250), 0u64);
    loop {
        tried += 1;
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if !transient(&e) || deadline.is_some_and(|d| Instant::now() >= d) => return Err(e),
            Err(e) if deadline.is_some() || tried == 1 => {
                tracing::info!(error = %crate::telemetry::chain(&e), "JetStream not reachable yet; retrying")
            }
            Err(e) => tracing::debug!(error = %crate::telemetry::chain(&e), "JetStream not reachable yet"),
        }
        tokio::time::sleep(wait).await;
        if deadline.is_none() {
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}
