//! What an endpoint is told of an audit-log event: `presence.changed` when the status others
//! see changed (a write that changed only the message or the devices, or that nobody else sees,
//! tells nothing), `presence.expired` when a ttl ran out. Thin events, `{"type", "timestamp",
//! "data"}`; each carries the revision, by which a receiver orders one user's events.

use serde_json::{Value, json};

/// One event for the endpoints: its type, whom and which room it is about, and its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub kind: String,
    pub user: Option<String>,
    pub room: Option<String>,
    pub body: Value,
}

/// The event an audit-log message (`presence.update.*`, `presence.expire.*`) makes, if any.
pub(crate) fn of_audit(payload: &[u8]) -> Option<Event> {
    let event: Value = serde_json::from_slice(payload).ok()?;
    let user = event["user_id"].as_str()?.to_string();
    let status = &event["presence"]["status"];
    let previous = &event["previous_status"];
    let kind = match event["kind"].as_str()? {
        "update" if status == previous => return None,
        "update" => "presence.changed",
        "expire" => "presence.expired",
        _ => return None,
    };
    let mut data = json!({
        "user_id": user,
        "status": status,
        "previous_status": previous,
        "revision": event["revision"],
        "node_id": event["node_id"],
    });
    if let Some(devices) = event["presence"].get("devices").filter(|_| kind == "presence.changed") {
        data["devices"] = devices.clone();
    }
    let body = json!({"type": kind, "timestamp": event["timestamp"], "data": data});
    Some(Event { kind: kind.into(), user: Some(user), room: None, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(kind: &str, status: &str, previous: Value) -> Vec<u8> {
        let presence = json!({"user_id": "ann", "status": status, "devices": {"web": "online"}});
        let event = json!({"kind": kind, "user_id": "ann", "presence": presence, "previous_status": previous,
                           "revision": 7, "node_id": "n1", "actor": "ann", "timestamp": "2026-12-05T10:00:00.000Z"});
        event.to_string().into_bytes()
    }

    #[test]
    fn a_status_change_and_an_expiry_are_told_and_a_write_that_kept_the_status_is_not() {
        let changed = of_audit(&audit("update", "busy", json!("online"))).unwrap();
        assert_eq!(changed.kind, "presence.changed");
        assert_eq!(
            changed.body,
            json!({"type": "presence.changed", "timestamp": "2026-12-05T10:00:00.000Z", "data": {
                "user_id": "ann", "status": "busy", "previous_status": "online", "revision": 7,
                "node_id": "n1", "devices": {"web": "online"}}})
        );
        assert_eq!(
            of_audit(&audit("update", "online", json!(null))).unwrap().body["data"]["previous_status"],
            json!(null)
        );
        assert_eq!(
            of_audit(&audit("update", "online", json!("online"))),
            None,
            "the message changed, not the status"
        );
        let expired = of_audit(&audit("expire", "offline", json!("busy"))).unwrap();
        assert_eq!((expired.kind.as_str(), expired.body["data"].get("devices")), ("presence.expired", None));
        assert_eq!(of_audit(b"not json"), None);
    }
}
