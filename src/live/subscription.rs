//! A client's subscription: the users it follows (its watch list), resumed from a cursor or
//! started with a snapshot, and unregistered when dropped.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};

use super::{
    Cursor, Hub, Seen, State, Subscriber,
    timers::{remember, untime},
};
use crate::model::{Record, Status};

fn unwatch(state: &mut State, user: &Arc<str>, id: u64) {
    if let Some(watched) = state.users.get_mut(user) {
        watched.subscribers.retain(|s| s.id != id);
        if watched.subscribers.is_empty() {
            untime(&mut state.timers, watched, user);
            state.users.remove(user);
        }
    }
}

/// What [`Subscription::follow`] did.
#[derive(Debug)]
pub(crate) struct Following {
    /// The cursor of the feed when the watch list took effect: a snapshot read after it shows
    /// at least everything up to it.
    pub cursor: String,
    /// The changes since the client's cursor are queued: no snapshot is needed.
    pub resumed: bool,
}

/// A subscriber's registration: unregistered when dropped.
pub(crate) struct Subscription {
    pub(super) hub: Arc<Hub>,
    pub(super) subscriber: Arc<Subscriber>,
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
    pub(crate) fn follow<U: AsRef<str>>(&self, users: &[U], resume: Option<&Cursor>) -> Following {
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
        Following { cursor: hub.cursor(state.seq), resumed }
    }

    /// Takes users off the watch list.
    pub(crate) fn unfollow<U: AsRef<str>>(&self, users: &[U]) {
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
