//! One change as subscribers receive it: which user, what kind, the presence after it, and the
//! KV revision that holds it. It is serialized once, however many subscribers receive it.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{Presence, Record, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChangeKind {
    /// A write: a new status, message or ttl (a refresh too).
    Update,
    /// The presence's ttl ran out: it reads `offline` now.
    Expire,
    /// The user was erased: nothing is known of them any more.
    Erase,
}

impl ChangeKind {
    /// What turned `previous` into `record`: an erasure leaves no presence; the expiry job's
    /// record is the same write turned `offline` (same `updated_at`); anything else is a write.
    pub(crate) fn of(previous: Option<&Record>, record: &Record) -> Self {
        let Some(now) = &record.presence else { return ChangeKind::Erase };
        let expired_from = previous.and_then(|p| p.presence.as_ref()).is_some_and(|p| {
            p.status.expires() && now.status == Status::Offline && p.updated_at == now.updated_at
        });
        if expired_from { ChangeKind::Expire } else { ChangeKind::Update }
    }
}

/// One change, as the node's live feed numbers it.
#[derive(Debug)]
pub(crate) struct Change {
    /// The feed's sequence number: what a resume cursor names.
    pub seq: u64,
    pub user: Arc<str>,
    pub kind: ChangeKind,
    pub revision: u64,
    /// The presence as a read at the time of the change shows it.
    pub presence: Presence<'static>,
    json: OnceLock<Box<str>>,
}

/// The wire form: `{"user_id", "kind", "presence", "revision"}`.
#[derive(Serialize)]
struct Wire<'a> {
    user_id: &'a str,
    kind: ChangeKind,
    presence: &'a Presence<'static>,
    revision: u64,
}

impl Change {
    pub(crate) fn new(
        seq: u64,
        user: Arc<str>,
        kind: ChangeKind,
        record: &Record,
        now: DateTime<Utc>,
    ) -> Self {
        let presence = match &record.presence {
            Some(p) => p.view(&user, now).into_owned(),
            None => Presence::unknown_named(&user),
        };
        Self { seq, user, kind, revision: record.revision, presence, json: OnceLock::new() }
    }

    /// The change as JSON, made on first use and shared by every subscriber after that.
    pub(crate) fn json(&self) -> &str {
        self.json.get_or_init(|| {
            let wire = Wire {
                user_id: &self.user,
                kind: self.kind,
                presence: &self.presence,
                revision: self.revision,
            };
            serde_json::to_string(&wire).expect("a change serializes").into_boxed_str()
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::model::{CompactPresence, PresenceUpdate, StoredPresence, UserId};

    fn record(revision: u64, status: &str, at: DateTime<Utc>) -> Record {
        let user = UserId::parse("alice").unwrap();
        let update = PresenceUpdate::new(status, None, Some(60), std::time::Duration::from_secs(60)).unwrap();
        let stored = StoredPresence::from_update(&user, update, None, "node", at);
        Record { revision, presence: Some(CompactPresence::from(&stored)) }
    }

    #[test]
    fn the_kind_of_a_change_follows_what_it_did() {
        let at = Utc::now();
        let online = record(1, "online", at);
        let written_offline = record(2, "offline", at + Duration::seconds(1));
        let mut expired = online.clone();
        expired.revision = 2;
        expired.presence.as_mut().unwrap().status = Status::Offline;
        let erased = Record { revision: 3, presence: None };
        assert_eq!(ChangeKind::of(Some(&online), &expired), ChangeKind::Expire);
        assert_eq!(ChangeKind::of(Some(&online), &written_offline), ChangeKind::Update);
        assert_eq!(ChangeKind::of(None, &expired), ChangeKind::Update, "nothing known before: a write");
        assert_eq!(ChangeKind::of(Some(&expired), &expired), ChangeKind::Update, "offline already");
        assert_eq!(ChangeKind::of(Some(&online), &erased), ChangeKind::Erase);
    }

    #[test]
    fn a_change_is_serialized_as_the_protocol_says() {
        let at = Utc::now();
        let change = Change::new(7, Arc::from("alice"), ChangeKind::Update, &record(5, "busy", at), at);
        let value: serde_json::Value = serde_json::from_str(change.json()).unwrap();
        assert_eq!(value["user_id"], "alice");
        assert_eq!(value["kind"], "update");
        assert_eq!(value["revision"], 5);
        assert_eq!(value["presence"]["status"], "busy");
        assert_eq!(value["presence"]["user_id"], "alice");
        let erased = Change::new(
            8,
            Arc::from("alice"),
            ChangeKind::Erase,
            &Record { revision: 6, presence: None },
            at,
        );
        let value: serde_json::Value = serde_json::from_str(erased.json()).unwrap();
        assert_eq!(value["kind"], "erase");
        assert_eq!(value["presence"], serde_json::json!({"user_id": "alice", "status": "offline"}));
    }
}
