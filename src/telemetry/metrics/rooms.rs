//! The rooms' metrics (docs/rooms.md, "Operations").

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::KindLabels;

#[derive(Default)]
pub(crate) struct RoomMetrics {
    /// Rooms this node knows of with at least one member.
    pub rooms: Gauge,
    /// Memberships (device, room) this node knows of, at every node.
    pub members: Gauge,
    /// Room messages written to clients (kind: change, snapshot, typing).
    pub messages: Family<KindLabels, Counter>,
    /// Typing signals received from this node's clients and from other nodes.
    pub typing_signals: Family<KindLabels, Counter>,
}

impl RoomMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register("rooms", "Rooms with at least one member, as this node knows them", self.rooms.clone());
        r.register(
            "room_members",
            "Memberships (a device in a room) this node knows of, at every node",
            self.members.clone(),
        );
        r.register(
            "room_messages",
            "Room messages queued for clients (kind: change, snapshot)",
            self.messages.clone(),
        );
        r.register(
            "room_typing_signals",
            "Typing signals (kind: local from this node's clients, remote from other nodes)",
            self.typing_signals.clone(),
        );
        for kind in ["change", "snapshot"] {
            let _ = self.messages.get_or_create(&KindLabels { kind });
        }
        for kind in ["local", "remote"] {
            let _ = self.typing_signals.get_or_create(&KindLabels { kind });
        }
    }
}
