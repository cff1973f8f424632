//! Live presence: the node's feed of presence changes, and its subscribers (docs/live.md, "Live
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

mod caps;
mod change;
mod pacer;
mod resume;
mod subscriber;
mod subscription;
mod timers;

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub(crate) use caps::{Refused, StreamKind};
pub(crate) use change::{Change, ChangeKind};
pub(crate) use pacer::Pacer;
pub(crate) use resume::Cursor;
pub(crate) use subscriber::{Batch, Dropped, LinkEvent, Seen, Subscriber};
pub(crate) use subscription::{Following, Subscription};
use timers::remember;

use crate::{
    config::StreamConfig,
    link::LinkState,
    model::Record,
    telemetry::{Metrics, metrics::ReasonLabels},
};

/// How often the hub looks at expiries, the link and slow subscribers.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// Where a change comes from (see [`Hub::publish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Watcher,
    Node,
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

#[cfg(test)]
mod tests;
