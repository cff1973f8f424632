//! What a client knows of its watched users, and the rules that keep it right across reconnects:
//! a change applies only if its revision is newer than the view's (an expiry, at the revision it
//! expired, too); changes that arrive between a subscribe and its snapshot are held and applied
//! after it, if newer than what it showed; a snapshot replaces what it shows unless the view
//! holds a newer revision, and reports the differences as changes.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::model::{Change, ChangeKind, Presence, Status};

/// A change as the node sends it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireChange {
    pub user_id: String,
    pub kind: String,
    pub presence: Presence,
    pub revision: u64,
}

#[derive(Debug, Default)]
pub(crate) struct View {
    entries: HashMap<String, (Presence, u64)>,
    /// `Some` between a subscribe and its snapshot: the changes that came meanwhile.
    held: Option<Vec<WireChange>>,
}

impl View {
    /// A subscribe went out: changes wait for its snapshot.
    pub(crate) fn subscribed(&mut self) {
        self.held.get_or_insert_with(Vec::new);
    }

    /// Whether a snapshot is awaited.
    pub(crate) fn awaiting(&self) -> bool {
        self.held.is_some()
    }

    pub(crate) fn get(&self, user: &str) -> Option<&Presence> {
        self.entries.get(user).map(|(p, _)| p)
    }

    /// Keeps only the users still watched.
    pub(crate) fn keep(&mut self, watched: &HashSet<String>) {
        self.entries.retain(|u, _| watched.contains(u));
    }

    /// Changes from the node: what they changed, or nothing while a snapshot is awaited.
    pub(crate) fn changes(&mut self, changes: Vec<WireChange>) -> Vec<Change> {
        if let Some(held) = &mut self.held {
            held.extend(changes);
            return Vec::new();
        }
        changes.into_iter().filter_map(|c| self.apply(c)).collect()
    }

    /// The snapshot after a subscribe: what differs from the view, then the held changes.
    pub(crate) fn snapshot(
        &mut self,
        data: HashMap<String, Presence>,
        revisions: &HashMap<String, u64>,
    ) -> Vec<Change> {
        let mut told = Vec::new();
        for (user, presence) in data {
            let revision = revisions.get(&user).copied().unwrap_or(0);
            match self.entries.get(&user) {
                Some((_, known)) if *known > revision => continue,
                Some((shown, _)) if *shown == presence => {
                    self.entries.insert(user, (presence, revision));
                }
                _ => {
                    let kind = ChangeKind::Snapshot;
                    told.push(Change { user_id: user.clone(), kind, presence: presence.clone(), revision });
                    self.entries.insert(user, (presence, revision));
                }
            }
        }
        for change in self.held.take().unwrap_or_default() {
            told.extend(self.apply(change));
        }
        told
    }

    fn apply(&mut self, change: WireChange) -> Option<Change> {
        let kind = match change.kind.as_str() {
            "expire" => ChangeKind::Expire,
            "erase" => ChangeKind::Erase,
            _ => ChangeKind::Update,
        };
        let newer = match self.entries.get(&change.user_id) {
            None => true,
            Some((_, known)) if change.revision > *known => true,
            // An expiry is told at the revision that expired.
            Some((shown, known)) => {
                change.revision == *known && kind == ChangeKind::Expire && shown.status != Status::Offline
            }
        };
        if !newer {
            return None;
        }
        let WireChange { user_id, presence, revision, .. } = change;
        self.entries.insert(user_id.clone(), (presence.clone(), revision));
        Some(Change { user_id, kind, presence, revision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(user: &str, status: Status) -> Presence {
        Presence { user_id: user.into(), status, message: None, other: Default::default() }
    }

    fn wire(user: &str, kind: &str, status: Status, revision: u64) -> WireChange {
        WireChange { user_id: user.into(), kind: kind.into(), presence: presence(user, status), revision }
    }

    #[test]
    fn an_older_revision_never_regresses_the_view() {
        let mut view = View::default();
        assert_eq!(view.changes(vec![wire("ann", "update", Status::Busy, 5)]).len(), 1);
        assert!(view.changes(vec![wire("ann", "update", Status::Online, 4)]).is_empty());
        assert!(view.changes(vec![wire("ann", "update", Status::Online, 5)]).is_empty(), "the same revision");
        assert_eq!(view.get("ann").unwrap().status, Status::Busy);
        let expired = view.changes(vec![wire("ann", "expire", Status::Offline, 5)]);
        assert_eq!(expired[0].kind, ChangeKind::Expire, "an expiry at the revision that expired");
        assert!(view.changes(vec![wire("ann", "expire", Status::Offline, 5)]).is_empty(), "once");
    }

    #[test]
    fn changes_crossing_a_subscribe_wait_for_its_snapshot_and_apply_if_newer() {
        let mut view = View::default();
        view.changes(vec![wire("ann", "update", Status::Online, 3)]);
        view.subscribed();
        // One older than the snapshot (sent before the subscribe was taken), one newer.
        let held = view
            .changes(vec![wire("ann", "update", Status::Away, 4), wire("bob", "update", Status::Busy, 9)]);
        assert!(held.is_empty());
        let data = HashMap::from([
            ("ann".to_string(), presence("ann", Status::Busy)),
            ("bob".to_string(), presence("bob", Status::Online)),
        ]);
        let revisions = HashMap::from([("ann".to_string(), 6), ("bob".to_string(), 8)]);
        let told = view.snapshot(data, &revisions);
        let told: Vec<(&str, ChangeKind, Status)> =
            told.iter().map(|c| (c.user_id.as_str(), c.kind, c.presence.status)).collect();
        assert!(told.contains(&("ann", ChangeKind::Snapshot, Status::Busy)));
        assert!(told.contains(&("bob", ChangeKind::Snapshot, Status::Online)));
        assert_eq!(
            told.last(),
            Some(&("bob", ChangeKind::Update, Status::Busy)),
            "the newer held change after"
        );
        assert_eq!(view.get("ann").unwrap().status, Status::Busy, "the older held change was dropped");
        assert!(!view.awaiting());
    }

    #[test]
    fn a_snapshot_reports_only_differences_and_never_goes_back() {
        let mut view = View::default();
        view.changes(vec![wire("ann", "update", Status::Busy, 7)]);
        view.subscribed();
        let data = HashMap::from([("ann".to_string(), presence("ann", Status::Busy))]);
        assert!(view.snapshot(data, &HashMap::from([("ann".to_string(), 7)])).is_empty());
        view.subscribed();
        // Another node, behind: its snapshot is older than what the view holds.
        let data = HashMap::from([("ann".to_string(), presence("ann", Status::Online))]);
        assert!(view.snapshot(data, &HashMap::from([("ann".to_string(), 6)])).is_empty());
        assert_eq!(view.get("ann").unwrap().status, Status::Busy);
        // Unwatched, it is forgotten: watched again, its next snapshot is news.
        view.keep(&HashSet::new());
        assert!(view.get("ann").is_none());
    }
}
