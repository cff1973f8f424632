//! What can go wrong at the bucket.

use crate::{
    model::StoredPresence,
    nats::{CallError, ScanError, settings::SettingsError},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("too much contention on one key")]
    Contention,
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// A write went out but its acknowledgement did not come back: it may or may not be stored.
    #[error("the write was sent but not acknowledged")]
    Unconfirmed {
        record: Box<StoredPresence>,
        #[source]
        source: CallError,
    },
}

impl StoreError {
    /// The call was refused by the open breaker, not tried.
    pub(crate) fn refused(&self) -> bool {
        matches!(self, StoreError::Call(e) if e.refused())
    }

    /// A write that failed after it was sent: nothing can be said about its outcome, unless it
    /// was never made (refused) or no stream took it (nothing stored: the write is unavailable).
    pub(super) fn unconfirmed(record: StoredPresence, source: CallError) -> Self {
        if source.refused() || source.reached_no_stream() {
            StoreError::Call(source)
        } else {
            StoreError::Unconfirmed { record: Box::new(record), source }
        }
    }
}
