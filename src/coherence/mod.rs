//! Keeping this node's cache coherent with the bucket, and knowing when it may not be.
//!
//! - [`watcher`] follows the bucket's changes into the cache and the expiry schedule: first every
//!   current record (warming the cache up to its capacity), then every put, delete and purge as it
//!   happens, resumed after the last applied revision whenever the watch breaks.
//! - [`monitor`] checks the link every 250 ms: is NATS connected and does JetStream answer, how
//!   far behind is the watcher, and is the bucket still the one the cache came from.
//! - [`clock`] estimates this node's clock offset from the server's timestamps.
//!
//! Both tasks report into [`crate::link::LinkState`]. See docs/architecture.md, "The link and
//! coherence".

mod clock;
mod monitor;
mod watcher;

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) use clock::CLOCK_TOLERANCE;

use crate::{cache::PresenceCache, lifecycle::ExpiryQueue, link::LinkState, store::PresenceStore};

/// Starts the watcher and the monitor in `tasks`; they run until `stop`.
pub(crate) fn spawn(
    tasks: &mut JoinSet<()>,
    store: &PresenceStore,
    client: async_nats::Client,
    cache: PresenceCache,
    link: Arc<LinkState>,
    expiry: Arc<ExpiryQueue>,
    stop: &CancellationToken,
) {
    let applier = watcher::Applier::new(cache, link.clone(), expiry);
    tasks.spawn(watcher::run(store.clone(), applier, stop.clone()));
    tasks.spawn(monitor::run(store.clone(), client, link, stop.clone()));
}
