//! What a room's watchers are shown: its snapshot, a batch of changes as one viewer sees it
//! (an invisible member's own devices for them alone), and the counts.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use serde::Serialize;

use super::{
    member::{Member, diff},
    room::{Before, Room},
};

/// What a viewer sees of one user across a batch: their devices before and after.
type Seen<'a> = (&'a [Member], &'a [Member]);

#[derive(Serialize)]
struct Change<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    joins: BTreeMap<&'a str, Vec<&'a Member>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    updates: BTreeMap<&'a str, Vec<&'a Member>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    leaves: BTreeMap<&'a str, Vec<&'a Member>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    typing: Option<Vec<&'a str>>,
    count: usize,
    connections: usize,
}

#[derive(Serialize)]
pub(super) struct Snapshot<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<BTreeMap<&'a str, &'a [Member]>>,
    pub count: usize,
    pub connections: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typing: Option<Vec<&'a str>>,
}

impl Room {
    /// Count and connections as `viewer` sees them: hidden members but themselves left out.
    pub(super) fn counts(&self, viewer: Option<&str>) -> (usize, usize) {
        let (mut count, mut connections) =
            (self.members.len() - self.hidden.len(), self.connections - self.hidden_connections);
        if let Some(own) = viewer.filter(|v| self.hidden.contains(*v)).and_then(|v| self.members.get(v)) {
            count += 1;
            connections += own.len();
        }
        (count, connections)
    }

    fn visible(&self, user: &str, viewer: Option<&str>) -> bool {
        !self.hidden.contains(user) || viewer == Some(user)
    }

    fn typing_list(&self, viewer: Option<&str>) -> Vec<&str> {
        let mut list: Vec<&str> =
            self.typing.keys().map(|u| &**u).filter(|u| self.visible(u, viewer)).collect();
        list.sort_unstable();
        list
    }

    /// The room as `viewer` sees it now (`members`: listed, up to `max_listed` users).
    pub(super) fn snapshot<'a>(
        &'a self,
        room: &'a str,
        viewer: Option<&str>,
        (kind, members, max_listed): (Option<&'static str>, bool, usize),
    ) -> Snapshot<'a> {
        let (count, connections) = self.counts(viewer);
        let listed = members.then(|| {
            let visible = self.members.iter().filter(|(u, _)| self.visible(u, viewer));
            visible.take(max_listed).map(|(u, d)| (&**u, &d[..])).collect::<BTreeMap<_, _>>()
        });
        let truncated = listed.as_ref().map(|l| l.len() < count);
        let typing = members.then(|| self.typing_list(viewer));
        Snapshot { kind, room, members: listed, count, connections, truncated, typing }
    }

    /// The batch as `viewer` sees it (from `baseline` for the users in it), as a `room` message;
    /// `None` if it shows them nothing.
    pub(super) fn change(
        &self,
        room: &str,
        viewer: Option<&str>,
        baseline: Option<&HashMap<Arc<str>, Before>>,
    ) -> Option<String> {
        let empty: &[Member] = &[];
        let mut message = Change {
            kind: "room",
            room,
            joins: BTreeMap::new(),
            updates: BTreeMap::new(),
            leaves: BTreeMap::new(),
            typing: self.typing_changed.then(|| self.typing_list(viewer)),
            count: 0,
            connections: 0,
        };
        for (user, before) in &self.pending {
            let before = baseline.and_then(|b| b.get(user)).unwrap_or(before);
            let own = viewer == Some(&**user);
            let after = self.members.get(user).map_or(empty, |m| &m[..]);
            let seen: Seen<'_> = (
                if before.hidden && !own { empty } else { &before.members },
                if self.hidden.contains(user) && !own { empty } else { after },
            );
            let (mut j, mut u, mut l) = (Vec::new(), Vec::new(), Vec::new());
            diff(seen.0, seen.1, (&mut j, &mut u, &mut l));
            for (group, list) in
                [(&mut message.joins, j), (&mut message.updates, u), (&mut message.leaves, l)]
            {
                if !list.is_empty() {
                    group.insert(&**user, list);
                }
            }
        }
        let quiet = message.joins.is_empty() && message.updates.is_empty() && message.leaves.is_empty();
        if quiet && message.typing.is_none() {
            return None;
        }
        (message.count, message.connections) = self.counts(viewer);
        Some(serde_json::to_string(&message).expect("a room change serializes"))
    }
}
