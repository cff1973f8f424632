//! The authoritative store: the JetStream KV bucket `presence`, one key `user.{user_id}` per user,
//! values the JSON of [`StoredPresence`].
//!
//! Every call is bounded by `nats.request_timeout`, so that an unreachable NATS turns into an
//! error (a 503 or a degraded read at the edge) instead of a hung request. A put returns only
//! once JetStream acknowledged it, so a 200 means the write is on the server's disk.
//! [`breaker::Breaker`] sits in front of it in the read and write paths.

pub mod breaker;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    cache::Cached,
    config::KvConfig,
    model::{CompactPresence, PresenceUpdate, StoredPresence, UserId},
    telemetry::Metrics,
};
use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
    stream::StorageType,
};
use bytes::Bytes;
use chrono::Utc;

/// How long the server keeps an expiry marker (a watcher's signal that a key expired).
const MARKER_TTL: Duration = Duration::from_secs(3600);
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
    metrics: Arc<Metrics>,
}

impl PresenceStore {
    /// Opens the bucket, creating it (or bringing its settings up to date) as the config says.
    pub async fn open(
        js: &jetstream::Context,
        cfg: &KvConfig,
        timeout: Duration,
        metrics: Arc<Metrics>,
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
        Ok(Self { kv, timeout, metrics })
    }

    /// The bucket, for the watcher.
    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    /// What the KV holds for `user`: the presence (None when absent, deleted or undecodable) and
    /// its revision (0 when the key never existed).
    pub async fn load(&self, user: &UserId) -> Result<Cached, StoreError> {
        Ok(match self.entry(user).await? {
            Some((presence, revision)) => {
                Cached { revision, presence: presence.as_ref().map(CompactPresence::from) }
            }
            None => Cached { revision: 0, presence: None },
        })
    }

    /// Applies `update` for `user` and returns the record as stored and acknowledged, with its
    /// KV revision.
    ///
    /// A write with an online-like status needs nothing from the previous record and is a plain
    /// put. An `offline` write keeps the previous `last_seen`, so it reads first and writes with
    /// compare-and-set on the revision, retrying when another write came in between.
    pub async fn write(
        &self,
        user: &UserId,
        update: PresenceUpdate,
        node_id: &str,
    ) -> Result<(StoredPresence, u64), StoreError> {
        if update.status != crate::model::Status::Offline {
            let record = StoredPresence::from_update(user, update, None, node_id, Utc::now());
            let started = Instant::now();
            let revision = bounded(self.timeout, self.kv.put(user.kv_key(), encode(&record))).await?;
            self.metrics.observe_nats("put", started.elapsed());
            return Ok((record, revision));
        }
        for _ in 0..CAS_ATTEMPTS {
            let current = self.entry(user).await?;
            let (previous, revision) = match &current {
                Some((p, rev)) => (p.as_ref(), Some(*rev)),
                None => (None, None),
            };
            let record = StoredPresence::from_update(user, update.clone(), previous, node_id, Utc::now());
            let value = encode(&record);
            let started = Instant::now();
            let outcome = match revision {
                Some(rev) => {
                    match bounded_raw(self.timeout, self.kv.update(user.kv_key(), value, rev)).await? {
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => None,
                        other => Some(other.map_err(|e| StoreError::Nats(e.to_string()))),
                    }
                }
                None => match bounded_raw(self.timeout, self.kv.create(user.kv_key(), value)).await? {
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => None,
                    other => Some(other.map_err(|e| StoreError::Nats(e.to_string()))),
                },
            };
            self.metrics.observe_nats("update", started.elapsed());
            if let Some(result) = outcome {
                return result.map(|revision| (record, revision));
            }
        }
        Err(StoreError::Contention)
    }

    /// Removes `user`'s record and its history from the bucket (a purge marker remains).
    pub async fn purge(&self, user: &UserId) -> Result<(), StoreError> {
        bounded(self.timeout, self.kv.purge(user.kv_key())).await
    }

    /// The latest entry for `user`: the decoded presence (None for a delete marker or a value
    /// that does not decode) and its revision.
    async fn entry(&self, user: &UserId) -> Result<Option<(Option<StoredPresence>, u64)>, StoreError> {
        let started = Instant::now();
        let entry = bounded(self.timeout, self.kv.entry(user.kv_key())).await?;
        self.metrics.observe_nats("get", started.elapsed());
        let Some(entry) = entry else {
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
    tokio::time::timeout(limit, fut).await.map_err(|_| StoreError::Timeout(limit))
}

async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    bounded_raw(limit, fut).await?.map_err(|e| StoreError::Nats(e.to_string()))
}
