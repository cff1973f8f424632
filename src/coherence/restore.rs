//! A start from the cache's snapshot ([`super::snapshot`]). The snapshot holds every presence as
//! of its revision `S`; the bucket now stands at `H`. First the watcher applies the changes after
//! `S` up to `H` (those made while the node was stopped), noting whose they are; then the
//! snapshot's records of everyone else land, each as current as a replay would have made it; the
//! watcher then goes on after `H` as usual. Until the first step is done the cache holds only
//! those changes, and reads of anyone else go to the bucket, as during any warm-up. An erasure on
//! this node waits until the records have landed ([`crate::link::LinkState::restored`]): a
//! tombstone the cache could not keep must not let an older record in behind it.

use std::collections::HashSet;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{
    ahead::decode_ahead,
    snapshot::{Preload, Run, Snapshot},
    watcher::Applier,
};
use crate::store::PresenceStore;

/// The longest the first step may take; after it, the snapshot is dropped and the watcher reads
/// what the bucket holds.
const CATCH_UP_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Records landed between two yields to the node's other tasks.
const YIELD_EVERY: usize = 1024;

/// Waits for the snapshot being read and lands it (if the bucket can carry on from it), before
/// the watcher starts.
pub(super) async fn first(
    preload: Preload,
    store: &PresenceStore,
    applier: &mut Applier,
    stop: &CancellationToken,
) {
    if let Some(snapshot) = preload.read().await {
        restore(store, applier, snapshot, stop).await;
    }
}

/// Lands `snapshot` if the bucket can carry on from it (else the watcher reads the bucket).
async fn restore(store: &PresenceStore, applier: &mut Applier, snapshot: Snapshot, stop: &CancellationToken) {
    let started = std::time::Instant::now();
    let head = match store.head().await {
        Ok(head) => head,
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::chain(&e), "cache snapshot not used: the bucket did not answer");
            return;
        }
    };
    if let Some(why) = snapshot.unfit(&head, Utc::now()) {
        tracing::info!(why, "cache snapshot not used; reading the bucket");
        return;
    }
    let (from, to) = (snapshot.revision(), head.last_revision);
    // Changes up to `to` are where things stood when the node started, not news.
    applier.live_after = to;
    applier.replayed_until = to;
    let Some(changed) = catch_up(store, applier, (from, to), stop).await else {
        tracing::warn!(from, to, "cache snapshot not used: the changes since it could not be read");
        // What was applied of them is no start either: the watcher reads the bucket from nothing.
        applier.forget();
        return;
    };
    applier.link.record_applied(from);
    applier.landing.expect(snapshot.records.iter().map(|run| run.len() as u64).sum());
    // One run after the other: landing them in tasks side by side took longer (the expiry
    // schedule and the live feed are shared) and a third more CPU.
    let mut landed = 0;
    for run in snapshot.records {
        let Some(n) = land(applier, run, &changed, head.first_revision).await else {
            // The bucket no longer holds a record of the snapshot, and no change since replaced
            // it: it was removed some other way (the stream purged, restored from a backup).
            tracing::warn!("cache snapshot not used: the bucket lost records it holds");
            applier.forget();
            return;
        };
        landed += n;
    }
    applier.landing.restored(landed as u64);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(landed, changed = changed.len(), from, to, elapsed_ms, "cache restored from its snapshot");
}

/// Lands `run`'s records of users not `changed`; how many, or `None` if one is older than
/// `first`, the oldest revision the bucket holds.
async fn land(applier: &Applier, run: Run, changed: &HashSet<Box<str>>, first: u64) -> Option<usize> {
    let mut landed = 0;
    for (user, record) in run {
        if changed.contains(&user) {
            continue;
        }
        if record.revision < first {
            return None;
        }
        applier.land(&user, record, false, false).await;
        landed += 1;
        if landed % YIELD_EVERY == 0 {
            tokio::task::yield_now().await;
        }
    }
    Some(landed)
}

/// Applies the changes after `from` up to `to`; the users they changed, or `None` if they did not
/// all arrive in time.
async fn catch_up(
    store: &PresenceStore,
    applier: &mut Applier,
    (from, to): (u64, u64),
    stop: &CancellationToken,
) -> Option<HashSet<Box<str>>> {
    let mut changed = HashSet::new();
    if to <= from {
        return Some(changed);
    }
    let mut runs = decode_ahead(store.watch(from).await.ok()?);
    let deadline = tokio::time::Instant::now() + CATCH_UP_LIMIT;
    loop {
        let run = tokio::select! {
            () = stop.cancelled() => return None,
            run = tokio::time::timeout_at(deadline, runs.recv()) => run.ok()??,
        };
        for decoded in run {
            let decoded = decoded.ok()?;
            let (revision, last) = (decoded.change.revision, decoded.change.pending == 0);
            if let Some(user) = decoded.change.user() {
                changed.insert(Box::from(user));
            }
            applier.apply(decoded).await;
            if revision >= to || last {
                return Some(changed);
            }
        }
    }
}
