//! Where the bucket stands ([`Head`], a fresh stream-info request), and a revision of the bucket
//! after now, asked of the stream's leader once for every writer that asks meanwhile: the writers
//! that join a request do so before it is sent, so the revision it answers is at least as high as
//! any written before each of them asked. The erasure check of a write whose user was erased
//! before (its event refused by the erasure's marker) waits for this node's watcher to reach
//! that revision and reads the rest from the cache (docs/lifecycle.md, "Erasure"), one request
//! for many writes instead of one read each.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use serde::{Deserialize, Serialize};

use super::{PresenceStore, StoreError, watch};
use crate::nats::Placement;

/// The bucket's position, as a fresh stream-info request sees it.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub last_revision: u64,
    /// The oldest revision the bucket still holds (the last one plus one for an empty bucket).
    pub first_revision: u64,
    /// When the bucket's stream was created, in nanoseconds: a bucket deleted and created again
    /// (or restored from a backup) is another one.
    pub created: i128,
    /// Records in the bucket (0 for an empty one).
    pub records: u64,
    /// When the last change was stored (none for an empty bucket).
    pub last_written_at: Option<DateTime<Utc>>,
    /// Its leader and replicas (none on a server without clustering).
    pub placement: Option<Placement>,
}

type Answer = Shared<BoxFuture<'static, Option<u64>>>;

/// The request the next writers join, until it is sent.
#[derive(Default)]
pub(super) struct Fence {
    next: Mutex<Option<Answer>>,
    /// Held while a request is out: the next one gathers writers meanwhile.
    sending: tokio::sync::Mutex<()>,
}

impl PresenceStore {
    /// Where the bucket stands, from a fresh stream-info request (not the info cached at open).
    /// Not guarded by the breaker: it is how the node finds out whether NATS answers at all.
    pub(crate) async fn head(&self) -> Result<Head, StoreError> {
        let mut stream = self.kv.get("stream_info")?.stream.clone();
        let info = self.caller.bounded("stream_info", stream.info()).await?;
        let placement = Placement::of(info.cluster.as_ref());
        let (state, last_written_at) =
            (&info.state, watch::utc(info.state.last_timestamp.unix_timestamp_nanos()));
        let last_written_at = (state.messages > 0).then_some(last_written_at);
        Ok(Head {
            last_revision: state.last_sequence,
            first_revision: state.first_sequence,
            created: info.created.unix_timestamp_nanos(),
            records: state.messages,
            last_written_at,
            placement,
        })
    }

    /// A revision at least as high as every revision the bucket held when this was called (none
    /// if the stream's leader did not answer).
    pub(crate) async fn revision_after_now(&self) -> Option<u64> {
        let answer = {
            let mut next = self.fence.next.lock().expect("fence lock");
            match &*next {
                Some(answer) => answer.clone(),
                None => {
                    let store = self.clone();
                    // A task of its own: a writer that gives up does not leave the others waiting.
                    let task = tokio::spawn(async move {
                        let _sending = store.fence.sending.lock().await;
                        // From here, later writers start the next request.
                        store.fence.next.lock().expect("fence lock").take();
                        store.last_revision().await
                    });
                    let answer = async move { task.await.ok().flatten() }.boxed().shared();
                    *next = Some(answer.clone());
                    answer
                }
            }
        };
        answer.await
    }
}

/// The one figure of a stream-info answer that [`PresenceStore::last_revision`] reads: the rest
/// (configuration, cluster) is skipped unread, where async-nats would buffer all of it (about
/// 40,000 instructions a request, against the PUT's 280,000, measured with callgrind).
#[derive(Deserialize)]
struct LastOf {
    state: Option<LastSequence>,
}

#[derive(Deserialize)]
struct LastSequence {
    last_seq: u64,
}

/// A stream-info request with no options.
#[derive(Serialize)]
struct NoOptions {}

impl PresenceStore {
    /// The bucket's last revision, from the stream's leader (a stream-info request, as
    /// [`PresenceStore::head`] sends, reading only its `state.last_seq`). None if it did not
    /// answer with one (an error, a timeout, the handle not bound).
    async fn last_revision(&self) -> Option<u64> {
        let kv = self.kv.get("last_revision").ok()?;
        let Ok(js) = self.js.get("last_revision") else {
            // A handle bound to a bucket opened elsewhere (the region's copy) has no context.
            return self.head().await.ok().map(|head| head.last_revision);
        };
        let subject = format!("STREAM.INFO.{}", kv.stream_name);
        let answer: LastOf =
            self.caller.bounded("last_revision", js.request(subject, &NoOptions {})).await.ok()?;
        answer.state.map(|state| state.last_seq)
    }
}
