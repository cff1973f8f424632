//! Resuming: every change the hub announces is numbered, and the newest `stream.resume_buffer`
//! of them are kept, so that a client that reconnects with the cursor of the last change it saw
//! (`Last-Event-ID`) gets the changes of its users since then instead of a snapshot.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Change, ChangeKind, State};
use crate::model::Record;

/// A resume cursor: `{epoch}-{seq}`, where the epoch names this run of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(super) epoch: String,
    pub(super) seq: u64,
}

impl Cursor {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (epoch, seq) = text.trim().rsplit_once('-')?;
        Some(Self { epoch: epoch.to_string(), seq: seq.parse().ok()? })
    }
}

impl State {
    /// Numbers a change and keeps it for resuming clients.
    pub(super) fn append(
        &mut self,
        user: Arc<str>,
        kind: ChangeKind,
        record: &Record,
        now: DateTime<Utc>,
        keep: usize,
    ) -> Arc<Change> {
        self.seq += 1;
        let change = Arc::new(Change::new(self.seq, user, kind, record, now));
        self.log.push_back(change.clone());
        while self.log.len() > keep {
            self.log.pop_front();
        }
        change
    }

    /// The oldest sequence number a cursor may name and still be resumed from.
    pub(super) fn resumable_from(&self) -> u64 {
        self.seq - self.log.len() as u64
    }
}
