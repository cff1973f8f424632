//! Reading part of a stream once, from a start to where the stream stood when the read began: an
//! ordered consumer, read to its end within a deadline, then deleted (one consumer per read
//! would otherwise pile up until the server timed them out).

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, push::OrderedConfig},
    stream::Stream,
};
use futures::StreamExt;

use super::{CallError, Caller};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ScanError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the read was cut short after {read} of {pending} messages")]
    CutShort { read: usize, pending: usize },
}

/// What to read: the subjects, where to start, and how long the whole read may take.
pub(crate) struct Scan {
    pub op: &'static str,
    /// Where the messages are delivered (a fresh inbox of the node's client).
    pub inbox: String,
    pub subjects: Vec<String>,
    pub from: DeliverPolicy,
    pub within: Duration,
    /// Under the read breaker (a client's read) or unguarded (the node's own background work).
    pub for_client: bool,
}

impl Scan {
    /// Hands every message from the start to the stream's end (as it stood when the read began)
    /// to `each`, in stream order: the number read.
    pub(crate) async fn run(
        self,
        caller: &Caller,
        stream: &Stream,
        mut each: impl FnMut(jetstream::Message),
    ) -> Result<usize, ScanError> {
        let Scan { op, inbox, subjects, from, within, for_client } = self;
        let config = OrderedConfig {
            deliver_subject: inbox,
            filter_subjects: subjects,
            deliver_policy: from,
            ..Default::default()
        };
        let guarded = |what| async move {
            match for_client {
                true => caller.call_read(op, what).await,
                false => caller.bounded(op, what).await,
            }
        };
        let mut consumer = guarded(stream.create_consumer(config)).await?;
        let name = consumer.cached_info().name.clone();
        let read = async {
            let deadline = tokio::time::Instant::now() + within;
            let pending = caller.bounded(op, consumer.info()).await?.num_pending as usize;
            if pending == 0 {
                return Ok(0);
            }
            let mut messages = caller.bounded(op, consumer.messages()).await?;
            for read in 0..pending {
                let next = tokio::time::timeout_at(deadline, messages.next()).await;
                let Ok(Some(Ok(message))) = next else { return Err(ScanError::CutShort { read, pending }) };
                each(message);
            }
            Ok(pending)
        }
        .await;
        let _ = caller.bounded(op, stream.delete_consumer(&name)).await;
        read
    }
}
