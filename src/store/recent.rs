//! The records written since a moment, for the audit log's repair (a crash between a write's
//! put and its event leaves a record the audit log misses).

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use chrono::{DateTime, Utc};

use super::{BucketChange, PresenceStore, StoreError};
use crate::nats::Scan;

/// How long reading the records written since a moment may take.
const RECENT_WITHIN: Duration = Duration::from_secs(60);

impl PresenceStore {
    /// The latest change of every key written at or after `from` (the bucket keeps one revision
    /// per key: an older change of a key written since is gone), as the bucket stood when the
    /// read began. Read from the stream's leader, outside the breakers: the node's own work.
    pub(crate) async fn written_since(&self, from: DateTime<Utc>) -> Result<Vec<BucketChange>, StoreError> {
        let (kv, caller) = (self.kv.get("written_since")?, &self.caller);
        let client = self.js.get("written_since")?.client();
        let start = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
            from.timestamp_nanos_opt().unwrap_or(0),
        ))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let scan = Scan {
            op: "written_since",
            inbox: client.new_inbox(),
            subjects: vec![format!("{}>", kv.prefix)],
            from: DeliverPolicy::ByStartTime { start_time: start },
            within: RECENT_WITHIN,
            for_client: false,
        };
        let mut changes = Vec::new();
        scan.run(caller, &kv.stream, |message| changes.extend(BucketChange::of_message(&kv.prefix, message)))
            .await?;
        Ok(changes)
    }
}
