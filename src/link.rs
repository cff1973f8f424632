//! The node's link to NATS, as the rest of the node needs to know it: is NATS reachable, and may
//! the cache be behind the bucket (updates missed while the link was down)? Also the watcher's
//! position in the bucket, its lag, and this node's clock offset from the server.
//!
//! The coherence tasks ([`crate::coherence`]) write it; the read and write paths, the expiry job,
//! heartbeats and health read it. Reads are plain atomic loads. See docs/architecture.md,
//! "The link and coherence".

use std::{
    sync::{
        Arc,
        atomic::{
            AtomicBool, AtomicI64, AtomicU64, AtomicUsize,
            Ordering::{Relaxed, SeqCst},
        },
    },
    time::Duration,
};

use tokio::sync::Notify;

const NO_TARGET: u64 = u64::MAX;
const NO_OFFSET: i64 = i64::MIN;

#[derive(Debug)]
pub(crate) struct LinkState {
    reachable: AtomicBool,
    /// Set when updates may have been missed; cleared once the watcher caught up.
    behind: AtomicBool,
    /// The bucket's last revision sampled after the link came back; [`NO_TARGET`] when none is.
    catch_up_to: AtomicU64,
    applied: AtomicU64,
    /// Tasks waiting for [`LinkState::applied_reaches`]: only then is `applied_moved` told.
    applied_waiters: AtomicUsize,
    applied_moved: Notify,
    lag: AtomicU64,
    /// Local clock minus the server's, in ms; [`NO_OFFSET`] until known.
    clock_offset_ms: AtomicI64,
    /// Tells the watcher to start over from the bucket's history.
    rebuild: Notify,
    /// Tells the watcher to start a new watch after its last applied revision.
    resume: Notify,
    rebuilds: AtomicU64,
    /// Set while a start-up lands its cache's snapshot (see [`crate::coherence`]); erasures wait.
    restoring: AtomicBool,
    restored: Notify,
}

/// The link at one moment, for health and heartbeats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LinkSnapshot {
    pub reachable: bool,
    pub stale: bool,
    pub applied_revision: u64,
    pub lag: u64,
    pub rebuilds: u64,
    pub clock_offset: Option<chrono::Duration>,
}

impl LinkState {
    /// The state of a node whose watcher is about to start. A watcher that is warming up is
    /// behind in position, not stale: it misses nothing, and reads it has not reached yet go to
    /// the KV.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            reachable: AtomicBool::new(true),
            behind: AtomicBool::new(false),
            catch_up_to: AtomicU64::new(NO_TARGET),
            applied: AtomicU64::new(0),
            applied_waiters: AtomicUsize::new(0),
            applied_moved: Notify::new(),
            lag: AtomicU64::new(0),
            clock_offset_ms: AtomicI64::new(NO_OFFSET),
            rebuild: Notify::new(),
            resume: Notify::new(),
            rebuilds: AtomicU64::new(0),
            restoring: AtomicBool::new(false),
            restored: Notify::new(),
        })
    }

    /// NATS is connected and JetStream answers.
    pub(crate) fn reachable(&self) -> bool {
        self.reachable.load(Relaxed)
    }

    /// Cached entries may miss updates.
    pub(crate) fn stale(&self) -> bool {
        !self.reachable() || self.behind.load(Relaxed)
    }

    /// The highest KV revision the watcher applied.
    pub(crate) fn applied_revision(&self) -> u64 {
        self.applied.load(SeqCst)
    }

    /// Revisions the bucket has that the watcher has not applied yet (as of the last check).
    pub(crate) fn lag(&self) -> u64 {
        self.lag.load(Relaxed)
    }

    /// This node's clock minus the NATS server's, once known.
    pub(crate) fn clock_offset(&self) -> Option<chrono::Duration> {
        match self.clock_offset_ms.load(Relaxed) {
            NO_OFFSET => None,
            ms => Some(chrono::Duration::milliseconds(ms)),
        }
    }

    pub(crate) fn snapshot(&self) -> LinkSnapshot {
        LinkSnapshot {
            reachable: self.reachable(),
            stale: self.stale(),
            applied_revision: self.applied_revision(),
            lag: self.lag(),
            rebuilds: self.rebuilds.load(Relaxed),
            clock_offset: self.clock_offset(),
        }
    }

    // What the coherence tasks report.

    /// Records whether NATS is reachable; returns what it was before.
    pub(crate) fn set_reachable(&self, reachable: bool) -> bool {
        if !reachable {
            self.mark_behind();
        }
        self.reachable.swap(reachable, Relaxed)
    }

    /// Updates may have been missed: the cache is stale until the watcher catches up.
    pub(crate) fn mark_behind(&self) {
        self.behind.store(true, Relaxed);
        self.catch_up_to.store(NO_TARGET, Relaxed);
    }

    pub(crate) fn is_behind(&self) -> bool {
        self.behind.load(Relaxed)
    }

    /// The watcher caught up: cached entries are as fresh as the bucket.
    pub(crate) fn mark_caught_up(&self) {
        if self.behind.swap(false, Relaxed) {
            tracing::info!(revision = self.applied_revision(), "KV watcher caught up; cache is fresh");
        }
    }

    /// The revision to catch up to since the link came back: `last` the first time it is asked.
    pub(crate) fn catch_up_target(&self, last: u64) -> u64 {
        match self.catch_up_to.compare_exchange(NO_TARGET, last, Relaxed, Relaxed) {
            Ok(_) => last,
            Err(target) => target,
        }
    }

    /// A snapshot of the cache is about to be landed: [`LinkState::restored`] waits until
    /// [`LinkState::finish_restoring`].
    pub(crate) fn start_restoring(&self) {
        self.restoring.store(true, SeqCst);
    }

    pub(crate) fn finish_restoring(&self) {
        self.restoring.store(false, SeqCst);
        self.restored.notify_waiters();
    }

    /// Whether a snapshot of the cache is being landed.
    pub(crate) fn is_restoring(&self) -> bool {
        self.restoring.load(SeqCst)
    }

    /// Completes once no snapshot is being landed (at once, almost always).
    pub(crate) async fn restored(&self) {
        loop {
            let restored = self.restored.notified();
            if !self.restoring.load(SeqCst) {
                return;
            }
            restored.await;
        }
    }

    /// The watcher applied `revision`: everything it did for it (the cache, the live feed) is
    /// done.
    pub(crate) fn record_applied(&self, revision: u64) {
        self.applied.fetch_max(revision, SeqCst);
        if self.applied_waiters.load(SeqCst) > 0 {
            self.applied_moved.notify_waiters();
        }
    }

    /// Whether the watcher applies `revision` within `within` (at once if it did).
    pub(crate) async fn applied_reaches(&self, revision: u64, within: Duration) -> bool {
        if self.applied.load(SeqCst) >= revision {
            return true;
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        self.applied_waiters.fetch_add(1, SeqCst);
        let _waiting = Waiting(&self.applied_waiters);
        let reached = async {
            loop {
                let moved = self.applied_moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if self.applied.load(SeqCst) >= revision {
                    return;
                }
                moved.await;
            }
        };
        tokio::time::timeout(within, reached).await.is_ok()
    }

    pub(crate) fn set_lag(&self, lag: u64) {
        self.lag.store(lag, Relaxed);
    }

    /// Sets the clock offset estimate; returns the previous one.
    pub(crate) fn set_clock_offset(&self, ms: i64) -> Option<i64> {
        Some(self.clock_offset_ms.swap(ms, Relaxed)).filter(|&before| before != NO_OFFSET)
    }

    /// The bucket is not the one the cache came from: the watcher must start over.
    pub(crate) fn request_rebuild(&self) {
        self.mark_behind();
        self.rebuilds.fetch_add(1, Relaxed);
        self.rebuild.notify_one();
    }

    /// Completes when a rebuild was requested.
    pub(crate) async fn rebuild_requested(&self) {
        self.rebuild.notified().await;
    }

    /// NATS is back after an outage: the watcher should not wait for its old watch to notice
    /// (its consumer may be gone, found out only after missed heartbeats) but start a new one.
    pub(crate) fn request_resume(&self) {
        self.resume.notify_one();
    }

    /// Completes when a resume was requested (at once if one was while nobody waited).
    pub(crate) async fn resume_requested(&self) {
        self.resume.notified().await;
    }

    /// The watcher starts over from the beginning of the bucket.
    pub(crate) fn reset_applied(&self) {
        self.applied.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_stale_until_caught_up_after_the_link_returns() {
        let link = LinkState::new();
        assert!(!link.stale());
        assert!(link.set_reachable(false));
        assert!(link.stale());
        assert!(!link.set_reachable(true));
        assert!(link.stale(), "still behind after the link came back");
        assert_eq!(link.catch_up_target(7), 7);
        assert_eq!(link.catch_up_target(9), 7, "the target is fixed once sampled");
        link.mark_caught_up();
        assert!(!link.stale());
    }

    #[tokio::test]
    async fn a_wait_for_a_revision_ends_when_the_watcher_applies_it_or_at_its_deadline() {
        let link = LinkState::new();
        link.record_applied(5);
        assert!(link.applied_reaches(5, Duration::ZERO).await, "reached already");
        let applier = link.clone();
        let later = tokio::spawn(async move {
            for revision in 6..=9 {
                tokio::task::yield_now().await;
                applier.record_applied(revision);
            }
        });
        assert!(link.applied_reaches(9, Duration::from_secs(10)).await);
        later.await.unwrap();
        let started = tokio::time::Instant::now();
        assert!(!link.applied_reaches(10, Duration::from_millis(50)).await, "never applied");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(link.applied_waiters.load(SeqCst), 0, "no waiter left behind");
    }
}
