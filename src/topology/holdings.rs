//! Which nodes hold sessions of which users, as the records in the bucket say: the watcher keeps
//! it up to date with every change it applies. It is how a node finds the sessions of a node
//! that died (docs/sessions.md, "Sessions"), and, after a restart, the sessions it held before.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::model::CompactPresence;

/// The nodes one user's devices are held at.
type Nodes = Box<[Arc<str>]>;

/// A user whose record changed, and whether an erasure took it.
pub(crate) type Touched = (Arc<str>, bool);

/// User → the nodes its devices are held at, for every user with a device.
#[derive(Default)]
pub(crate) struct Holdings {
    users: Mutex<HashMap<Arc<str>, Nodes>>,
    /// This node, and who hears of every user whose record names it, or named it before, and
    /// of every user erased (with `true`).
    listener: OnceLock<(Arc<str>, UnboundedSender<Touched>)>,
}

impl Holdings {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// `user`'s record now holds `presence` (none: gone), `erased` if a purge took it.
    pub(crate) fn observe(&self, user: &str, presence: Option<&CompactPresence>, erased: bool) {
        let mut nodes: Vec<Arc<str>> =
            presence.map(|p| p.devices().iter().map(|d| d.node.clone()).collect()).unwrap_or_default();
        nodes.sort_unstable();
        nodes.dedup();
        let mut users = self.users.lock().expect("holdings lock");
        let before = if nodes.is_empty() {
            users.remove(user)
        } else {
            users.insert(Arc::from(user), nodes.clone().into_boxed_slice())
        };
        if let Some((me, to)) = self.listener.get() {
            let names = |nodes: &[Arc<str>]| nodes.iter().any(|n| n == me);
            if erased || names(&nodes) || before.as_deref().is_some_and(names) {
                let _ = to.send((Arc::from(user), erased));
            }
        }
    }

    /// From now on, every user whose record names `node`, or named it before the change, is
    /// sent to the receiver (once per change), and every user erased, with `true` (a session
    /// here may not be in the record yet). Only the first call takes effect.
    pub(crate) fn listen(&self, node: &str) -> Option<UnboundedReceiver<Touched>> {
        let (to, from) = unbounded_channel();
        self.listener.set((Arc::from(node), to)).ok()?;
        Some(from)
    }

    /// The users with a device held at a node for which `at` is true, with that node.
    pub(crate) fn held_at(&self, at: impl Fn(&str) -> bool) -> Vec<(Arc<str>, Arc<str>)> {
        let users = self.users.lock().expect("holdings lock");
        let mut found = Vec::new();
        for (user, nodes) in users.iter() {
            for node in nodes.iter().filter(|n| at(n)) {
                found.push((user.clone(), node.clone()));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CompactPresence, DeviceKind, PresenceUpdate, StoredDevice, StoredPresence, UserId};

    fn with_devices(user: &str, nodes: &[&str]) -> CompactPresence {
        let update = PresenceUpdate::new("offline", None, None, std::time::Duration::from_secs(60)).unwrap();
        let id = UserId::parse(user).unwrap();
        let mut stored = StoredPresence::from_update(&id, update, None, "n", chrono::Utc::now());
        for (i, node) in nodes.iter().enumerate() {
            let device = StoredDevice::new(DeviceKind::Web, node.to_string(), false);
            stored.devices.insert(format!("d{i}"), device);
        }
        CompactPresence::from(&stored)
    }

    #[test]
    fn holdings_say_who_holds_whom_and_tell_a_node_of_its_users() {
        let holdings = Holdings::new();
        let mut told = holdings.listen("a").unwrap();
        assert!(holdings.listen("a").is_none(), "one listener");
        holdings.observe("ann", Some(&with_devices("ann", &["a", "b", "a"])), false);
        holdings.observe("ben", Some(&with_devices("ben", &["b"])), false);
        holdings.observe("cat", Some(&with_devices("cat", &[])), false);
        let mut at_b = holdings.held_at(|n| n == "b");
        at_b.sort();
        assert_eq!(at_b, [(Arc::from("ann"), Arc::from("b")), (Arc::from("ben"), Arc::from("b"))]);
        assert_eq!(holdings.held_at(|n| n == "a"), [(Arc::from("ann"), Arc::from("a"))], "once per node");
        assert_eq!(told.try_recv().ok(), Some((Arc::from("ann"), false)), "a record naming this node");
        assert!(told.try_recv().is_err(), "ben's and cat's do not");
        // Ann's devices at a end; then she is erased.
        holdings.observe("ann", Some(&with_devices("ann", &["b"])), false);
        assert_eq!(told.try_recv().ok(), Some((Arc::from("ann"), false)), "it named this node before");
        assert!(holdings.held_at(|n| n == "a").is_empty());
        holdings.observe("ann", None, true);
        assert_eq!(holdings.held_at(|n| n == "b"), [(Arc::from("ben"), Arc::from("b"))]);
        assert_eq!(told.try_recv().ok(), Some((Arc::from("ann"), true)), "every erasure is told");
        holdings.observe("dan", None, false);
        assert!(told.try_recv().is_err(), "a record gone by retention, naming nobody here, is not");
    }
}
