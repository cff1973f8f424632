//! What this node is writing to the bucket, by key, for its own watcher: a change whose bytes
//! are the very bytes this node sent takes the record they were made from instead of decoding
//! them, about a twentieth of a PUT's instructions on this node (BENCHMARKS.md, "Ninth round").
//! Nothing is assumed about whose write the change was or at which revision: equal bytes decode
//! to an equal record (times are whole milliseconds; tested).
//!
//! An entry goes when the watcher takes it, when its write was refused or failed, or when the
//! next write of the key replaces it. One the watcher never takes (the key overwritten by another
//! node before the watcher read it) would stay: when [`MAX`] keys are held, all are dropped at
//! once, and the changes they were kept for are decoded instead.

use std::{collections::HashMap, sync::Mutex};

use bytes::Bytes;

use crate::model::{CompactPresence, StoredPresence};

/// Keys held at most: far more than the writes in flight between a send and the watcher.
const MAX: usize = 4096;

#[derive(Default)]
pub(crate) struct Sent(Mutex<HashMap<String, (Bytes, CompactPresence)>>);

impl Sent {
    /// `bytes`, the encoding of `record`, are being written to `key`.
    pub(super) fn sending(&self, key: &str, bytes: &Bytes, record: &StoredPresence) {
        let mut sent = self.0.lock().expect("sent lock");
        if sent.len() >= MAX && !sent.contains_key(key) {
            sent.clear();
        }
        sent.insert(key.to_string(), (bytes.clone(), CompactPresence::from(record)));
    }

    /// The write of `bytes` to `key` did not land (refused, failed): its entry goes.
    pub(super) fn not_stored(&self, key: &str, bytes: &Bytes) {
        let mut sent = self.0.lock().expect("sent lock");
        if sent.get(key).is_some_and(|(held, _)| held == bytes) {
            sent.remove(key);
        }
    }

    /// The record `bytes` were made from, if this node sent exactly them to `key`.
    pub(super) fn take(&self, key: &str, bytes: &Bytes) -> Option<CompactPresence> {
        let mut sent = self.0.lock().expect("sent lock");
        if sent.is_empty() {
            // Another node's writes, a start-up's replay: nothing to hash the key for.
            return None;
        }
        match sent.get(key) {
            Some((held, _)) if held == bytes => sent.remove(key).map(|(_, record)| record),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::model::{PresenceUpdate, UserId};

    fn record(message: &str) -> StoredPresence {
        let update = PresenceUpdate::new("busy", Some(message.into()), Some(60), Duration::ZERO).unwrap();
        StoredPresence::from_update(&UserId::parse("ann").unwrap(), update, None, "node-a", Utc::now())
    }

    fn encode(record: &StoredPresence) -> Bytes {
        super::super::encode(record)
    }

    #[test]
    fn a_written_record_is_what_its_bytes_decode_to() {
        let written = record("a \"quoted\" word, é");
        let decoded: StoredPresence = serde_json::from_slice(&encode(&written)).unwrap();
        assert_eq!(CompactPresence::from(&decoded), CompactPresence::from(&written));
    }

    #[test]
    fn only_the_very_bytes_sent_take_their_record() {
        let sent = Sent::default();
        let (one, two) = (record("one"), record("two"));
        let (one_bytes, two_bytes) = (encode(&one), encode(&two));
        sent.sending("user.ann", &one_bytes, &one);
        assert_eq!(sent.take("user.bob", &one_bytes), None, "another key");
        assert_eq!(sent.take("user.ann", &two_bytes), None, "other bytes: another write's");
        assert_eq!(sent.take("user.ann", &one_bytes), Some(CompactPresence::from(&one)));
        assert_eq!(sent.take("user.ann", &one_bytes), None, "taken once");

        sent.sending("user.ann", &one_bytes, &one);
        sent.sending("user.ann", &two_bytes, &two);
        assert_eq!(sent.take("user.ann", &one_bytes), None, "replaced by the next write");
        sent.not_stored("user.ann", &one_bytes);
        assert_eq!(sent.take("user.ann", &two_bytes), Some(CompactPresence::from(&two)), "not another's");
        sent.sending("user.ann", &one_bytes, &one);
        sent.not_stored("user.ann", &one_bytes);
        assert_eq!(sent.take("user.ann", &one_bytes), None, "a refused write's record goes");
    }

    #[test]
    fn records_never_taken_make_room_for_new_writes() {
        let sent = Sent::default();
        let (one, bytes) = (record("one"), encode(&record("one")));
        for i in 0..MAX {
            sent.sending(&format!("user.u{i}"), &bytes, &one);
        }
        sent.sending("user.ann", &bytes, &one);
        assert_eq!(sent.take("user.ann", &bytes), Some(CompactPresence::from(&one)), "the newest is kept");
        assert_eq!(sent.take("user.u0", &bytes), None, "the full set was dropped");
    }
}
