//! Live presence: the node's feed of presence changes, and its subscribers (README, "Live
//! presence"; docs/architecture.md, "Live presence").
//!
//! The [`Hub`] is fed where the node learns of a newer record: the watcher (every change of the
//! bucket, in revision order: writes at any node, expiry transitions, erasures), and, earlier,
//! the write path and cache loads of this node. It numbers each change (the resume cursor),
//! keeps the newest `stream.resume_buffer` of them, and hands each to the subscribers that watch
//! its user: no NATS subscription per client, and a change nobody watches costs a hash lookup
//! and a slot in the resume buffer.
//!
//! For every watched user the hub remembers the record it last announced. That orders changes
//! (never a lower revision after a higher one), and lets the hub announce an expiry itself, at
//! the moment it happens, even on a node cut off from the center; the expiry job's `offline`
//! record, when it arrives, says nothing new and is not announced twice.
//!
//! A ticker checks, every [`TICK`], for due expiries, for the link going stale or fresh (told to
//! every subscriber), and for subscribers that have left changes unread for longer than
//! `stream.write_timeout` (dropped: their connection is closed).

mod change;
mod pacer;
mod subscriber;

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub(crate) use change::{Change, ChangeKind};
pub(crate) use pacer::Pacer;
pub(crate) use subscriber::{Batch, Dropped, LinkEvent, Seen, Subscriber};

use crate::{
    config::StreamConfig,
    link::LinkState,
    model::{Record, Status},
    telemetry::{
        Metrics,
        metrics::{ReasonLabels, StreamLabels},
    },
};

/// How often the hub looks at expiries, the link and slow subscribers.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// The protocol a subscription speaks (for limits and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Sse,
    WebSocket,
}

impl StreamKind {
    fn label(self) -> StreamLabels {
        StreamLabels {
            kind: match self {
                StreamKind::Sse => "sse",
                StreamKind::WebSocket => "websocket",
            },
        }
    }
}

/// Where a change comes from (see [`Hub::publish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Watcher,
    Node,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `stream.max_connections` streams are open on this node.
    Full,
    /// `stream.max_connections_per_ip` streams are open from the client's address.
    PerIp,
}

/// A resume cursor: `{epoch}-{seq}`, where the epoch names this run of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    epoch: String,
    seq: u64,
}

impl Cursor {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (epoch, seq) = text.trim().rsplit_once('-')?;
        Some(Self { epoch: epoch.to_string(), seq: seq.parse().ok()? })
    }
}

/// The feed and its subscribers: one per node.
pub(crate) struct Hub {
    state: Mutex<State>,
    /// Names this run of this node in cursors: a cursor from another node or run is no cursor.
    epoch: String,
    settings: StreamConfig,
    link: Arc<LinkState>,
    metrics: Arc<Metrics>,
}

struct State {
    /// The last sequence number given out.
    seq: u64,
    /// The newest changes, oldest first.
    log: VecDeque<Arc<Change>>,
    users: HashMap<Arc<str>, Watched>,
    subscribers: HashMap<u64, Registered>,
    next_id: u64,
    /// Expiries of watched presences, with the user.
    timers: BTreeSet<(DateTime<Utc>, Arc<str>)>,
    per_ip: HashMap<IpAddr, usize>,
    open: usize,
    /// What subscribers were last told of the link.
    stale: bool,
}

/// A watched user: who watches, and what they were last told.
#[derive(Default)]
struct Watched {
    subscribers: Vec<Arc<Subscriber>>,
    record: Option<Arc<Record>>,
    /// The expiry of `record` was announced (or had happened before anyone was told of it).
    expired: bool,
}

struct Registered {
    subscriber: Arc<Subscriber>,
    users: Vec<Arc<str>>,
    ip: IpAddr,
    kind: StreamKind,
}

impl Hub {
    pub(crate) fn new(settings: StreamConfig, link: Arc<LinkState>, metrics: Arc<Metrics>) -> Arc<Self> {
        let epoch = format!("{:08x}", rand::random::<u32>());
        let state = State {
            seq: 0,
            log: VecDeque::new(),
            users: HashMap::new(),
            subscribers: HashMap::new(),
            next_id: 0,
            timers: BTreeSet::new(),
            per_ip: HashMap::new(),
            open: 0,
            stale: link.stale(),
        };
        Arc::new(Self { state: Mutex::new(state), epoch, settings, link, metrics })
    }

    pub(crate) fn settings(&self) -> &StreamConfig {
        &self.settings
    }

    /// Streams open on this node.
    pub(crate) fn open(&self) -> usize {
        self.lock().open
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("hub lock")
    }

    /// The cursor naming everything up to `seq`.
    pub(crate) fn cursor(&self, seq: u64) -> String {
        format!("{}-{seq}", self.epoch)
    }

    /// `record` is the newest the node knows of `user`; `previous` is what it knew before, if
    /// anything. Announced to whoever watches the user (unless they were told of it already),
    /// and kept for resuming clients.
    ///
    /// The watcher ([`Source::Watcher`]) passes every change of the bucket, in revision order: it
    /// is what the resume buffer holds for users nobody watches. The write path and cache loads
    /// ([`Source::Node`]) pass what this node learned first, which only matters to watchers of the
    /// user: they hear of it before the watcher brings it.
    pub(crate) fn publish(&self, user: &str, previous: Option<&Record>, record: Arc<Record>, source: Source) {
        if record.revision == 0 {
            return; // A user the bucket never held: nothing happened.
        }
        let now = Utc::now();
        let mut state = self.lock();
        let state = &mut *state;
        let (user, kind) = match state.users.get_key_value(user) {
            Some((key, watched)) => {
                if watched.record.as_ref().is_some_and(|r| r.revision >= record.revision) {
                    return;
                }
                (key.clone(), ChangeKind::of(watched.record.as_deref().or(previous), &record))
            }
            None if source == Source::Node => return,
            None => (Arc::from(user), ChangeKind::of(previous, &record)),
        };
        let watched = state.users.get_mut(&user);
        let before = watched.as_ref().and_then(|w| w.record.as_deref()).or(previous);
        let announced_expiry = watched.as_ref().is_some_and(|w| w.expired);
        let unchanged = before.is_some_and(|before| match (&before.presence, &record.presence) {
            (Some(was), Some(is)) => {
                // Subscribers were told of `before` as it reads now, unless it expired since and
                // nobody announced that yet: then as it read just before.
                let told_at = match was.is_expired(now) && !announced_expiry {
                    true => was.expires_at() - chrono::Duration::milliseconds(1),
                    false => now,
                };
                was.view(&user, told_at) == is.view(&user, now)
            }
            (was, is) => was.is_none() && is.is_none(),
        });
        if let Some(watched) = watched {
            let announced = kind == ChangeKind::Expire && watched.expired;
            remember(&mut state.timers, watched, &user, record.clone(), now, false);
            if announced || unchanged {
                // The hub told its subscribers of this expiry when it happened, or the change
                // shows nothing new (a device that moved to another node, a write while
                // invisible): nobody sees a flicker.
                return;
            }
        } else if unchanged {
            return;
        }
        let change = state.append(user, kind, &record, now, self.settings.resume_buffer);
        self.deliver(state, &change);
    }

    /// The bucket was replaced and the watcher starts over from its history: what subscribers
    /// were told no longer orders what comes, and no cursor can be resumed from.
    pub(crate) fn reset(&self) {
        let mut state = self.lock();
        for watched in state.users.values_mut() {
            watched.record = None;
            watched.expired = false;
        }
        state.log.clear();
        state.timers.clear();
    }

    /// Hands `change` to its user's subscribers.
    fn deliver(&self, state: &State, change: &Arc<Change>) {
        let Some(watched) = state.users.get(&change.user) else { return };
        for subscriber in &watched.subscribers {
            if subscriber.push(change.clone()) {
                self.metrics.stream_changes_coalesced.inc();
            }
        }
    }

    /// A new subscription from `ip`, watching nobody yet, within the caps. `closer` is cancelled
    /// if the node drops the subscriber (see [`Subscriber::new`]).
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        kind: StreamKind,
        ip: IpAddr,
        closer: CancellationToken,
    ) -> Result<Subscription, Refused> {
        let mut state = self.lock();
        if state.open >= self.settings.max_connections {
            self.metrics.streams_refused.get_or_create(&ReasonLabels { reason: "total" }).inc();
            return Err(Refused::Full);
        }
        let from_ip = state.per_ip.entry(ip).or_default();
        if *from_ip >= self.settings.max_connections_per_ip {
            self.metrics.streams_refused.get_or_create(&ReasonLabels { reason: "per_ip" }).inc();
            return Err(Refused::PerIp);
        }
        *from_ip += 1;
        state.open += 1;
        state.next_id += 1;
        let subscriber = Arc::new(Subscriber::new(state.next_id, closer));
        let registered = Registered { subscriber: subscriber.clone(), users: Vec::new(), ip, kind };
        state.subscribers.insert(subscriber.id, registered);
        if state.stale {
            subscriber.push_link(LinkEvent::Stale);
        }
        self.metrics.streams_open.get_or_create(&kind.label()).inc();
        Ok(Subscription { hub: self.clone(), subscriber })
    }

    /// Every [`TICK`] until `stop`: due expiries, the link, slow subscribers.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            self.expire_due(Utc::now());
            self.follow_link();
            self.drop_slow(Instant::now());
        }
    }

    /// Announces the expiry of every watched presence whose time has come.
    fn expire_due(&self, now: DateTime<Utc>) {
        let mut state = self.lock();
        let state = &mut *state;
        while let Some((at, user)) = state.timers.first().cloned() {
            if at > now {
                break;
            }
            state.timers.pop_first();
            let Some(watched) = state.users.get_mut(&user) else { continue };
            let Some(record) = watched.record.clone() else { continue };
            let Some(p) = record.presence.as_ref().filter(|p| p.expires_at() == at && p.is_expired(now))
            else {
                continue;
            };
            if watched.expired {
                continue;
            }
            watched.expired = true;
            let until = at - chrono::Duration::milliseconds(1);
            if p.view(&user, until) == p.view(&user, now) {
                continue; // To others nothing changed (an `invisible` user without a session).
            }
            let change = state.append(user, ChangeKind::Expire, &record, now, self.settings.resume_buffer);
            self.deliver(state, &change);
        }
    }

    /// Tells every subscriber when the link goes stale or fresh.
    fn follow_link(&self) {
        let stale = self.link.stale();
        let mut state = self.lock();
        if state.stale == stale {
            return;
        }
        state.stale = stale;
        let event = if stale { LinkEvent::Stale } else { LinkEvent::Fresh };
        for registered in state.subscribers.values() {
            registered.subscriber.push_link(event);
        }
    }

    /// Ends the subscriptions whose client left changes unread for longer than the write timeout.
    fn drop_slow(&self, now: Instant) {
        let state = self.lock();
        for registered in state.subscribers.values() {
            let subscriber = &registered.subscriber;
            if subscriber.overdue(now, self.settings.write_timeout) {
                self.drop_for(subscriber, Dropped::Slow);
            }
        }
    }

    /// Drops a client for `reason`, found by its connection (a write that timed out, pings
    /// unanswered), and counts it.
    pub(crate) fn drop_for(&self, subscriber: &Subscriber, reason: Dropped) {
        if subscriber.dropped().is_none() {
            subscriber.drop_for(reason);
            self.metrics
                .stream_clients_dropped
                .get_or_create(&ReasonLabels { reason: reason.as_str() })
                .inc();
        }
    }

    /// Ends every subscription: the node is shutting down, and streams do not end by themselves.
    pub(crate) fn shutdown(&self) {
        let state = self.lock();
        for registered in state.subscribers.values() {
            registered.subscriber.drop_for(Dropped::Shutdown);
        }
    }

    /// Counts changes written to a client.
    pub(crate) fn delivered(&self, changes: usize) {
        self.metrics.stream_changes_delivered.inc_by(changes as u64);
    }
}

impl State {
    /// Numbers a change and keeps it for resuming clients.
    fn append(
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
    fn resumable_from(&self) -> u64 {
        self.seq - self.log.len() as u64
    }
}

/// Makes `record` what `watched`'s subscribers were last told, and times its expiry. A presence
/// that is expired already counts as announced, unless `announce_expired`.
fn remember(
    timers: &mut BTreeSet<(DateTime<Utc>, Arc<str>)>,
    watched: &mut Watched,
    user: &Arc<str>,
    record: Arc<Record>,
    now: DateTime<Utc>,
    announce_expired: bool,
) {
    untime(timers, watched, user);
    let live = record.presence.as_ref().filter(|p| p.status.expires());
    watched.expired = live.is_some_and(|p| p.is_expired(now) && !announce_expired);
    if let Some(p) = live.filter(|_| !watched.expired) {
        timers.insert((p.expires_at(), user.clone()));
    }
    watched.record = Some(record);
}

/// Takes the expiry of what `watched` holds off the timers (a user refreshing every 30 s would
/// otherwise leave an entry per refresh until each came due).
fn untime(timers: &mut BTreeSet<(DateTime<Utc>, Arc<str>)>, watched: &Watched, user: &Arc<str>) {
    if let Some(p) = watched.record.as_ref().and_then(|r| r.presence.as_ref()) {
        timers.remove(&(p.expires_at(), user.clone()));
    }
}

fn unwatch(state: &mut State, user: &Arc<str>, id: u64) {
    if let Some(watched) = state.users.get_mut(user) {
        watched.subscribers.retain(|s| s.id != id);
        if watched.subscribers.is_empty() {
            untime(&mut state.timers, watched, user);
            state.users.remove(user);
        }
    }
}

/// What [`Subscription::watch`] did.
#[derive(Debug)]
pub(crate) struct Watching {
    /// The cursor of the feed when the watch list took effect: a snapshot read after it shows
    /// at least everything up to it.
    pub cursor: String,
    /// The changes since the client's cursor are queued: no snapshot is needed.
    pub resumed: bool,
}

/// A subscriber's registration: unregistered when dropped.
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    subscriber: Arc<Subscriber>,
}

impl Subscription {
    pub(crate) fn subscriber(&self) -> &Arc<Subscriber> {
        &self.subscriber
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Replaces the watch list with `users`. With `resume` (a cursor this node gave out, recent
    /// enough), the changes of those users since then are queued at once.
    pub(crate) fn watch<U: AsRef<str>>(&self, users: &[U], resume: Option<&Cursor>) -> Watching {
        let hub = &self.hub;
        let mut state = hub.lock();
        let state = &mut *state;
        let id = self.subscriber.id;
        let old = std::mem::take(&mut state.subscribers.get_mut(&id).expect("registered").users);
        for user in &old {
            unwatch(state, user, id);
        }
        let mut new = Vec::with_capacity(users.len());
        for user in users {
            let user = user.as_ref();
            let key = match state.users.get_key_value(user) {
                Some((key, _)) => key.clone(),
                None => Arc::from(user),
            };
            state.users.entry(key.clone()).or_default().subscribers.push(self.subscriber.clone());
            new.push(key);
        }
        let watching: HashSet<&str> = new.iter().map(|u| &**u).collect();
        self.subscriber.retain(|user| watching.contains(user));
        let resumed = resume.is_some_and(|cursor| {
            let from = state.resumable_from();
            if cursor.epoch != hub.epoch || cursor.seq > state.seq || cursor.seq < from {
                return false;
            }
            for change in state.log.iter().skip((cursor.seq - from) as usize) {
                if watching.contains(&*change.user) {
                    self.subscriber.push(change.clone());
                }
            }
            true
        });
        state.subscribers.get_mut(&id).expect("registered").users = new;
        Watching { cursor: hub.cursor(state.seq), resumed }
    }

    /// Takes users off the watch list.
    pub(crate) fn unwatch<U: AsRef<str>>(&self, users: &[U]) {
        let mut state = self.hub.lock();
        let state = &mut *state;
        let id = self.subscriber.id;
        let registered = state.subscribers.get_mut(&id).expect("registered");
        let gone: HashSet<&str> = users.iter().map(AsRef::as_ref).collect();
        let (removed, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut registered.users).into_iter().partition(|u| gone.contains(&**u));
        registered.users = kept;
        for user in &removed {
            unwatch(state, user, id);
        }
        self.subscriber.retain(|user| !gone.contains(user));
    }

    /// Tells the hub what the client is about to be shown of its users (a snapshot, or what
    /// was current when it resumed), so that it announces nothing older and times their
    /// expiries. After a snapshot (`shown`), queued changes it already shows are dropped; after a
    /// resume, a presence that expired meanwhile is announced (the client may not know yet).
    pub(crate) fn seen(&self, records: &[(&str, Arc<Record>)], now: DateTime<Utc>, shown: bool) {
        let mut seen = HashMap::with_capacity(records.len());
        {
            let mut state = self.hub.lock();
            let state = &mut *state;
            for (user, record) in records {
                let Some(key) = state.users.get_key_value(*user).map(|(k, _)| k.clone()) else { continue };
                let watched = state.users.get_mut(&key).expect("present");
                if watched.record.as_ref().is_none_or(|r| r.revision < record.revision) {
                    remember(&mut state.timers, watched, &key, record.clone(), now, !shown);
                }
                let status = record.presence.as_ref().map_or(Status::Offline, |p| p.shown_status(now));
                seen.insert(*user, Seen { revision: record.revision, status });
            }
        }
        if shown {
            self.subscriber.prune(&seen);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        let state = &mut *state;
        let Some(registered) = state.subscribers.remove(&self.subscriber.id) else { return };
        for user in &registered.users {
            unwatch(state, user, registered.subscriber.id);
        }
        state.open -= 1;
        if let Some(n) = state.per_ip.get_mut(&registered.ip) {
            *n -= 1;
            if *n == 0 {
                state.per_ip.remove(&registered.ip);
            }
        }
        self.hub.metrics.streams_open.get_or_create(&registered.kind.label()).dec();
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{CompactPresence, DeviceKind, PresenceUpdate, StoredDevice, StoredPresence, UserId};

    fn hub(settings: StreamConfig) -> Arc<Hub> {
        Hub::new(settings, LinkState::new(), Arc::new(Metrics::new()))
    }

    fn record(revision: u64, status: &str, ttl: i64, at: DateTime<Utc>) -> Arc<Record> {
        let user = UserId::parse("u").unwrap();
        let update = PresenceUpdate::new(status, None, Some(ttl), Duration::from_secs(60)).unwrap();
        let stored = StoredPresence::from_update(&user, update, None, "n", at);
        Arc::new(Record { revision, presence: Some(CompactPresence::from(&stored)) })
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn open(hub: &Arc<Hub>, users: &[&str]) -> Subscription {
        let subscription = hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).unwrap();
        subscription.watch(users, None);
        subscription
    }

    fn revisions(batch: &Batch) -> Vec<(String, u64, ChangeKind)> {
        batch.changes.iter().map(|c| (c.user.to_string(), c.revision, c.kind)).collect()
    }

    #[test]
    fn watchers_get_their_users_changes_in_order_and_nothing_older() {
        let hub = hub(StreamConfig::default());
        let a = open(&hub, &["alice", "bob"]);
        let b = open(&hub, &["bob"]);
        let now = Utc::now();
        hub.publish("alice", None, record(2, "online", 60, now), Source::Node);
        hub.publish("alice", None, record(2, "online", 60, now), Source::Watcher);
        hub.publish("alice", None, record(1, "busy", 60, now), Source::Watcher);
        hub.publish("carol", None, record(3, "online", 60, now), Source::Watcher);
        hub.publish("bob", None, record(4, "away", 60, now), Source::Watcher);
        let taken = a.subscriber().take();
        assert_eq!(
            revisions(&taken),
            [("alice".into(), 2, ChangeKind::Update), ("bob".into(), 4, ChangeKind::Update)],
            "once each, never older, in feed order"
        );
        assert_eq!(revisions(&b.subscriber().take()), [("bob".into(), 4, ChangeKind::Update)]);
        // Newer replaces older while unread: one pending change per user.
        hub.publish("bob", None, record(5, "busy", 60, now), Source::Watcher);
        hub.publish("bob", None, record(6, "online", 60, now), Source::Watcher);
        assert_eq!(revisions(&b.subscriber().take()), [("bob".into(), 6, ChangeKind::Update)]);
        // The resume buffer holds every change of the bucket, watched or not, but nothing twice.
        let users: Vec<String> = hub.lock().log.iter().map(|c| format!("{}{}", c.user, c.revision)).collect();
        assert_eq!(users, ["alice2", "carol3", "bob4", "bob5", "bob6"]);
        // Never seen: not a change.
        a.subscriber().take();
        hub.publish("alice", None, Arc::new(Record::NEVER_SEEN), Source::Watcher);
        assert!(a.subscriber().take().is_empty());
    }

    #[test]
    fn an_expiry_is_announced_once_when_it_happens_and_timers_do_not_pile_up() {
        let hub = hub(StreamConfig::default());
        let a = open(&hub, &["alice"]);
        let written = Utc::now() - chrono::Duration::seconds(30);
        for (revision, ttl) in [(1, 40), (2, 50), (3, 60)] {
            hub.publish("alice", None, record(revision, "online", ttl, written), Source::Watcher);
        }
        assert_eq!(hub.lock().timers.len(), 1, "a refresh replaces the expiry it supersedes");
        a.subscriber().take();
        let expires = written + chrono::Duration::seconds(60);
        hub.expire_due(expires - chrono::Duration::milliseconds(1));
        assert!(a.subscriber().take().is_empty(), "not before its time");
        hub.expire_due(expires);
        let expired = a.subscriber().take();
        assert_eq!(revisions(&expired), [("alice".into(), 3, ChangeKind::Expire)]);
        assert_eq!(expired.changes[0].presence.status, Status::Offline);
        // The expiry job's record of the same presence says nothing new.
        let mut job = Record::clone(&record(3, "online", 60, written));
        job.revision = 4;
        job.presence.as_mut().unwrap().status = Status::Offline;
        hub.publish("alice", Some(&record(3, "online", 60, written)), Arc::new(job), Source::Watcher);
        assert!(a.subscriber().take().is_empty(), "one announcement per expiry");
        drop(a);
        assert!(hub.lock().timers.is_empty() && hub.lock().users.is_empty(), "nothing left of alice");
    }

    #[test]
    fn a_change_nobody_else_can_see_is_not_announced() {
        let hub = hub(StreamConfig::default());
        let a = open(&hub, &["alice"]);
        let now = Utc::now();
        let on = |revision, node: &str| {
            let mut record = Record::clone(&record(revision, "offline", 60, now));
            let device = StoredDevice { kind: DeviceKind::Web, node: node.into(), idle: false };
            let mut stored = record.presence.as_ref().unwrap().to_stored("alice");
            stored.devices.insert("tab".into(), device);
            record.presence = Some(CompactPresence::from(&stored));
            Arc::new(record)
        };
        hub.publish("alice", None, on(1, "n1"), Source::Watcher);
        assert_eq!(revisions(&a.subscriber().take()), [("alice".into(), 1, ChangeKind::Update)]);
        hub.publish("alice", None, on(2, "n2"), Source::Watcher);
        assert!(a.subscriber().take().is_empty(), "the device moved to another node: nothing to see");
        assert_eq!(hub.lock().users["alice"].record.as_ref().unwrap().revision, 2, "but it is remembered");
        // The expiry job's record before the hub's own tick: the expiry is announced.
        let written = now;
        hub.publish("alice", None, record(3, "busy", 60, written), Source::Watcher);
        a.subscriber().take();
        let mut job = Record::clone(&record(3, "busy", 60, written));
        job.revision = 4;
        job.presence.as_mut().unwrap().status = Status::Offline;
        hub.publish("alice", None, Arc::new(job), Source::Watcher);
        assert_eq!(revisions(&a.subscriber().take()), [("alice".into(), 4, ChangeKind::Expire)]);
    }

    #[test]
    fn a_cursor_resumes_only_on_this_run_and_within_the_buffer() {
        let hub = hub(StreamConfig { resume_buffer: 3, ..StreamConfig::default() });
        let now = Utc::now();
        let first = open(&hub, &["alice"]);
        hub.publish("alice", None, record(1, "online", 60, now), Source::Watcher);
        let cursor = Cursor::parse(&hub.cursor(1)).unwrap();
        hub.publish("bob", None, record(2, "online", 60, now), Source::Watcher);
        hub.publish("alice", None, record(3, "away", 60, now), Source::Watcher);
        drop(first);

        let back = hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).unwrap();
        let watching = back.watch(&["alice"], Some(&cursor));
        assert!(watching.resumed);
        assert_eq!(revisions(&back.subscriber().take()), [("alice".into(), 3, ChangeKind::Update)]);
        assert_eq!(watching.cursor, hub.cursor(3));

        let elsewhere = Cursor::parse("0badcafe-1").unwrap();
        assert!(!back.watch(&["alice"], Some(&elsewhere)).resumed, "another run's cursor");
        for revision in 4..=6 {
            hub.publish("carol", None, record(revision, "online", 60, now), Source::Watcher);
        }
        assert!(!back.watch(&["alice"], Some(&cursor)).resumed, "older than the buffer");
        let ahead = Cursor::parse(&hub.cursor(99)).unwrap();
        assert!(!back.watch(&["alice"], Some(&ahead)).resumed, "a cursor from the future");
        assert_eq!(Cursor::parse("garbage"), None);
    }

    #[test]
    fn a_snapshot_drops_what_it_shows_and_keeps_what_is_newer() {
        let hub = hub(StreamConfig::default());
        let now = Utc::now();
        let a = open(&hub, &["alice", "bob"]);
        hub.publish("alice", None, record(5, "online", 60, now), Source::Node);
        hub.publish("bob", None, record(7, "busy", 60, now), Source::Node);
        // The snapshot read found alice at 5 and bob still at 6.
        a.seen(&[("alice", record(5, "online", 60, now)), ("bob", record(6, "away", 60, now))], now, true);
        assert_eq!(revisions(&a.subscriber().take()), [("bob".into(), 7, ChangeKind::Update)]);
    }

    #[test]
    fn caps_refuse_and_a_closed_subscription_frees_its_place() {
        let hub =
            hub(StreamConfig { max_connections: 2, max_connections_per_ip: 1, ..StreamConfig::default() });
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let one = hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).unwrap();
        assert_eq!(hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).err(), Some(Refused::PerIp));
        let two = hub.subscribe(StreamKind::WebSocket, other, CancellationToken::new()).unwrap();
        let third = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            hub.subscribe(StreamKind::Sse, third, CancellationToken::new()).err(),
            Some(Refused::Full)
        );
        assert_eq!(hub.open(), 2);
        drop(one);
        assert!(hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).is_ok());
        drop(two);
    }

    #[test]
    fn a_subscriber_that_leaves_changes_unread_is_dropped_and_its_connection_closed() {
        let hub = hub(StreamConfig { write_timeout: Duration::from_millis(100), ..StreamConfig::default() });
        let closer = CancellationToken::new();
        let slow = hub.subscribe(StreamKind::Sse, IP, closer.clone()).unwrap();
        slow.watch(&["alice"], None);
        let fine = open(&hub, &["alice"]);
        hub.publish("alice", None, record(1, "online", 60, Utc::now()), Source::Watcher);
        fine.subscriber().take();
        hub.drop_slow(Instant::now() + Duration::from_millis(50));
        assert_eq!(slow.subscriber().dropped(), None, "not yet");
        hub.drop_slow(Instant::now() + Duration::from_millis(150));
        assert_eq!(slow.subscriber().dropped(), Some(Dropped::Slow));
        assert!(closer.is_cancelled(), "its connection is closed");
        assert_eq!(fine.subscriber().dropped(), None, "a client that reads is not");
    }
}
