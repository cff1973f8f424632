//! Loading a missing entry. Concurrent misses for one user share one load (single flight). The
//! load runs as its own task, so that a reader that gives up does not abandon it halfway, and its
//! result enters the cache through [`PresenceCache::upsert`]: a loaded record never replaces a
//! newer revision (a write that landed while the load was on its way) and never brings back an
//! erased user (whose tombstone carries the purge's revision). See docs/architecture.md, "The
//! cache".

use std::{
    collections::HashMap,
    error::Error,
    future::Future,
    sync::{Arc, Mutex},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};

use super::{Entry, PresenceCache};
use crate::model::Record;

/// Why a load failed: the loader's own error, shared by every reader that waited for it.
pub(crate) type LoadError = Arc<dyn Error + Send + Sync>;

type Pending = Shared<BoxFuture<'static, Result<Entry, LoadError>>>;

/// The loads under way, by user.
#[derive(Default)]
pub(super) struct Loads {
    pending: Mutex<HashMap<String, Pending>>,
}

impl PresenceCache {
    /// The entry for `user_id`, loading it with `load` on a miss. Concurrent callers share one
    /// load; a failed load is not cached. The answer is what the cache holds once the load
    /// settled: the loaded record, or a newer one that arrived meanwhile.
    pub(crate) async fn get_or_load<F, E>(&self, user_id: &str, load: F) -> Result<Entry, LoadError>
    where
        F: Future<Output = Result<Record, E>> + Send + 'static,
        E: Error + Send + Sync + 'static,
    {
        let pending = {
            let mut pending = self.loads.pending.lock().expect("loads lock");
            match pending.get(user_id) {
                Some(load) => load.clone(),
                None => {
                    let started = self.start_load(user_id.to_string(), load);
                    pending.insert(user_id.to_string(), started.clone());
                    started
                }
            }
        };
        pending.await
    }

    fn start_load<F, E>(&self, user: String, load: F) -> Pending
    where
        F: Future<Output = Result<Record, E>> + Send + 'static,
        E: Error + Send + Sync + 'static,
    {
        let cache = self.clone();
        let task = tokio::spawn(async move {
            let settled = match load.await {
                Ok(record) => Ok(cache.upsert(&user, record).await),
                Err(e) => Err(Arc::new(e) as LoadError),
            };
            cache.loads.pending.lock().expect("loads lock").remove(&user);
            settled
        });
        async move { task.await.unwrap_or_else(|e| Err(Arc::new(e) as LoadError)) }.boxed().shared()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::model::{CompactPresence, PresenceUpdate, StoredPresence, UserId};

    fn record(revision: u64, status: &str) -> Record {
        let update = PresenceUpdate::new(status, None, None, Duration::from_secs(60)).unwrap();
        let stored = StoredPresence::from_update(&UserId::parse("u").unwrap(), update, None, "n", Utc::now());
        Record { revision, presence: Some(CompactPresence::from(&stored)) }
    }

    /// A read misses, its KV read answers "never seen", and before that answer reaches the cache
    /// the user's first write lands: the write must win.
    #[tokio::test]
    async fn a_load_that_settles_after_a_newer_write_does_not_replace_it() {
        let cache = PresenceCache::new(1 << 20);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let reader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                let load = async move {
                    let _ = released.await;
                    Ok::<_, std::io::Error>(Record::NEVER_SEEN)
                };
                cache.get_or_load("u", load).await.unwrap()
            })
        };
        tokio::task::yield_now().await;
        cache.upsert("u", record(5, "busy")).await;
        release.send(()).unwrap();
        assert_eq!(reader.await.unwrap().revision, 5, "the reader gets the newer record");
        assert_eq!(cache.peek("u").await.unwrap().revision, 5, "the cache keeps it");
    }

    #[tokio::test]
    async fn an_erased_user_is_not_brought_back_by_an_older_load() {
        let cache = PresenceCache::new(1 << 20);
        cache.upsert("u", Record { revision: 9, presence: None }).await;
        let old = record(7, "online");
        let entry = cache.get_or_load("u", async move { Ok::<_, std::io::Error>(old) }).await.unwrap();
        assert_eq!((entry.revision, entry.presence.is_none()), (9, true));
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_failures_are_not_cached() {
        let cache = PresenceCache::new(1 << 20);
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                tokio::spawn(async move {
                    let load = async move {
                        loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err::<Record, _>(std::io::Error::other("NATS away"))
                    };
                    cache.get_or_load("u", load).await
                })
            })
            .collect();
        for reader in readers {
            assert_eq!(reader.await.unwrap().unwrap_err().to_string(), "NATS away");
        }
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(cache.peek("u").await.is_none(), "a failure is not cached");
        let entry =
            cache.get_or_load("u", async { Ok::<_, std::io::Error>(record(3, "away")) }).await.unwrap();
        assert_eq!(entry.revision, 3, "the next miss loads again");
    }
}
