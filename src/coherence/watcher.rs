//! The watcher: applies the bucket's changes to the cache, the expiry schedule and the link
//! state, in revision order. A watch that fails or ends is started again after the last applied
//! revision; a rebuild (the bucket was replaced) starts over from the bucket's history.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::clock::{self, ClockEstimate};
use crate::{
    cache::PresenceCache,
    lifecycle::ExpiryQueue,
    link::LinkState,
    live::{Hub, Source},
    model::{CompactPresence, Record},
    store::{Change, PresenceStore},
};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Applies watched changes to what the node keeps.
pub(super) struct Applier {
    cache: PresenceCache,
    link: Arc<LinkState>,
    expiry: Arc<ExpiryQueue>,
    hub: Arc<Hub>,
    clock: ClockEstimate,
    /// The bucket's last revision when the current watch started: changes up to it are history
    /// (replayed, however old), changes after it were written while this node watched. Only
    /// those tell the clock offset.
    live_after: u64,
}

/// How one watch ended.
enum Ended {
    Stopped,
    Rebuild,
    Broken,
}

pub(super) async fn run(store: PresenceStore, mut applier: Applier, stop: CancellationToken) {
    let link = applier.link.clone();
    let mut backoff = BACKOFF_START;
    loop {
        // Sampled before the watch starts, so that every change after it is a fresh one.
        let started = match store.head().await {
            Ok(head) => {
                applier.live_after = head.last_revision;
                store.watch(link.applied_revision()).await
            }
            Err(e) => Err(e),
        };
        match started {
            Ok(changes) => match follow(changes, &mut applier, &stop).await {
                Ended::Stopped => return,
                Ended::Rebuild => {
                    // Start over: nothing this watcher applied can be trusted.
                    applier.cache.clear();
                    applier.hub.reset();
                    link.reset_applied();
                    backoff = BACKOFF_START;
                    continue;
                }
                Ended::Broken => {
                    tracing::warn!("KV watch ended; resuming from the last applied revision");
                    backoff = BACKOFF_START;
                }
            },
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "cannot start the KV watcher; retrying")
            }
        }
        link.mark_behind();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Applies changes until the watch ends, a rebuild is requested, or `stop`.
async fn follow(
    mut changes: crate::store::Changes,
    applier: &mut Applier,
    stop: &CancellationToken,
) -> Ended {
    let link = applier.link.clone();
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ended::Stopped,
            () = link.rebuild_requested() => return Ended::Rebuild,
            next = changes.next() => next,
        };
        match next {
            Some(Ok(change)) => applier.apply(change).await,
            Some(Err(e)) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "KV watcher error; cache may be stale until it catches up");
                link.mark_behind();
            }
            None => return Ended::Broken,
        }
    }
}

impl Applier {
    pub(super) fn new(
        cache: PresenceCache,
        link: Arc<LinkState>,
        expiry: Arc<ExpiryQueue>,
        hub: Arc<Hub>,
    ) -> Self {
        Self { cache, link, expiry, hub, clock: ClockEstimate::default(), live_after: u64::MAX }
    }

    async fn apply(&mut self, change: Change) {
        if change.revision > self.live_after {
            self.sample_clock(&change);
        }
        if let Some(user) = change.user() {
            let previous = self.cache.peek(user).await;
            let record = Arc::new(Record {
                revision: change.revision,
                presence: change.presence().as_ref().map(CompactPresence::from),
            });
            // This node's own writes are in the cache and the schedule already.
            if previous.as_ref().is_none_or(|e| e.revision < change.revision) {
                self.expiry.replace(previous.as_deref(), change.revision, record.presence.as_ref());
                self.cache.upsert(user, Record::clone(&record)).await;
            }
            let before = previous.as_deref().filter(|p| p.revision < change.revision);
            self.hub.publish(user, before, record, Source::Watcher);
        }
        self.link.record_applied(change.revision);
        // Nothing pending behind this change: the watcher is caught up.
        if change.pending == 0 && self.link.reachable() {
            self.link.mark_caught_up();
        }
    }

    fn sample_clock(&mut self, change: &Change) {
        let estimate = self.clock.sample(change.stored_at, chrono::Utc::now());
        let before = self.link.set_clock_offset(estimate);
        if clock::off(estimate) && before.is_none_or(|b| !clock::off(b)) {
            tracing::warn!(
                offset_ms = estimate,
                "this node's clock is off from the NATS server's; expiry times will be off by as much"
            );
        }
    }
}
