//! The watcher: applies the bucket's changes to the cache, the expiry schedule and the link
//! state, in revision order. A watch that fails or ends is started again after the last applied
//! revision; a rebuild (the bucket was replaced) starts over from the bucket's history.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    Landing, RegionCopy,
    ahead::{Decoded, decode_ahead},
    clock::{self, ClockEstimate},
};
use crate::{
    cache::Entry,
    link::LinkState,
    live::Source,
    model::Record,
    rooms::{Change, Occupancy},
    store::{BucketChange, PresenceStore, region},
    topology::Holdings,
};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest a start-up spends reading the region's copy (about 1.6 s per million records).
const RECALL_LIMIT: Duration = Duration::from_secs(60);

/// Applies watched changes to what the node keeps.
pub(super) struct Applier {
    pub(super) landing: Landing,
    pub(super) link: Arc<LinkState>,
    holdings: Arc<Holdings>,
    clock: ClockEstimate,
    /// The bucket's last revision when the current watch started: changes up to it are history
    /// (replayed, however old), changes after it were written while this node watched. Only
    /// those tell the clock offset.
    pub(super) live_after: u64,
    /// Who is in which room as the records say (a center whose webhooks hear rooms).
    occupancy: Option<Arc<Occupancy>>,
    /// The changes up to this revision are a replay from nothing (a start, a rebuild): where
    /// things stand, not news.
    pub(super) replayed_until: u64,
}

/// How one watch ended.
enum Ended {
    Stopped,
    Rebuild,
    Broken,
    /// The link came back: a new watch, after the last applied revision, at once.
    Resume,
}

pub(super) async fn run(
    store: PresenceStore,
    mut applier: Applier,
    region: Option<RegionCopy>,
    stop: CancellationToken,
) {
    let link = applier.link.clone();
    let mut backoff = BACKOFF_START;
    // A leaf that started while its center was away watches once it has joined.
    tokio::select! {
        () = stop.cancelled() => return,
        () = store.wait_bound() => {}
    }
    loop {
        // Sampled before the watch starts, so that every change after it is a fresh one.
        let started = match store.head().await {
            Ok(head) => {
                applier.live_after = head.last_revision;
                applier.replayed_until = if link.applied_revision() == 0 { head.last_revision } else { 0 };
                if link.applied_revision() == 0 {
                    applier.landing.expect(head.records);
                }
                store.watch(link.applied_revision()).await
            }
            Err(e) => Err(e),
        };
        match started {
            Ok(changes) => match follow(changes, &mut applier, &stop).await {
                Ended::Stopped => return,
                Ended::Rebuild => {
                    // Start over: nothing this watcher applied can be trusted.
                    applier.forget();
                    if let Some(region) = &region {
                        renew(region).await;
                    }
                    backoff = BACKOFF_START;
                    continue;
                }
                Ended::Broken => {
                    tracing::warn!("KV watch ended; resuming from the last applied revision");
                    backoff = BACKOFF_START;
                }
                Ended::Resume => {
                    tracing::info!("NATS is back; resuming the KV watch from the last applied revision");
                    continue;
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

/// Replays the region's copy into what the node keeps, up to the copy's last revision, where
/// the watcher of the center's bucket then resumes. Until that watcher has caught up, the node's
/// answers are stale: the copy may be behind the center.
pub(super) async fn recall(copy: &PresenceStore, applier: &mut Applier) {
    let started = tokio::time::Instant::now();
    if let Err(e) = replay(copy, applier, started + RECALL_LIMIT).await {
        tracing::warn!(error = %crate::telemetry::chain(&e), "reading the region's copy failed; going on with what was read");
    }
    // Whatever was replayed (nothing had been applied before) may be older than the center.
    let revision = applier.link.applied_revision();
    if revision > 0 {
        applier.link.mark_behind();
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(revision, elapsed_ms, "recalled the region's copy of the bucket");
}

/// Applies the copy's records until the last one, or until `deadline`.
async fn replay(
    copy: &PresenceStore,
    applier: &mut Applier,
    deadline: tokio::time::Instant,
) -> Result<(), crate::store::StoreError> {
    if copy.head().await?.records == 0 {
        return Ok(());
    }
    let mut runs = decode_ahead(copy.watch(0).await?);
    while let Ok(Some(run)) = tokio::time::timeout_at(deadline, runs.recv()).await {
        for decoded in run {
            let decoded = decoded?;
            let last = decoded.change.pending == 0;
            applier.apply(decoded).await;
            if last {
                return Ok(());
            }
        }
    }
    tracing::warn!("reading the region's copy did not finish in time; going on with what was read");
    Ok(())
}

/// Starts the region's copy over after the center's bucket was replaced.
async fn renew(region: &RegionCopy) {
    match region::renew(&region.local, &region.kv, region.copy.caller()).await {
        Ok(()) => tracing::info!("the region's copy starts over from the new bucket"),
        Err(e) => tracing::error!(error = %crate::telemetry::chain(&e), "cannot renew the region's copy"),
    }
}

/// Applies changes until the watch ends, a rebuild is requested, or `stop`.
async fn follow(
    changes: crate::store::BucketChanges,
    applier: &mut Applier,
    stop: &CancellationToken,
) -> Ended {
    let link = applier.link.clone();
    let mut runs = decode_ahead(changes);
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ended::Stopped,
            () = link.rebuild_requested() => return Ended::Rebuild,
            () = link.resume_requested() => return Ended::Resume,
            next = runs.recv() => next,
        };
        let Some(run) = next else { return Ended::Broken };
        for next in run {
            match next {
                Ok(decoded) => applier.apply(decoded).await,
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "KV watcher error; cache may be stale until it catches up");
                    link.mark_behind();
                }
            }
        }
    }
}

impl Applier {
    pub(super) fn new(
        landing: Landing,
        link: Arc<LinkState>,
        (holdings, occupancy): (Arc<Holdings>, Option<Arc<Occupancy>>),
    ) -> Self {
        let clock = ClockEstimate::default();
        Self { landing, link, holdings, clock, live_after: u64::MAX, occupancy, replayed_until: u64::MAX }
    }

    pub(super) async fn apply(&mut self, Decoded { change, presence }: Decoded) {
        if change.revision > self.live_after {
            self.sample_clock(&change);
        }
        if let Some(user) = change.user() {
            let record = Arc::new(Record { revision: change.revision, presence });
            let news = change.revision > self.replayed_until;
            self.land(user, record, change.erased(), news).await;
        }
        self.link.record_applied(change.revision);
        // Nothing pending behind this change: the watcher is caught up.
        if change.pending == 0 && self.link.reachable() {
            self.link.mark_caught_up();
        }
    }

    /// `user`'s record at its revision, from the bucket or the cache's snapshot.
    pub(super) async fn land(&self, user: &str, record: Entry, erased: bool, news: bool) {
        self.landing.land(user, record.clone(), Source::Watcher).await;
        // Every record, in revision order, whether or not this node held it already: which
        // nodes hold the user's sessions is the record's to say.
        self.holdings.observe(user, record.presence.as_ref(), erased);
        if let Some(occupancy) = &self.occupancy {
            occupancy.observe(&Change { user, record: &record, erased, news });
        }
    }

    /// Nothing applied so far can be trusted: the watcher starts over from nothing.
    pub(super) fn forget(&self) {
        self.landing.forget_all();
        if let Some(occupancy) = &self.occupancy {
            occupancy.reset();
        }
        self.link.reset_applied();
    }

    fn sample_clock(&mut self, change: &BucketChange) {
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
