//! Taking the cache's snapshot ([`super::snapshot`]): when a center stops, once its watcher has
//! stopped, and while it runs, every `cache.snapshot_interval` in which its watcher applied
//! something new, so that a start after a crash (no stop wrote one) finds a recent one too.
//!
//! A snapshot taken while the watcher runs is as good as one taken at a stop: it is labelled with
//! the revision `S` the watcher had applied before the cache was read, so every change up to `S`
//! is in it; a record it holds that is newer than `S`, or one missing because a change after `S`
//! removed it, is a change after `S`, which the next start applies before it lands the snapshot's
//! records of everyone else ([`super::restore`]). None is taken while a start lands one (the
//! cache does not hold its records yet).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::snapshot::{FORMAT, Header, write};
use crate::{cache::PresenceCache, link::LinkState, store::PresenceStore};

/// How long a stopping node waits for its watcher to apply the bucket's newest change.
const CATCH_UP: Duration = Duration::from_secs(1);

/// Where a node keeps its snapshot, and what it takes one of.
#[derive(Clone)]
pub(crate) struct Keeper {
    path: PathBuf,
    store: PresenceStore,
    cache: PresenceCache,
    link: Arc<LinkState>,
    /// Held while a snapshot is written: one written while the node runs and the one its stop
    /// writes share the file written aside.
    writing: Arc<Mutex<()>>,
}

impl Keeper {
    pub(crate) fn new(
        path: PathBuf,
        store: PresenceStore,
        cache: PresenceCache,
        link: Arc<LinkState>,
    ) -> Self {
        Self { path, store, cache, link, writing: Arc::default() }
    }

    /// Before the watcher stops: lets it apply what the bucket holds now (for at most
    /// [`CATCH_UP`]), so that the snapshot holds this node's last writes, even those made right
    /// after its start, before its watcher had applied anything.
    pub(crate) async fn catch_up(&self) {
        let caught_up = async {
            if let Ok(head) = self.store.head().await {
                self.link.applied_reaches(head.last_revision, CATCH_UP).await;
            }
        };
        let _ = tokio::time::timeout(CATCH_UP, caught_up).await;
    }

    /// While the node runs (a background task): a snapshot every `every` in which the watcher
    /// applied a change since the last one (none while a start lands one), until `stop`.
    pub(crate) async fn keep(self, every: Duration, stop: CancellationToken) {
        let mut taken_at = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let applied = self.link.applied_revision();
            if applied != taken_at && !self.link.is_restoring() && self.save(false).await {
                taken_at = applied;
            }
        }
    }

    /// Writes the snapshot: the cache's presences and the revision the watcher had applied
    /// before they were read (`stopping`: the watcher has stopped). Nothing is written if the
    /// watcher applied nothing, or if the bucket cannot say which one it is. A failure is logged;
    /// the next start reads the bucket instead. Whether one was written.
    pub(crate) async fn save(&self, stopping: bool) -> bool {
        // A watcher that may be starting over (the bucket replaced) is left to finish first.
        let (revision, rebuilds) = (self.link.applied_revision(), self.link.snapshot().rebuilds);
        if revision == 0 || self.link.is_behind() {
            return false;
        }
        let head = match self.store.head().await {
            Ok(head) if head.last_revision >= revision => head,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "no cache snapshot: the bucket did not answer");
                return false;
            }
        };
        let (path, cache, link, writing) =
            (self.path.clone(), self.cache.clone(), self.link.clone(), self.writing.clone());
        let started = std::time::Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            let _writing = writing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let header = Header {
                format: FORMAT,
                created: head.created,
                revision,
                records: 0,
                written_at: Utc::now(),
            };
            write(&path, header, cache.presences(), || {
                // Asked to start over while the cache was read: what it held may be half forgotten.
                let forgotten = link.applied_revision() < revision || link.snapshot().rebuilds != rebuilds;
                anyhow::ensure!(!forgotten, "the watcher started over from the bucket");
                Ok(())
            })
        });
        let e = match written.await {
            Ok(Ok(records)) => {
                let elapsed_ms = started.elapsed().as_millis() as u64;
                if stopping {
                    tracing::info!(records, revision, elapsed_ms, "cache snapshot written");
                } else {
                    tracing::debug!(records, revision, elapsed_ms, "cache snapshot written");
                }
                return true;
            }
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %e, "cache snapshot not written");
        false
    }
}
