//! A presence as the KV stores it ([`StoredPresence`], JSON), as a node holds it in memory
//! ([`CompactPresence`]: no user id, which is the cache key, and a shared node id), and as a
//! reader sees it ([`Presence`], borrowing from the compact form).
//!
//! Expiry is evaluated when a compact presence is turned into a view, at read time: a presence
//! whose `ttl` ran out reads as `offline` with its message cleared and `last_seen` kept, whatever
//! a background job has or has not done yet.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashSet},
    str::FromStr,
    sync::{Arc, Mutex, OnceLock},
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use super::{
    PresenceUpdate, UpdateError, UserId,
    device::{Device, DeviceKind, StoredDevice, StoredDevices, by_kind, derived},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Online,
    Away,
    Busy,
    Offline,
    /// "Appear offline": everyone else reads `offline` (and `last_seen` does not advance); only
    /// the owner, reading with their own token, sees `invisible`.
    Invisible,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Busy => "busy",
            Status::Offline => "offline",
            Status::Invisible => "invisible",
        }
    }

    /// Seen by others as present: a write of one of these moves `last_seen`.
    pub(crate) fn is_live(self) -> bool {
        matches!(self, Status::Online | Status::Away | Status::Busy)
    }

    /// A status a client set that holds for its ttl: every status but `offline`. The expiry job
    /// turns it `offline` when the ttl runs out (for `invisible`, others may see nothing change).
    pub(crate) fn expires(self) -> bool {
        self != Status::Offline
    }
}

impl FromStr for Status {
    type Err = UpdateError;
    fn from_str(s: &str) -> Result<Self, UpdateError> {
        match s {
            "online" => Ok(Status::Online),
            "away" => Ok(Status::Away),
            "busy" => Ok(Status::Busy),
            "offline" => Ok(Status::Offline),
            "invisible" => Ok(Status::Invisible),
            _ => Err(UpdateError::Status),
        }
    }
}

/// What a presence looks like in the KV bucket: the public fields plus the absolute expiry time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredPresence {
    pub user_id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    // Times are written as the API shows them (milliseconds, always three digits), so that the
    // stored text and the API's agree even on a whole second.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_millis")]
    pub updated_at: DateTime<Utc>,
    pub node_id: String,
    /// Seconds, as the client asked or the default.
    pub ttl: u64,
    /// `updated_at + ttl`, in UTC: the moment this presence reads as offline.
    #[serde(serialize_with = "rfc3339_millis")]
    pub expires_at: DateTime<Utc>,
    /// The devices the user holds sessions on, by device id (none for a user without one).
    #[serde(default, skip_serializing_if = "StoredDevices::is_empty")]
    pub devices: StoredDevices,
}

/// A presence as the API shows it (docs/api.md, "What a user of the API must know"). It
/// borrows from the cache on the read path; events own theirs (`Presence<'static>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Presence<'a> {
    #[schema(value_type = String)]
    pub user_id: Cow<'a, str>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub message: Option<Cow<'a, str>>,
    /// The last time the user was known to be active; absent for a user never seen.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<DateTime<Utc>>,
    /// The time of the user's last write; absent for a user never seen.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<DateTime<Utc>>,
    /// The node that accepted the last write; absent for a user never seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub node_id: Option<Cow<'a, str>>,
    /// Seconds the status a client set holds without a refresh; present only while it holds
    /// (not once it is offline, by a write or by expiry, nor for a status that sessions derive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Each kind of device the user holds a session on, with its status; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<HashMap<String, Status>>, example = json!({"web": "online", "mobile": "away"}))]
    pub devices: Option<BTreeMap<DeviceKind, Status>>,
}

/// A presence as a node holds it in memory: about half the size of [`StoredPresence`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompactPresence {
    pub status: Status,
    pub message: Option<Box<str>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Shared between all presences written by the same node.
    pub node_id: Arc<str>,
    pub ttl: u32,
    /// The devices the user holds sessions on (one pointer for the many users without any).
    pub devices: Option<Box<Devices>>,
    // No `expires_at`: every write makes it `updated_at + ttl` (and the expiry job keeps both),
    // so it is computed, 12 bytes less for each of a million presences.
}

/// The devices of a user, as a node holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Devices(pub Vec<Device>);

/// One shared copy of each node id (there are few nodes and a million presences).
fn intern(node_id: &str) -> Arc<str> {
    const MAX_INTERNED: usize = 4096;
    static IDS: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    let mut ids = IDS.get_or_init(Default::default).lock().expect("interner lock");
    if let Some(id) = ids.get(node_id) {
        return id.clone();
    }
    let id: Arc<str> = Arc::from(node_id);
    if ids.len() < MAX_INTERNED {
        ids.insert(id.clone());
    }
    id
}

impl From<&StoredPresence> for CompactPresence {
    fn from(p: &StoredPresence) -> Self {
        Self {
            status: p.status,
            message: p.message.as_deref().map(Box::from),
            last_seen: p.last_seen,
            updated_at: p.updated_at,
            node_id: intern(&p.node_id),
            ttl: u32::try_from(p.ttl).unwrap_or(u32::MAX),
            devices: (!p.devices.is_empty()).then(|| {
                let devices = p.devices.iter().map(|(id, d)| Device {
                    id: Box::from(id.as_str()),
                    kind: d.kind,
                    node: intern(&d.node),
                    idle: d.idle,
                });
                Box::new(Devices(devices.collect()))
            }),
        }
    }
}

impl CompactPresence {
    /// The moment this presence reads as offline: `updated_at + ttl`.
    pub(crate) fn expires_at(&self) -> DateTime<Utc> {
        self.updated_at + chrono::Duration::seconds(i64::from(self.ttl))
    }

    pub(crate) fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.status.expires() && now >= self.expires_at()
    }

    /// The devices the user holds sessions on.
    pub(crate) fn devices(&self) -> &[Device] {
        self.devices.as_deref().map_or(&[], |d| &d.0)
    }

    /// The status a client set, while its ttl holds.
    fn manual(&self, now: DateTime<Utc>) -> Option<Status> {
        (self.status.expires() && !self.is_expired(now)).then_some(self.status)
    }

    /// The status at `now` as the owner sees it (docs/sessions.md, "Sessions", the precedence rule): the
    /// status a client set while its ttl holds (`invisible`, `busy`, `away`, `online`), else
    /// what the devices say (`online` if any is active, `away` if all are idle), else `offline`.
    pub(crate) fn owner_status(&self, now: DateTime<Utc>) -> Status {
        self.manual(now).or_else(|| derived(self.devices())).unwrap_or(Status::Offline)
    }

    /// What everyone but the owner sees at `now`: expiry applied, the status derived from the
    /// sessions, and an `invisible` user as an `offline` one whose last write was when they were
    /// last seen.
    ///
    /// An `invisible` write stays hidden after its ttl ran out too (then the devices decide the
    /// status, as for anyone).
    pub(crate) fn view<'a>(&'a self, user_id: &'a str, now: DateTime<Utc>) -> Presence<'a> {
        if self.status != Status::Invisible {
            return self.owner_view(user_id, now);
        }
        let hiding = self.manual(now).is_some();
        Presence {
            user_id: Cow::Borrowed(user_id),
            status: if hiding { Status::Offline } else { self.owner_status(now) },
            message: None,
            last_seen: self.last_seen,
            updated_at: self.last_seen,
            node_id: self.last_seen.map(|_| Cow::Borrowed(&*self.node_id)),
            ttl: None,
            devices: if hiding { None } else { self.devices.as_ref().map(|d| by_kind(&d.0)) },
        }
    }

    /// The status everyone but the owner sees at `now`.
    pub(crate) fn shown_status(&self, now: DateTime<Utc>) -> Status {
        match self.owner_status(now) {
            Status::Invisible => Status::Offline,
            status => status,
        }
    }

    /// What the owner sees at `now`: as [`CompactPresence::view`], with `invisible` as it is.
    /// The message and the ttl belong to the status a client set: shown while it holds.
    pub(crate) fn owner_view<'a>(&'a self, user_id: &'a str, now: DateTime<Utc>) -> Presence<'a> {
        let manual = self.manual(now).is_some();
        let devices = self.devices.as_ref().map(|d| by_kind(&d.0));
        Presence {
            user_id: Cow::Borrowed(user_id),
            status: self.owner_status(now),
            message: if manual { self.message.as_deref().map(Cow::Borrowed) } else { None },
            last_seen: self.last_seen,
            updated_at: Some(self.updated_at),
            node_id: Some(Cow::Borrowed(&self.node_id)),
            ttl: manual.then_some(u64::from(self.ttl)),
            devices,
        }
    }

    /// The record as the KV stores it (every field of it is held here).
    pub(crate) fn to_stored(&self, user_id: &str) -> StoredPresence {
        let devices = self.devices().iter().map(|d| {
            let stored = StoredDevice { kind: d.kind, node: d.node.to_string(), idle: d.idle };
            (d.id.to_string(), stored)
        });
        StoredPresence {
            user_id: user_id.to_string(),
            status: self.status,
            message: self.message.as_deref().map(str::to_string),
            last_seen: self.last_seen,
            updated_at: self.updated_at,
            node_id: self.node_id.to_string(),
            ttl: u64::from(self.ttl),
            expires_at: self.expires_at(),
            devices: devices.collect(),
        }
    }
}

/// Whether two presences of `user` look the same to everyone but the owner at `now`: a change
/// between them is not announced (a device that moved to another node, a write while invisible).
pub(crate) fn same_view(
    user: &str,
    a: Option<&CompactPresence>,
    b: Option<&CompactPresence>,
    now: DateTime<Utc>,
) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.view(user, now) == b.view(user, now),
        (None, None) => true,
        _ => false,
    }
}

/// Times in the API: RFC 3339, UTC, milliseconds (`2024-01-15T10:30:00.000Z`).
fn rfc3339<S: Serializer>(value: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(t) => rfc3339_millis(t, s),
        None => s.serialize_none(),
    }
}

/// The same for a time that is always there.
pub(crate) fn rfc3339_millis<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

impl<'a> Presence<'a> {
    /// The same presence, owning its strings.
    pub(crate) fn into_owned(self) -> Presence<'static> {
        Presence {
            user_id: Cow::Owned(self.user_id.into_owned()),
            status: self.status,
            message: self.message.map(|m| Cow::Owned(m.into_owned())),
            last_seen: self.last_seen,
            updated_at: self.updated_at,
            node_id: self.node_id.map(|n| Cow::Owned(n.into_owned())),
            ttl: self.ttl,
            devices: self.devices,
        }
    }

    /// A user this service has never seen: offline, and nothing else known.
    pub(crate) fn unknown(user: &'a UserId) -> Self {
        Self { user_id: Cow::Borrowed(user.as_str()), ..Presence::unknown_named("") }
    }

    /// The same, owned.
    pub(crate) fn unknown_named(user: &str) -> Presence<'static> {
        Presence {
            user_id: Cow::Owned(user.to_string()),
            status: Status::Offline,
            message: None,
            last_seen: None,
            updated_at: None,
            node_id: None,
            ttl: None,
            devices: None,
        }
    }
}

impl StoredPresence {
    /// The record a write produces. `last_seen` moves with every write of a live status; an
    /// `offline` or `invisible` write keeps what the previous record knew. The devices are the
    /// previous record's: a client's status does not end anyone's sessions.
    pub(crate) fn from_update(
        user: &UserId,
        update: PresenceUpdate,
        previous: Option<&StoredPresence>,
        node_id: &str,
        now: DateTime<Utc>,
    ) -> Self {
        let now = truncate_to_millis(now);
        let last_seen = if update.status.is_live() { Some(now) } else { previous.and_then(|p| p.last_seen) };
        let ttl = update.ttl.as_secs();
        Self {
            user_id: user.to_string(),
            status: update.status,
            message: update.message,
            last_seen,
            updated_at: now,
            node_id: node_id.to_string(),
            ttl,
            expires_at: now + chrono::Duration::seconds(ttl as i64),
            devices: previous.map(|p| p.devices.clone()).unwrap_or_default(),
        }
    }
}

impl StoredPresence {
    /// The record an expiry transition writes: `offline`, message cleared, everything else
    /// (`last_seen`, `updated_at` of the user's last write, `expires_at`, the devices) kept. An
    /// `invisible` user's last write stays hidden: `updated_at` becomes the time they were last
    /// seen, as others saw it all along.
    pub(crate) fn expired(&self) -> StoredPresence {
        let mut expired = StoredPresence { status: Status::Offline, message: None, ..self.clone() };
        if self.status == Status::Invisible
            && let Some(seen) = self.last_seen
        {
            expired.updated_at = seen;
            expired.expires_at = seen + chrono::Duration::seconds(self.ttl as i64);
        }
        expired
    }
}

fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn user() -> UserId {
        UserId::parse("user123").unwrap()
    }

    #[test]
    fn a_held_presence_stays_small() {
        // A million of them, with the cache's own overhead, must stay under 512 MiB (BENCHMARKS.md):
        // the devices of the few users with sessions cost one pointer in everyone else's.
        assert!(std::mem::size_of::<CompactPresence>() <= 80, "{}", std::mem::size_of::<CompactPresence>());
    }

    #[test]
    fn node_ids_are_shared_between_presences() {
        let a = intern("node-interned-test");
        let b = intern("node-interned-test");
        assert!(Arc::ptr_eq(&a, &b), "a million presences hold one copy of each node id");
    }

    #[test]
    fn expiry_reads_offline_and_keeps_last_seen() {
        let now = Utc::now();
        let update = PresenceUpdate::new("online", Some("hi".into()), Some(1), HOUR).unwrap();
        let stored = StoredPresence::from_update(&user(), update, None, "n1", now);
        let compact = CompactPresence::from(&stored);
        assert_eq!(compact.view("user123", now).status, Status::Online);
        let later = compact.view("user123", now + chrono::Duration::seconds(2));
        assert_eq!(later.status, Status::Offline);
        assert_eq!(later.message, None);
        assert_eq!(later.last_seen, stored.last_seen);
    }

    #[test]
    fn stored_and_shown_times_are_the_same_text_even_on_a_whole_second() {
        let whole_second = DateTime::parse_from_rfc3339("2026-11-29T01:00:51Z").unwrap().to_utc();
        let update = PresenceUpdate::new("online", None, None, HOUR).unwrap();
        let stored = StoredPresence::from_update(&user(), update, None, "n1", whole_second);
        let text: serde_json::Value = serde_json::to_value(&stored).unwrap();
        let shown =
            serde_json::to_value(CompactPresence::from(&stored).view("user123", whole_second)).unwrap();
        assert_eq!(text["updated_at"], "2026-11-29T01:00:51.000Z");
        assert_eq!(text["updated_at"], shown["updated_at"]);
        assert_eq!(text["last_seen"], shown["last_seen"]);
        let back: StoredPresence = serde_json::from_value(text).unwrap();
        assert_eq!(back, stored, "read back as written");
    }

    #[test]
    fn an_offline_write_keeps_the_previous_last_seen() {
        let t0 = Utc::now();
        let online = StoredPresence::from_update(
            &user(),
            PresenceUpdate::new("online", None, None, HOUR).unwrap(),
            None,
            "n1",
            t0,
        );
        let t1 = t0 + chrono::Duration::seconds(60);
        let offline = PresenceUpdate::new("offline", None, None, HOUR).unwrap();
        let after = StoredPresence::from_update(&user(), offline, Some(&online), "n1", t1);
        assert_eq!(after.last_seen, online.last_seen);
        assert!(after.updated_at > online.updated_at);
    }

    #[test]
    fn an_invisible_user_is_offline_to_others_and_as_written_to_the_owner() {
        let t0 = Utc::now();
        let online = PresenceUpdate::new("online", None, None, HOUR).unwrap();
        let online = StoredPresence::from_update(&user(), online, None, "n1", t0);
        let hiding = PresenceUpdate::new("invisible", Some("away from all".into()), Some(60), HOUR).unwrap();
        let t1 = t0 + chrono::Duration::seconds(10);
        let stored = StoredPresence::from_update(&user(), hiding, Some(&online), "n2", t1);
        assert_eq!(stored.last_seen, online.last_seen, "last_seen does not advance");
        let held = CompactPresence::from(&stored);
        let public = held.view("user123", t1);
        assert_eq!((public.status, public.message, public.ttl), (Status::Offline, None, None));
        assert_eq!((public.last_seen, public.updated_at), (online.last_seen, online.last_seen));
        assert_eq!(held.shown_status(t1), Status::Offline);
        let own = held.owner_view("user123", t1);
        assert_eq!(
            (own.status, own.message.as_deref(), own.ttl),
            (Status::Invisible, Some("away from all"), Some(60))
        );
        let later = t1 + chrono::Duration::seconds(61);
        assert_eq!(held.owner_view("user123", later).status, Status::Offline, "its ttl runs out");
        assert!(!Status::Invisible.is_live(), "last_seen does not move");
        let never_seen = StoredPresence::from_update(
            &user(),
            PresenceUpdate::new("invisible", None, None, HOUR).unwrap(),
            None,
            "n1",
            t0,
        );
        let never_seen = CompactPresence::from(&never_seen);
        let shown = never_seen.view("user123", t0);
        assert_eq!((shown.last_seen, shown.updated_at, shown.node_id), (None, None, None));
    }

    fn with_devices(
        status: &str,
        ttl: i64,
        devices: &[(&str, &str, bool)],
        at: DateTime<Utc>,
    ) -> CompactPresence {
        let update = PresenceUpdate::new(status, Some("set".into()), Some(ttl), HOUR).unwrap();
        let mut stored = StoredPresence::from_update(&user(), update, None, "n1", at);
        for (id, kind, idle) in devices {
            let device = StoredDevice { kind: kind.parse().unwrap(), node: "n1".into(), idle: *idle };
            stored.devices.insert(id.to_string(), device);
        }
        CompactPresence::from(&stored)
    }

    /// docs/sessions.md, "Sessions": the precedence rule, case by case. A status a client set holds for
    /// its ttl and overrides the sessions; once it ran out (or was `offline`), the devices decide.
    #[test]
    fn the_precedence_rule() {
        use Status::*;
        let t0 = Utc::now();
        let active = ("d1", "web", false);
        let idle = ("d2", "mobile", true);
        let idle_too = ("d3", "desktop", true);
        #[rustfmt::skip]
        type Devices<'a> = &'a [(&'a str, &'a str, bool)];
        let table: &[(&str, Devices, Status, Status, Status)] = &[
            // set status, devices,             shown while its ttl holds, after, owner while it holds
            ("online", &[], Online, Offline, Online),
            ("online", &[idle], Online, Away, Online),
            ("online", &[active, idle], Online, Online, Online),
            ("busy", &[active], Busy, Online, Busy),
            ("busy", &[idle], Busy, Away, Busy),
            ("away", &[active], Away, Online, Away),
            ("away", &[], Away, Offline, Away),
            ("offline", &[active], Online, Online, Online),
            ("offline", &[idle, idle_too], Away, Away, Away),
            ("offline", &[], Offline, Offline, Offline),
            ("invisible", &[active], Offline, Online, Invisible),
            ("invisible", &[], Offline, Offline, Invisible),
        ];
        let later = t0 + chrono::Duration::seconds(61);
        for &(set, devices, holding, after, owner) in table {
            let p = with_devices(set, 60, devices, t0);
            let case = format!("{set} with {devices:?}");
            assert_eq!(p.shown_status(t0), holding, "{case}: while its ttl holds");
            assert_eq!(p.view("user123", t0).status, holding, "{case}: the view says the same");
            assert_eq!(p.owner_view("user123", t0).status, owner, "{case}: the owner");
            assert_eq!(p.shown_status(later), after, "{case}: once its ttl ran out");
            let shown = p.view("user123", t0);
            let set_holds = set != "offline" && set != "invisible";
            assert_eq!(shown.message.is_some(), set_holds, "{case}: the message belongs to the set status");
            assert_eq!(shown.ttl.is_some(), set_holds, "{case}: so does the ttl");
        }
    }

    #[test]
    fn devices_are_shown_by_kind_and_hidden_for_an_invisible_user() {
        let t0 = Utc::now();
        let devices = [("a", "web", true), ("b", "web", false), ("c", "mobile", true), ("d", "other", true)];
        let p = with_devices("offline", 60, &devices, t0);
        let shown = serde_json::to_value(p.view("user123", t0)).unwrap();
        assert_eq!(shown["devices"], serde_json::json!({"web": "online", "mobile": "away", "other": "away"}));
        let none = serde_json::to_value(with_devices("online", 60, &[], t0).view("user123", t0)).unwrap();
        assert!(none.get("devices").is_none(), "absent without a session");
        let hiding = with_devices("invisible", 60, &devices, t0);
        assert_eq!(hiding.view("user123", t0).devices, None);
        assert!(hiding.owner_view("user123", t0).devices.is_some(), "the owner sees their devices");
        let back = hiding.to_stored("user123");
        assert_eq!(CompactPresence::from(&back), hiding, "held and stored forms say the same");
    }

    #[test]
    fn an_expired_invisible_user_stays_as_others_saw_them() {
        let t0 = Utc::now();
        let online = PresenceUpdate::new("online", None, None, HOUR).unwrap();
        let online = StoredPresence::from_update(&user(), online, None, "n1", t0);
        let hiding = PresenceUpdate::new("invisible", None, Some(60), HOUR).unwrap();
        let t1 = t0 + chrono::Duration::seconds(10);
        let hidden = StoredPresence::from_update(&user(), hiding, Some(&online), "n1", t1);
        let expired = hidden.expired();
        let later = t1 + chrono::Duration::seconds(61);
        let before = CompactPresence::from(&hidden);
        let after = CompactPresence::from(&expired);
        assert_eq!(before.view("user123", t1), after.view("user123", later), "nothing to see");
        assert!(same_view("user123", Some(&before), Some(&after), later));
    }
}
