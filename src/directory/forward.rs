//! Writes made at a leaf, carried out by the center: one round trip over the leafnode link
//! instead of two (the KV put, then its update event, each waiting for the center's
//! acknowledgement). The leaf has checked the token and the rate limit; it sends the validated
//! write on [`FORWARD_SUBJECT`], a center node (any of them: a queue group) writes the record
//! and stores its event exactly as for its own clients, and answers with the record as stored.
//! The leaf then puts it in its cache before its 200 (read-your-writes). When no center node answers the
//! subject (a center running NATS but not the service), the leaf writes through the link itself.
//! See docs/architecture.md, "A region on its own".
//!
//! Nothing new is trusted: a leaf may write any key of the bucket over its link anyway, and a
//! center node validates the write again.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Directory, WriteError};
use crate::{
    config::FORWARD_SUBJECT,
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
    actor: String,
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
    (user, update, actor, node_id): (&UserId, &PresenceUpdate, &str, &str),
) -> Result<Forwarded, WriteError> {
    let request = Request {
        user: user.to_string(),
        status: update.status,
        message: update.message.clone(),
        ttl_secs: update.ttl.as_secs(),
        actor: actor.to_string(),
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
        Ok(Reply::Failed { reason: Failure::Unavailable | Failure::Invalid }) => Err(WriteError::Unavailable),
        Err(e) => Err(unconfirmed(format!("the center's answer does not decode: {e}").into())),
    }
}

/// The center's side: carries out leaves' writes until `stop`.
pub(crate) async fn serve(
    directory: Directory,
    client: async_nats::Client,
    default_ttl: Duration,
    stop: CancellationToken,
) {
    let mut requests = loop {
        match client.queue_subscribe(FORWARD_SUBJECT, QUEUE.to_string()).await {
            Ok(subscription) => break subscription,
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
        let (directory, client) = (directory.clone(), client.clone());
        tokio::spawn(async move {
            let answer = carry_out(&directory, &message.payload, default_ttl).await;
            let payload = Bytes::from(serde_json::to_vec(&answer).expect("replies serialize"));
            if let Err(e) = client.publish(reply, payload).await {
                tracing::warn!(error = %chain(&e), "cannot answer a leaf's write");
            }
            drop(slot);
        });
    }
}

async fn carry_out(directory: &Directory, payload: &[u8], default_ttl: Duration) -> Reply {
    let Ok(request) = serde_json::from_slice::<Request>(payload) else {
        return Reply::Failed { reason: Failure::Invalid };
    };
    let update = PresenceUpdate::new(
        request.status.as_str(),
        request.message,
        Some(i64::try_from(request.ttl_secs).unwrap_or(i64::MAX)),
        default_ttl,
    );
    let (Ok(user), Ok(update)) = (UserId::parse(&request.user), update) else {
        return Reply::Failed { reason: Failure::Invalid };
    };
    match directory.carry_out(&user, update, &request.actor, &request.node_id).await {
        Ok(written) => Reply::Stored { presence: written.stored, revision: written.revision },
        Err(WriteError::Unconfirmed(_)) => Reply::Failed { reason: Failure::Unconfirmed },
        Err(WriteError::Store(StoreError::Contention)) => Reply::Failed { reason: Failure::Contention },
        Err(_) => Reply::Failed { reason: Failure::Unavailable },
    }
}
