//! Following a user's landings while a write is on its way: a write whose acknowledgement was
//! lost may still land, and then be overwritten before anyone looks at the bucket (it keeps one
//! revision per key). This node's watcher sees every change, so a write that follows its user
//! from before it is sent learns whether it landed, and at which revision, whenever that is.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use tokio::sync::mpsc;

use crate::model::{CompactPresence, Record};

type Sightings = mpsc::UnboundedSender<(u64, CompactPresence)>;

/// Who follows which user: a registration's number and where its sightings go.
#[derive(Default)]
pub(super) struct Followers {
    by_user: Mutex<HashMap<String, Vec<(u64, Sightings)>>>,
    /// Registrations held: a landing takes the lock only while there are some.
    count: AtomicUsize,
    next: AtomicUsize,
}

impl Followers {
    /// Starts following `user`'s landings, until the [`Follow`] is dropped.
    pub(super) fn follow(self: &Arc<Self>, user: &str) -> Follow {
        let (tell, seen) = mpsc::unbounded_channel();
        let id = self.next.fetch_add(1, SeqCst) as u64;
        let mut by_user = self.by_user.lock().expect("followers lock");
        by_user.entry(user.to_string()).or_default().push((id, tell));
        self.count.fetch_add(1, SeqCst);
        Follow { followers: self.clone(), user: user.to_string(), id, seen }
    }

    /// Tells `user`'s followers that `record` landed.
    pub(super) fn landed(&self, user: &str, record: &Record) {
        let Some(presence) = &record.presence else { return };
        if self.count.load(SeqCst) == 0 {
            return;
        }
        let by_user = self.by_user.lock().expect("followers lock");
        for (_, tell) in by_user.get(user).into_iter().flatten() {
            let _ = tell.send((record.revision, presence.clone()));
        }
    }
}

/// One write's following of its user: see [`crate::coherence::Landing::follow`].
pub(crate) struct Follow {
    followers: Arc<Followers>,
    user: String,
    id: u64,
    seen: mpsc::UnboundedReceiver<(u64, CompactPresence)>,
}

impl Follow {
    /// The revision `presence` landed at, if this node saw it land since the following began or
    /// sees it within `within`.
    pub(crate) async fn landed(mut self, presence: &CompactPresence, within: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (revision, landed) = tokio::time::timeout_at(deadline, self.seen.recv()).await.ok()??;
            if &landed == presence {
                return Some(revision);
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let mut by_user = self.followers.by_user.lock().expect("followers lock");
        if let Some(list) = by_user.get_mut(&self.user) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                by_user.remove(&self.user);
            }
        }
        self.followers.count.fetch_sub(1, SeqCst);
    }
}
