//! Keeping this node's cache coherent with the bucket, and knowing when it may not be.
//!
//! - [`landing`]: where a record lands on this node (expiry schedule, cache, live feed), for
//!   the watcher and the write path alike; [`follow`]: a write on its way following its user's
//!   landings, to learn whether it landed though its acknowledgement was lost.
//! - [`watcher`] follows the bucket's changes into the cache and the expiry schedule: first every
//!   current record (warming the cache up to its capacity), then every put, delete and purge as it
//!   happens, resumed after the last applied revision whenever the watch breaks.
//! - [`monitor`] checks the link every 250 ms: is NATS connected and does JetStream answer, how
//!   far behind is the watcher, and is the bucket still the one the cache came from.
//! - [`clock`] estimates this node's clock offset from the server's timestamps.
//! - [`snapshot`]: the cache written to a file (by the [`keeper`], when a center stops and every
//!   so often while it runs), and [`restore`]: the next start landing it, after the changes made
//!   since, instead of reading the whole bucket.
//!
//! Both tasks report into [`crate::link::LinkState`]. See docs/architecture.md, "The link and
//! coherence".

mod ahead;
mod clock;
mod follow;
pub(crate) mod keeper;
mod landing;
mod monitor;
mod restore;
pub(crate) mod snapshot;
mod watcher;

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) use clock::CLOCK_TOLERANCE;
pub(crate) use follow::Follow;
pub(crate) use landing::Landing;
use snapshot::Preload;

use crate::{config::KvConfig, link::LinkState, rooms::Occupancy, store::PresenceStore, topology::Holdings};

/// A leaf's copy of the bucket in its own JetStream (see [`crate::store::region`]), with what
/// renewing it takes.
#[derive(Clone)]
pub(crate) struct RegionCopy {
    pub copy: PresenceStore,
    /// The leaf's own JetStream, where the copy lives.
    pub local: async_nats::jetstream::Context,
    pub kv: KvConfig,
}

/// What the coherence tasks watch and feed.
pub(crate) struct Parts {
    pub store: PresenceStore,
    pub client: async_nats::Client,
    /// The embedded server's name for this run: a connection to any other server is no link at
    /// all. `None` for an external NATS.
    pub server_name: Option<String>,
    /// Where the watcher's records land: the expiry schedule, the cache, the live feed.
    pub landing: Landing,
    pub link: Arc<LinkState>,
    /// Which nodes hold which users' sessions, as the records say.
    pub holdings: Arc<Holdings>,
    pub region: Option<RegionCopy>,
    /// Who is in which room as the records say, on a center whose webhooks hear rooms.
    pub occupancy: Option<Arc<Occupancy>>,
    /// This node's cache snapshot, being read ([`snapshot`]).
    pub snapshot: Option<Preload>,
}

/// Held while a snapshot is on its way into the cache: erasures wait until it is dropped.
struct Restoring(Arc<LinkState>);

impl Restoring {
    fn new(link: Arc<LinkState>) -> Self {
        link.start_restoring();
        Self(link)
    }
}

impl Drop for Restoring {
    fn drop(&mut self) {
        self.0.finish_restoring();
    }
}

/// Starts the watcher and the monitor in `tasks`; they run until `stop`. On a leaf, first
/// replays the region's copy into the cache: the node serves what its region remembers from its
/// first request, marked stale until the center's bucket has been caught up with. A center with
/// a snapshot lands it in the watcher's task, while the node serves.
pub(crate) async fn start(tasks: &mut JoinSet<()>, parts: Parts, stop: &CancellationToken) {
    let Parts { store, client, server_name, landing, link, holdings, region, occupancy, snapshot } = parts;
    let mut applier = watcher::Applier::new(landing, link.clone(), (holdings, occupancy));
    if let Some(region) = &region {
        watcher::recall(&region.copy, &mut applier).await;
    }
    // Set before the node serves, so that no erasure slips in before the snapshot lands.
    let restoring = snapshot.map(|preload| (preload, Restoring::new(link.clone())));
    let (watched, stopped) = (store.clone(), stop.clone());
    tasks.spawn(async move {
        if let Some((preload, _restoring)) = restoring {
            restore::first(preload, &watched, &mut applier, &stopped).await;
        }
        watcher::run(watched, applier, region, stopped).await;
    });
    let target = monitor::Target { store, client, server_name };
    tasks.spawn(monitor::run(target, link, stop.clone()));
}
