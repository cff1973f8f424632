//! What the bucket says about one user at one moment: a presence (or none) and the KV revision
//! that holds it. The store reads and writes records, the cache keeps them, reads answer with
//! them; the revision orders them (a record never replaces one with a higher revision).

use super::CompactPresence;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    /// The KV revision this record reflects; 0 when the key never existed.
    pub revision: u64,
    /// The presence, or `None` when the KV has none for the user (never written, erased, or a
    /// value that does not decode).
    pub presence: Option<CompactPresence>,
}

impl Record {
    /// A user the bucket has never held.
    pub(crate) const NEVER_SEEN: Record = Record { revision: 0, presence: None };
}
