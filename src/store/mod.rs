//! The one door to the KV bucket `presence`, the authoritative copy of every presence: one key
//! `user.{user_id}` per user, values the JSON of [`StoredPresence`]. Every read, write,
//! compare-and-set, purge and watch of the bucket goes through here, and every call through the
//! [`Caller`] (timeout, latency metric, circuit breaker). A write returns only once JetStream
//! acknowledged it, so a 200 means the write is on the server's disk.
//!
//! The bucket keeps one revision per key (history 1), no per-key TTL (expiry is the lifecycle's
//! job, so that `last_seen` survives it), and expiry markers for the watchers. See
//! docs/architecture.md, "The store".

mod bucket;
mod erasure;
mod error;
mod head;
mod leader;
mod recent;
pub(crate) mod region;
mod sent;
mod watch;

use std::{sync::Arc, time::Duration};

use async_nats::{
    HeaderValue, header,
    jetstream::{
        self,
        kv::{self, CreateErrorKind, Operation},
        stream::{DirectGetErrorKind, StorageType},
    },
};
use bytes::Bytes;
use chrono::Utc;

use bucket::Bucket;
pub(crate) use error::StoreError;
pub(crate) use head::Head;
pub(crate) use watch::{BucketChange, BucketChanges};

use crate::{
    config::KvConfig,
    model::{CompactPresence, PresenceUpdate, Record, StoredPresence, UserId},
    nats::{
        self, Binding, Caller,
        settings::{self, Authority, SharedStream},
        wrong_last_sequence,
    },
};

/// How long the server keeps an expiry marker (a watcher's signal that a key expired).
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(3600);
/// Attempts of a read-modify-write before giving up on a key under heavy contention.
const CAS_ATTEMPTS: usize = 8;
const KEY_PREFIX: &str = "user.";
/// The header of a KV message that is not a plain put.
const KV_OPERATION: &str = "KV-Operation";

/// The KV key of a user's presence (NATS KV keys may not contain `:`, hence `.`).
fn key(user: &str) -> String {
    format!("{KEY_PREFIX}{user}")
}

/// The user a KV key belongs to, if it is a presence key.
fn user_of(key: &str) -> Option<&str> {
    key.strip_prefix(KEY_PREFIX)
}

/// A presence whose status expires, as the bucket holds it at one revision, for the expiry job.
#[derive(Debug, Clone)]
pub(crate) struct Expiring {
    pub user: String,
    pub presence: StoredPresence,
}

/// A cheap `Clone` handle. On a leaf that started while its center was away it exists before
/// the bucket answers: its calls fail at once (as refused) until [`PresenceStore::bind`]
/// succeeds.
#[derive(Clone)]
pub(crate) struct PresenceStore {
    kv: Arc<Binding<Bucket>>,
    /// The JetStream context the bucket was bound with (for requests to its stream's API).
    js: Arc<Binding<jetstream::Context>>,
    caller: Caller,
    fence: Arc<head::Fence>,
    /// What this node is writing, for its watcher ([`sent`]).
    sent: Arc<sent::Sent>,
}

impl PresenceStore {
    /// A handle whose calls fail until [`PresenceStore::bind`] succeeds.
    pub(crate) fn unbound(caller: Caller) -> Self {
        Self {
            kv: Arc::new(Binding::unbound()),
            js: Arc::new(Binding::unbound()),
            caller,
            fence: Arc::default(),
            sent: Arc::default(),
        }
    }

    /// A handle on a bucket opened elsewhere (the region's copy), through `js` (no domain).
    fn bound(kv: kv::Store, js: &jetstream::Context, caller: Caller) -> Self {
        let store = Self::unbound(caller);
        store.kv.bind(Bucket::new(kv, js, nats::API_PREFIX));
        store
    }

    /// Binds the handle to the bucket, creating it (or bringing its settings up to date) as the
    /// config says.
    ///
    /// Only a node with [`Authority::Manage`] (the center) creates the bucket or changes its
    /// settings; a leaf binds to the bucket the center made (docs/architecture.md, "Hub and
    /// spoke").
    pub(crate) async fn bind(
        &self,
        (js, api): (&jetstream::Context, &str),
        cfg: &KvConfig,
        authority: Authority,
    ) -> Result<(), StoreError> {
        let caller = &self.caller;
        let wanted = SharedStream { replicas: cfg.replicas, retention: cfg.retention, per_subject: 1 };
        let stream = format!("KV_{}", cfg.bucket);
        settings::check(js, caller, &stream, authority, wanted).await?;
        self.js.bind(js.clone());
        if authority == Authority::Bind {
            let kv = caller.bounded("open", js.get_key_value(&cfg.bucket)).await?;
            self.kv.bind(Bucket::new(kv, js, api));
            return Ok(());
        }
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
        let kv = caller.bounded("open", js.create_or_update_key_value(config)).await?;
        self.kv.bind(Bucket::new(kv, js, api));
        Ok(())
    }

    /// Whether the bucket has been reached since start-up.
    pub(crate) fn is_bound(&self) -> bool {
        self.kv.is_bound()
    }

    /// Completes once the handle is bound.
    pub(crate) async fn wait_bound(&self) {
        self.kv.wait().await;
    }

    /// The breaker in front of NATS (shared with the audit log).
    pub(crate) fn caller(&self) -> &Caller {
        &self.caller
    }

    /// What the bucket holds for `user` now, read on behalf of a reader (the read breaker).
    pub(crate) async fn get(&self, user: &UserId) -> Result<Record, StoreError> {
        let entry = self.caller.call_read("get", self.kv.get("get")?.entry(key(user))).await?;
        let entry = entry.map(|e| (decode(&e.key, e.operation, &e.value), e.revision));
        Ok(match entry {
            Some((presence, revision)) => {
                Record { revision, presence: presence.as_ref().map(CompactPresence::from) }
            }
            None => Record::NEVER_SEEN,
        })
    }

    /// Applies `update` for `user` and returns the record as stored and acknowledged, with its
    /// KV revision. The new record keeps what the write does not change (`last_seen` for an
    /// `offline` write, the devices), so it is a compare-and-set on the revision it was made from;
    /// see [`PresenceStore::modify`].
    pub(crate) async fn write(
        &self,
        user: &UserId,
        update: PresenceUpdate,
        node_id: &str,
        known: Option<&Record>,
    ) -> Result<(StoredPresence, u64), StoreError> {
        let written = self
            .modify(user, known, |previous| {
                Some(StoredPresence::from_update(user, update.clone(), previous, node_id, Utc::now()))
            })
            .await?;
        // The closure always asks for a write.
        written.ok_or(StoreError::Contention)
    }

    /// A read-modify-write of `user`'s record: `change` makes the new record from the current one
    /// (`None`: nothing to write), which is written with compare-and-set on the revision it was
    /// made from, again from a fresh read when another write came in between.
    ///
    /// `known` is what this node holds of the user (its cache): when it is current, the write
    /// costs one KV call and no read. Returns what was written, or `None` if `change` had
    /// nothing to write.
    pub(crate) async fn modify(
        &self,
        user: &UserId,
        known: Option<&Record>,
        mut change: impl FnMut(Option<&StoredPresence>) -> Option<StoredPresence>,
    ) -> Result<Option<(StoredPresence, u64)>, StoreError> {
        let mut current = known.map(|r| (r.presence.as_ref().map(|p| p.to_stored(user)), r.revision));
        for attempt in 0..CAS_ATTEMPTS {
            if attempt > 1 {
                // A clustered stream refuses a compare-and-set while another write of the key is
                // on its way through the cluster: give it the time to land.
                tokio::time::sleep(backoff(attempt)).await;
            }
            let (previous, expected) = match current.take() {
                Some(known) => known,
                None => self.entry(user).await?.unwrap_or((None, 0)),
            };
            let Some(record) = change(previous.as_ref()) else { return Ok(None) };
            match self.compare_and_set(user, &record, expected).await {
                Ok(Some(revision)) => return Ok(Some((record, revision))),
                Ok(None) => continue,
                Err(StoreError::Call(e)) => return Err(StoreError::unconfirmed(record, e)),
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contention)
    }

    /// The revision at which `user`'s key holds exactly `record`, if it does now: how a write
    /// whose acknowledgement was lost finds out whether it landed.
    pub(crate) async fn holds(
        &self,
        user: &UserId,
        record: &StoredPresence,
    ) -> Result<Option<u64>, StoreError> {
        Ok(match self.entry(user).await? {
            Some((Some(stored), revision)) if stored == *record => Some(revision),
            _ => None,
        })
    }

    /// Writes `record` for `user` if the key is still at `expected` (0: the key must not exist).
    /// `None` when it is not: another write came first.
    pub(crate) async fn compare_and_set(
        &self,
        user: &str,
        record: &StoredPresence,
        expected: u64,
    ) -> Result<Option<u64>, StoreError> {
        let (key, value) = (key(user), encode(record));
        let kv = self.kv.get("compare_and_set")?;
        self.sent.sending(&key, &value, record);
        let outcome = if expected == 0 {
            let create = async {
                match kv.create(&key, value.clone()).await {
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists || wrong_last_sequence(&e) => {
                        Ok(None)
                    }
                    other => other.map(Some),
                }
            };
            self.caller.call("create", create).await
        } else {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(expected));
            let subject = format!("{}{key}", kv.put_to);
            let update = async {
                match nats::acked(&kv.client, subject, headers, value.clone()).await {
                    Err(e) if wrong_last_sequence(&e) => Ok(None),
                    other => other.map(Some),
                }
            };
            self.caller.call("update", update).await
        };
        if !matches!(outcome, Ok(Some(_))) {
            self.sent.not_stored(&key, &value);
        }
        Ok(outcome?)
    }

    /// The presence held at exactly `revision`, if that revision is still its key's latest (with
    /// history 1, a superseded revision is gone from the stream) and holds a status that expires.
    pub(crate) async fn live_at(&self, revision: u64) -> Result<Option<Expiring>, StoreError> {
        let kv = self.kv.get("get_revision")?;
        let get = async {
            match kv.stream.direct_get(revision).await {
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
                other => other.map(Some),
            }
        };
        let Some(message) = self.caller.call("get_revision", get).await? else { return Ok(None) };
        let prefix = format!("$KV.{}.", kv.name);
        let Some(user) = message.subject.as_str().strip_prefix(&prefix).and_then(user_of) else {
            return Ok(None);
        };
        let Ok(presence) = serde_json::from_slice::<StoredPresence>(&message.payload) else {
            return Ok(None);
        };
        if !presence.status.expires() {
            return Ok(None);
        }
        Ok(Some(Expiring { user: user.to_string(), presence }))
    }

    /// Every change after `revision` (with `0`: every current record first), as it happens.
    pub(crate) async fn watch(&self, after: u64) -> Result<BucketChanges, StoreError> {
        watch::start(self.kv.get("watch")?, &self.caller, after, self.sent.clone()).await
    }
}

/// A jittered wait before compare-and-set attempt `attempt` (from 2): up to 2, 4, 8, ... ms,
/// at most 64.
fn backoff(attempt: usize) -> Duration {
    let ceiling = 1u64 << attempt.min(6);
    Duration::from_micros(rand::random_range(ceiling * 250..=ceiling * 1000))
}

/// The presence a KV entry holds: `None` for a delete or purge marker, or a value that does not
/// decode (logged; treated as absent rather than failing every read of that user).
fn decode(key: &str, operation: Operation, value: &[u8]) -> Option<StoredPresence> {
    if operation != Operation::Put {
        return None;
    }
    serde_json::from_slice(value)
        .inspect_err(
            |e| tracing::warn!(key, error = %e, "stored presence does not decode; treating it as absent"),
        )
        .ok()
}

fn encode(record: &StoredPresence) -> Bytes {
    // Serializing a struct of strings, numbers and timestamps cannot fail.
    Bytes::from(serde_json::to_vec(record).expect("presence serializes"))
}
