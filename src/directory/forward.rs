//! Writes made at a leaf, carried out by the center: one round trip over the leafnode link
//! instead of two (the KV put, then its update event, each waiting for the center's
//! acknowledgement). The leaf has checked the token and the rate limit; it sends the validated
//! write on [`FORWARD_SUBJECT`], a center node (any of them: a queue group) writes the record
//! and stores its event exactly as for its own clients, and answers with the record as stored.
//! The leaf then puts it in its cache before its 200 (read-your-writes). When no center node answers the
//! subject (a center running NATS but not the service), the leaf writes through the link itself.
//! See docs/architecture.md, "A region on its own".
//!
//! A leaf's erasure goes the same way, on [`FORWARD_ERASE_SUBJECT`], and has no other: a leaf
//! holds no right to purge the audit log (docs/security.md, "Who may use NATS").
//!
//! A center node carries out a leaf's write or erasure only with the user's own token, which it
//! checks again (the leaf's client presented it): a leaf cannot have the center forge the
//! presence of a user whose token it never saw, nor erase them. It validates the write again.
//! (A leaf may still write keys of the bucket over its link: its sessions' records, and its
//! writes when no center node serves; docs/security.md, "What a leaf may do".)

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Directory, WriteError};
use crate::{
    auth::Authenticator,
    config::{FORWARD_ERASE_SUBJECT, FORWARD_SUBJECT},
    model::{PresenceUpdate, Status, StoredPresence, UserId},
    nats::CallError,
    store::StoreError,
    telemetry::chain,
};

const QUEUE: &str = "presence-center";
/// Forwarded writes a center node carries out at once; more wait for a slot.
const IN_FLIGHT: usize = 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    user: String,
    status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    ttl_secs: u64,
    /// The user's own token, as the leaf's client presented it: the center checks it again.
    token: String,
    node_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Stored { presence: StoredPresence, revision: u64 },
    Failed { reason: Failure },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Failure {
    /// Nothing was written.
    Unavailable,
    /// The write went out and nobody knows whether it landed.
    Unconfirmed,
    /// Too many writes to the key at once.
    Contention,
    /// The request did not hold a valid write.
    Invalid,
    /// The token is not the user's, or not valid: nothing was done.
    Refused,
}

/// A leaf's erasure, for the center to carry out.
#[derive(Debug, Serialize, Deserialize)]
struct Erasure {
    user: String,
    /// The user's own token: the center checks it again.
    token: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Erased {
    /// Erased; the bucket's tombstone is at this revision.
    Erased {
        revision: u64,
    },
    Failed {
        reason: Failure,
    },
}

/// What a leaf's forwarded write came to.
pub(super) enum Forwarded {
    Stored(StoredPresence, u64),
    /// No center node serves forwarded writes: write through the link instead.
    NoCenter,
}

/// The leaf's side: sends a write to the center, within `limit`.
pub(super) async fn send(
    client: &async_nats::Client,
    limit: Duration,
    (user, update, token, node_id): (&UserId, &PresenceUpdate, &str, &str),
) -> Result<Forwarded, WriteError> {
    let request = Request {
        user: user.to_string(),
        status: update.status,
        message: update.message.clone(),
        ttl_secs: update.ttl.as_secs(),
        token: token.to_string(),
        node_id: node_id.to_string(),
    };
    let payload = Bytes::from(serde_json::to_vec(&request).expect("requests serialize"));
    let unconfirmed =
        |source: crate::nats::BoxError| WriteError::Unconfirmed(CallError::Failed { op: "forward", source });
    // The client's own request timeout is `nats.request_timeout`; this one may take twice that.
    let request = async_nats::Request::new().payload(payload).timeout(Some(limit));
    let answer = match client.send_request(FORWARD_SUBJECT, request).await {
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => return Ok(Forwarded::NoCenter),
        Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            return Err(WriteError::Unconfirmed(CallError::Timeout { op: "forward", limit }));
        }
        Err(e) => return Err(unconfirmed(e.into())),
        Ok(answer) => answer,
    };
    match serde_json::from_slice::<Reply>(&answer.payload) {
        Ok(Reply::Stored { presence, revision }) => Ok(Forwarded::Stored(presence, revision)),
        Ok(Reply::Failed { reason: Failure::Unconfirmed }) => {
            Err(unconfirmed("the center could not confirm the write".into()))
        }
        Ok(Reply::Failed { reason: Failure::Contention }) => Err(WriteError::Store(StoreError::Contention)),
        Ok(Reply::Failed { reason: Failure::Refused }) => Err(WriteError::Refused),
        Ok(Reply::Failed { reason: Failure::Unavailable | Failure::Invalid }) => Err(WriteError::Unavailable),
        Err(e) => Err(unconfirmed(format!("the center's answer does not decode: {e}").into())),
    }
}

/// The leaf's side of an erasure: the revision of the bucket's tombstone. Without a center node
/// to carry it out, the leaf cannot: unavailable, nothing erased.
pub(super) async fn send_erasure(
    client: &async_nats::Client,
    limit: Duration,
    user: &UserId,
    token: &str,
) -> Result<u64, WriteError> {
    let erasure = Erasure { user: user.to_string(), token: token.to_string() };
    let payload = Bytes::from(serde_json::to_vec(&erasure).expect("requests serialize"));
    let request = async_nats::Request::new().payload(payload).timeout(Some(limit));
    let answer = match client.send_request(FORWARD_ERASE_SUBJECT, request).await {
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(WriteError::Unavailable);
        }
        Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            return Err(WriteError::Unconfirmed(CallError::Timeout { op: "forward_erasure", limit }));
        }
        Err(e) => {
            return Err(WriteError::Unconfirmed(CallError::Failed {
                op: "forward_erasure",
                source: e.into(),
            }));
        }
        Ok(answer) => answer,
    };
    match serde_json::from_slice::<Erased>(&answer.payload) {
        Ok(Erased::Erased { revision }) => Ok(revision),
        Ok(Erased::Failed { reason: Failure::Unconfirmed }) => {
            Err(WriteError::Unconfirmed(CallError::Failed {
                op: "forward_erasure",
                source: "the center could not confirm the erasure".into(),
            }))
        }
        Ok(Erased::Failed { reason: Failure::Refused }) => Err(WriteError::Refused),
        Ok(Erased::Failed { .. }) | Err(_) => Err(WriteError::Unavailable),
    }
}

/// The center's side: carries out leaves' writes and erasures until `stop`, each only with the
/// user's own token, checked with `auth`.
pub(crate) async fn serve(
    (directory, auth): (Directory, Authenticator),
    client: async_nats::Client,
    default_ttl: Duration,
    stop: CancellationToken,
) {
    let subscribe = |subject: &'static str| client.queue_subscribe(subject, QUEUE.to_string());
    let mut requests = loop {
        match tokio::try_join!(subscribe(FORWARD_SUBJECT), subscribe(FORWARD_ERASE_SUBJECT)) {
            Ok((writes, erasures)) => break futures::stream::select(writes, erasures),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot take leaves' writes yet; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = requests.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let Some(reply) = message.reply.clone() else { continue };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (directory, auth, client) = (directory.clone(), auth.clone(), client.clone());
        tokio::spawn(async move {
            let answer = if message.subject.as_str() == FORWARD_ERASE_SUBJECT {
                serde_json::to_vec(&erase(&directory, &auth, &message.payload).await)
            } else {
                serde_json::to_vec(&carry_out(&directory, &auth, &message.payload, default_ttl).await)
            };
            let payload = Bytes::from(answer.expect("replies serialize"));
            if let Err(e) = client.publish(reply, payload).await {
                tracing::warn!(error = %chain(&e), "cannot answer a leaf's write");
            }
            drop(slot);
        });
    }
}

/// Whether `token` is a valid token of `user`'s.
fn owned_by(auth: &Authenticator, token: &str, user: &str) -> bool {
    auth.verify(token).is_ok_and(|verified| verified.subject == user)
}

async fn carry_out(
    directory: &Directory,
    auth: &Authenticator,
    payload: &[u8],
    default_ttl: Duration,
) -> Reply {
    let Ok(request) = serde_json::from_slice::<Request>(payload) else {
        return Reply::Failed { reason: Failure::Invalid };
    };
    if !owned_by(auth, &request.token, &request.user) {
        tracing::warn!(user = %request.user, leaf = %request.node_id, "a leaf's write came without the user's token; refused");
        return Reply::Failed { reason: Failure::Refused };
    }
    let update = PresenceUpdate::new(
        request.status.as_str(),
        request.message,
        Some(i64::try_from(request.ttl_secs).unwrap_or(i64::MAX)),
        default_ttl,
    );
    let (Ok(user), Ok(update)) = (UserId::parse(&request.user), update) else {
        return Reply::Failed { reason: Failure::Invalid };
    };
    match directory.carry_out(&user, update, &user, &request.node_id).await {
        Ok(written) => Reply::Stored { presence: written.stored, revision: written.revision },
        Err(WriteError::Unconfirmed(_)) => Reply::Failed { reason: Failure::Unconfirmed },
        Err(WriteError::Store(StoreError::Contention)) => Reply::Failed { reason: Failure::Contention },
        Err(_) => Reply::Failed { reason: Failure::Unavailable },
    }
}

async fn erase(directory: &Directory, auth: &Authenticator, payload: &[u8]) -> Erased {
    let Ok(erasure) = serde_json::from_slice::<Erasure>(payload) else {
        return Erased::Failed { reason: Failure::Invalid };
    };
    let Ok(user) = UserId::parse(&erasure.user) else { return Erased::Failed { reason: Failure::Invalid } };
    if !owned_by(auth, &erasure.token, &erasure.user) {
        tracing::warn!(user = %user, "a leaf's erasure came without the user's token; refused");
        return Erased::Failed { reason: Failure::Refused };
    }
    match directory.erase_here(&user).await {
        Ok(revision) => Erased::Erased { revision },
        Err(WriteError::Unconfirmed(_)) => Erased::Failed { reason: Failure::Unconfirmed },
        Err(_) => Erased::Failed { reason: Failure::Unavailable },
    }
}
