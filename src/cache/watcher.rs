//! Keeps the cache coherent with the KV bucket.
//!
//! A watch with history first delivers every current value (warming the cache up to its capacity),
//! then every put, delete and purge (expiry markers included) as it happens. async-nats resumes
//! the watch across reconnects; if the watch itself ends, it is re-created from the last applied
//! revision, so nothing is missed.
//!
//! [`Coherence`] is what the rest of the node reads: whether NATS is reachable, and whether the
//! cache may be stale. The cache is marked possibly stale when the connection drops or the watch
//! reports an error, and fresh again once the watcher has applied everything up to the stream's
//! last revision as sampled after the connection came back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Cached, PresenceCache};
use crate::{
    lifecycle::expiry::ExpiryQueue,
    model::{CompactPresence, StoredPresence},
};

/// Clock offsets beyond this are reported as a problem.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(1);
/// Samples of (local time - server time) the offset estimate is the minimum of.
const CLOCK_SAMPLES: usize = 32;

/// How often the connection state and the watcher's lag are checked.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// moka's housekeeping, as the design document's periodic cleanup.
const CLEANUP_EVERY: Duration = Duration::from_secs(30);
const NO_TARGET: u64 = u64::MAX;

/// The node's view of its NATS link and its cache's freshness. Reads are plain atomic loads.
#[derive(Default)]
pub struct Coherence {
    nats_connected: AtomicBool,
    /// Set when updates may have been missed; cleared once the watcher caught up.
    broken: AtomicBool,
    /// The stream's last revision sampled after the watcher broke; [`NO_TARGET`] when none is.
    catch_up_to: AtomicU64,
    applied: AtomicU64,
    lag: AtomicU64,
    /// Local clock minus the server's, in ms, estimated from watched entries; i64::MIN if unknown.
    clock_offset_ms: std::sync::atomic::AtomicI64,
    /// Tells the watcher to start over from the bucket's history.
    rebuild: tokio::sync::Notify,
    rebuilds: AtomicU64,
}

impl Coherence {
    /// The state of a node whose watcher is about to start. A watcher that is warming up is
    /// behind, not broken: it misses nothing, and reads it has not reached yet go to the KV.
    pub fn new(nats_connected: bool) -> Arc<Self> {
        let c = Self::default();
        c.nats_connected.store(nats_connected, Relaxed);
        c.catch_up_to.store(NO_TARGET, Relaxed);
        c.clock_offset_ms.store(i64::MIN, Relaxed);
        Arc::new(c)
    }

    pub fn nats_connected(&self) -> bool {
        self.nats_connected.load(Relaxed)
    }

    /// True when cached entries may miss updates.
    pub fn stale(&self) -> bool {
        !self.nats_connected() || self.broken.load(Relaxed)
    }

    /// The highest KV revision the watcher applied.
    pub fn applied_revision(&self) -> u64 {
        self.applied.load(Relaxed)
    }

    /// How often the cache was rebuilt from scratch because the bucket was not the one it knew.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Relaxed)
    }

    /// Revisions the bucket has that the watcher has not applied yet (as of the last check).
    pub fn lag(&self) -> u64 {
        self.lag.load(Relaxed)
    }

    /// This node's clock minus the NATS server's, when the watcher has seen enough to tell. Each
    /// sample is (local time at receipt - server time at storage), which latency only inflates,
    /// so the estimate is the smallest recent sample.
    pub fn clock_offset(&self) -> Option<chrono::Duration> {
        match self.clock_offset_ms.load(Relaxed) {
            i64::MIN => None,
            ms => Some(chrono::Duration::milliseconds(ms)),
        }
    }

    fn mark_broken(&self) {
        self.broken.store(true, Relaxed);
        self.catch_up_to.store(NO_TARGET, Relaxed);
    }

    fn mark_fresh(&self) {
        if self.broken.swap(false, Relaxed) {
            tracing::info!(revision = self.applied_revision(), "KV watcher caught up; cache is fresh");
        }
    }
}

/// Runs the watcher and its checker until `stop` is cancelled. Live presences the watcher learns
/// of go into `expiry`'s schedule.
pub fn spawn(
    kv: kv::Store,
    client: async_nats::Client,
    cache: PresenceCache,
    coherence: Arc<Coherence>,
    expiry: Arc<ExpiryQueue>,
    stop: CancellationToken,
) {
    let applier =
        Applier { cache: cache.clone(), coherence: coherence.clone(), expiry, clock: Default::default() };
    tokio::spawn(watch(kv.clone(), applier, stop.clone()));
    tokio::spawn(check(kv, client, cache, coherence, stop));
}

/// Applies watched entries to the cache, the expiry schedule and the clock estimate.
struct Applier {
    cache: PresenceCache,
    coherence: Arc<Coherence>,
    expiry: Arc<ExpiryQueue>,
    clock: std::collections::VecDeque<i64>,
}

async fn watch(kv: kv::Store, mut applier: Applier, stop: CancellationToken) {
    let coherence = applier.coherence.clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        let from = coherence.applied_revision();
        let started = if from == 0 {
            kv.watch_with_history(">").await
        } else {
            kv.watch_all_from_revision(from + 1).await
        };
        match started {
            Ok(mut updates) => {
                backoff = Duration::from_millis(100);
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        () = coherence.rebuild.notified() => {
                            // Start over: nothing this watcher applied can be trusted.
                            applier.cache.clear();
                            coherence.applied.store(0, Relaxed);
                            break;
                        }
                        next = updates.next() => next,
                    };
                    match next {
                        Some(Ok(entry)) => applier.apply(entry).await,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "KV watcher error; cache may be stale until it catches up");
                            coherence.mark_broken();
                        }
                        None => break,
                    }
                }
                tracing::warn!("KV watch ended; resuming from the last applied revision");
            }
            Err(e) => tracing::warn!(error = %e, "cannot start the KV watcher; retrying"),
        }
        coherence.mark_broken();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl Applier {
    async fn apply(&mut self, entry: kv::Entry) {
        if entry.delta == 0 {
            self.sample_clock(&entry);
        }
        let (cache, coherence) = (&self.cache, &self.coherence);
        let Some(user_id) = entry.key.strip_prefix("user.") else {
            return;
        };
        // This node's own writes are in the cache and the schedule already: skip decoding them.
        let known = cache.peek(user_id).await.is_some_and(|e| e.revision >= entry.revision);
        if !known {
            let presence = match entry.operation {
                Operation::Put => match serde_json::from_slice::<StoredPresence>(&entry.value) {
                    Ok(p) => Some(CompactPresence::from(&p)),
                    Err(e) => {
                        tracing::warn!(key = %entry.key, error = %e, "watched value does not decode; treating it as absent");
                        None
                    }
                },
                Operation::Delete | Operation::Purge => None,
            };
            if let Some(p) = &presence {
                self.expiry.schedule(entry.revision, p);
            }
            cache.upsert(user_id, Cached { revision: entry.revision, presence }).await;
        }
        coherence.applied.fetch_max(entry.revision, Relaxed);
        // Nothing pending behind this entry: the watcher is caught up.
        if entry.delta == 0 && coherence.nats_connected() {
            coherence.mark_fresh();
        }
    }

    fn sample_clock(&mut self, entry: &kv::Entry) {
        let server_ms = (entry.created.unix_timestamp_nanos() / 1_000_000) as i64;
        let sample = chrono::Utc::now().timestamp_millis() - server_ms;
        if self.clock.len() == CLOCK_SAMPLES {
            self.clock.pop_front();
        }
        self.clock.push_back(sample);
        let estimate = self.clock.iter().copied().min().unwrap_or(sample);
        let before = self.coherence.clock_offset_ms.swap(estimate, Relaxed);
        let tolerance = CLOCK_TOLERANCE.as_millis() as i64;
        if estimate.abs() > tolerance && (before == i64::MIN || before.abs() <= tolerance) {
            tracing::warn!(
                offset_ms = estimate,
                "this node's clock is off from the NATS server's; expiry times will be off by as much"
            );
        }
    }
}

async fn check(
    kv: kv::Store,
    client: async_nats::Client,
    cache: PresenceCache,
    coherence: Arc<Coherence>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cleanup = tokio::time::interval(CLEANUP_EVERY);
    let mut failures = 0u32;
    let mut stream = kv.stream.clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = cleanup.tick() => cache.cleanup().await,
            _ = ticker.tick() => {
                // Reachable means: connected, and JetStream answers (through the leafnode, on a
                // leaf). One slow answer is not an outage; two in a row are.
                let connected = client.connection_state() == async_nats::connection::State::Connected;
                // Read before asking, so that entries applied while the answer travels cannot
                // make the bucket look older than the cache.
                let applied = coherence.applied_revision();
                // A fresh stream info request (kv.status() only returns what was cached at open).
                let status = if connected {
                    tokio::time::timeout(Duration::from_secs(1), stream.info()).await.ok().and_then(Result::ok).cloned()
                } else {
                    None
                };
                failures = if status.is_some() { 0 } else { failures + 1 };
                if !connected || failures >= 2 {
                    if coherence.nats_connected.swap(false, Relaxed) {
                        tracing::warn!("NATS unreachable: serving cached reads marked stale, writes answer 503");
                    }
                    coherence.mark_broken();
                    continue;
                }
                let Some(status) = status else { continue };
                if !coherence.nats_connected.swap(true, Relaxed) {
                    tracing::info!("NATS reachable again");
                }
                let state = &status.state;
                if state.last_sequence < applied {
                    // The bucket is not the one the cache came from (recreated, restored): the
                    // node cannot know what it missed, so it starts over from the bucket.
                    tracing::warn!(applied, last = state.last_sequence, "bucket history changed; rebuilding the cache");
                    coherence.mark_broken();
                    coherence.rebuilds.fetch_add(1, Relaxed);
                    coherence.rebuild.notify_one();
                    continue;
                }
                let applied = coherence.applied_revision();
                coherence.lag.store(state.last_sequence.saturating_sub(applied), Relaxed);
                if coherence.broken.load(Relaxed) {
                    // Caught up once the watcher applied what the bucket held when the link came
                    // back (an empty bucket holds nothing to wait for). A watcher that receives
                    // an entry with nothing pending behind it also clears this, in `apply`.
                    let target = match coherence.catch_up_to.load(Relaxed) {
                        NO_TARGET => {
                            coherence.catch_up_to.store(state.last_sequence, Relaxed);
                            state.last_sequence
                        }
                        t => t,
                    };
                    if state.messages == 0 || applied >= target {
                        coherence.mark_fresh();
                    }
                }
            }
        }
    }
}
