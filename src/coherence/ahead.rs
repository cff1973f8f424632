//! The bucket's changes decoded ahead of the watcher, in a task of their own: while the watcher
//! lands one run of records, the next is read off the connection and decoded (at start-up, a
//! million records; measured in BENCHMARKS.md, "Issue 27"). Order is kept: runs go one after the
//! other through a bounded channel, each in revision order.

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use crate::{
    model::CompactPresence,
    store::{BucketChange, BucketChanges, StoreError},
};

/// Changes taken in one run, at most: as many as had arrived when the run began.
const RUN: usize = 256;
/// Runs decoded and not yet landed, at most.
const RUNS_AHEAD: usize = 8;

/// A change with its record decoded (`None`: an erasure, a deletion, a value that does not
/// decode).
pub(super) struct Decoded {
    pub change: BucketChange,
    pub presence: Option<CompactPresence>,
}

pub(super) type Run = Vec<Result<Decoded, StoreError>>;

/// Reads and decodes `changes` in a task of its own until they end or the receiver is dropped.
pub(super) fn decode_ahead(mut changes: BucketChanges) -> mpsc::Receiver<Run> {
    let (tell, runs) = mpsc::channel(RUNS_AHEAD);
    tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                () = tell.closed() => return,
                first = changes.next() => first,
            };
            let Some(first) = first else { return };
            let mut run = Vec::with_capacity(RUN);
            run.push(decoded(first));
            while run.len() < RUN {
                match changes.next().now_or_never() {
                    Some(Some(next)) => run.push(decoded(next)),
                    Some(None) => {
                        let _ = tell.send(run).await;
                        return;
                    }
                    None => break,
                }
            }
            if tell.send(run).await.is_err() {
                return;
            }
        }
    });
    runs
}

fn decoded(next: Result<BucketChange, StoreError>) -> Result<Decoded, StoreError> {
    next.map(|mut change| {
        let presence = change.take_sent().or_else(|| change.presence().as_ref().map(CompactPresence::from));
        Decoded { change, presence }
    })
}
