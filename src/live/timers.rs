//! The hub's own expiry timers: for every watched presence, its expiry time, so that the hub
//! announces the expiry the moment it happens (even on a node cut off from the center), once.

use std::{collections::BTreeSet, sync::Arc};

use chrono::{DateTime, Utc};

use super::{ChangeKind, Hub, Watched};
use crate::model::Record;

impl Hub {
    /// Announces the expiry of every watched presence whose time has come.
    pub(super) fn expire_due(&self, now: DateTime<Utc>) {
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
}

/// Makes `record` what `watched`'s subscribers were last told, and times its expiry. A presence
/// that is expired already counts as announced, unless `announce_expired`.
pub(super) fn remember(
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
pub(super) fn untime(timers: &mut BTreeSet<(DateTime<Utc>, Arc<str>)>, watched: &Watched, user: &Arc<str>) {
    if let Some(p) = watched.record.as_ref().and_then(|r| r.presence.as_ref()) {
        timers.remove(&(p.expires_at(), user.clone()));
    }
}
