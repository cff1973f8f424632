//! The authoritative store: the JetStream KV bucket `presence`, one key `user.{user_id}` per user,
//! values the JSON of [`StoredPresence`].
//!
//! Every call is bounded by `nats.request_timeout`, so that an unreachable NATS turns into
//! [`StoreError::Unavailable`] (a 503 at the edge) instead of a hung request. A put returns only
//! once JetStream acknowledged it, so a 200 means the write is on the server's disk.

use std::{future::Future, time::Duration};

use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
    stream::StorageType,
};
use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt, stream};

use crate::{
    config::KvConfig,
    model::{PresenceUpdate, StoredPresence, UserId},
};

/// How long the server keeps an expiry marker (a watcher's signal that a key expired).
const MARKER_TTL: Duration = Duration::from_secs(3600);
/// Concurrent KV reads one multi-user request may have in flight.
const READ_CONCURRENCY: usize = 64;
/// Attempts of a read-modify-write before giving up on a key under heavy contention.
const CAS_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("NATS did not answer within {0:?}")]
    Timeout(Duration),
    #[error("NATS request failed: {0}")]
    Nats(String),
    #[error("too much contention on one key")]
    Contention,
}

#[derive(Clone)]
pub struct PresenceStore {
    kv: kv::Store,
    timeout: Duration,
}

impl PresenceStore {
    /// Opens the bucket, creating it (or bringing its settings up to date) as the config says.
    pub async fn open(
        js: &jetstream::Context,
        cfg: &KvConfig,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let config = kv::Config {
            bucket: cfg.bucket.clone(),
            description: "Presence: one key per user, user.{user_id}".into(),
            history: 1,
            max_age: cfg.retention,
            storage: StorageType::File,
            num_replicas: cfg.replicas,
            limit_markers: Some(MARKER_TTL),
            ..Default::default()
        };
        let kv = bounded(timeout, js.create_or_update_key_value(config)).await?;
        Ok(Self { kv, timeout })
    }

    /// The stored presence of `user`, or `None` when there is none.
    pub async fn get(&self, user: &UserId) -> Result<Option<StoredPresence>, StoreError> {
        Ok(self.entry(user).await?.and_then(|(p, _)| p))
    }

    /// Reads many users concurrently (at most [`READ_CONCURRENCY`] in flight).
    pub async fn get_many(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, Option<StoredPresence>)>, StoreError> {
        stream::iter(users.iter().cloned())
            .map(|user| async move { self.get(&user).await.map(|p| (user, p)) })
            .buffer_unordered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Applies `update` for `user` and returns the record as stored and acknowledged.
    ///
    /// A write with an online-like status needs nothing from the previous record and is a plain
    /// put. An `offline` write keeps the previous `last_seen`, so it reads first and writes with
    /// compare-and-set on the revision, retrying when another write came in between.
    pub async fn write(
        &self,
        user: &UserId,
        update: PresenceUpdate,
        node_id: &str,
    ) -> Result<StoredPresence, StoreError> {
        if update.status != crate::model::Status::Offline {
            let record = StoredPresence::from_update(user, update, None, node_id, Utc::now());
            bounded(self.timeout, self.kv.put(user.kv_key(), encode(&record))).await?;
            return Ok(record);
        }
        for _ in 0..CAS_ATTEMPTS {
            let current = self.entry(user).await?;
            let (previous, revision) = match &current {
                Some((p, rev)) => (p.as_ref(), Some(*rev)),
                None => (None, None),
            };
            let record =
                StoredPresence::from_update(user, update.clone(), previous, node_id, Utc::now());
            let value = encode(&record);
            let outcome = match revision {
                Some(rev) => {
                    match bounded_raw(self.timeout, self.kv.update(user.kv_key(), value, rev))
                        .await?
                    {
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => None,
                        other => Some(other.map(drop).map_err(|e| StoreError::Nats(e.to_string()))),
                    }
                }
                None => {
                    match bounded_raw(self.timeout, self.kv.create(user.kv_key(), value)).await? {
                        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => None,
                        other => Some(other.map(drop).map_err(|e| StoreError::Nats(e.to_string()))),
                    }
                }
            };
            if let Some(result) = outcome {
                return result.map(|()| record);
            }
        }
        Err(StoreError::Contention)
    }

    /// The latest entry for `user`: the decoded presence (None for a delete marker or a value
    /// that does not decode) and its revision.
    async fn entry(
        &self,
        user: &UserId,
    ) -> Result<Option<(Option<StoredPresence>, u64)>, StoreError> {
        let Some(entry) = bounded(self.timeout, self.kv.entry(user.kv_key())).await? else {
            return Ok(None);
        };
        if entry.operation != Operation::Put {
            return Ok(Some((None, entry.revision)));
        }
        match serde_json::from_slice::<StoredPresence>(&entry.value) {
            Ok(p) => Ok(Some((Some(p), entry.revision))),
            Err(e) => {
                tracing::warn!(user = %user, revision = entry.revision, error = %e, "stored presence does not decode; treating it as absent");
                Ok(Some((None, entry.revision)))
            }
        }
    }
}

fn encode(record: &StoredPresence) -> Bytes {
    // Serializing a struct of strings, numbers and timestamps cannot fail.
    Bytes::from(serde_json::to_vec(record).expect("presence serializes"))
}

async fn bounded_raw<T>(limit: Duration, fut: impl Future<Output = T>) -> Result<T, StoreError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| StoreError::Timeout(limit))
}

async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    bounded_raw(limit, fut)
        .await?
        .map_err(|e| StoreError::Nats(e.to_string()))
}
