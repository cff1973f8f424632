//! What the notices stream carries to endpoints: an erasure, and the rooms' comings and goings
//! (a user's first device in and last out, a room's first user and its last); batches; a quick
//! reconnect that tells nothing.

use std::time::Duration;

use presence::config::BatchConfig;

use super::{
    delivery::{SECOND, endpoint, events_when, header},
    *,
};
use crate::{
    helpers::{TestApp, eventually},
    rooms::{join, member, next_of},
};

const ROOM_EVENTS: [&str; 4] = ["room.joined", "room.left", "room.occupied", "room.vacated"];

/// The (type, data) of what arrived, every request verified under `key`.
fn told(events: &[(Vec<(String, String)>, Value)], got: &Received, key: &str) -> Vec<(String, Value)> {
    for (headers, _) in events {
        let sent = got.lock().unwrap().iter().find(|(h, _)| h == headers).unwrap().1.clone();
        assert!(verifies(key, headers, &sent), "signed: {sent}");
    }
    events.iter().map(|(_, e)| (e["type"].as_str().unwrap().to_string(), e["data"].clone())).collect()
}

#[tokio::test]
async fn rooms_filling_and_emptying_and_an_erasure_are_told_once_each() {
    let key = secret(8);
    let (url, got) = receiver(200).await;
    let mut hook = endpoint(&url, &key);
    hook.events = ROOM_EVENTS.iter().chain(&["presence.erased"]).map(|e| e.to_string()).collect();
    hook.rooms = vec!["doc-*".into()];
    let app = TestApp::spawn_with(|c| c.webhooks = vec![hook]).await;
    let mut ann = member(&app, "ann", "laptop", &["*"]).await;
    join(&mut ann, "doc-1", json!({})).await;
    // Outside the endpoint's rooms: nothing.
    join(&mut ann, "chat-1", json!({})).await;
    // A join is answered at once and written after: bob's after ann's has landed.
    events_when(&got, 2).await;
    let mut bob = member(&app, "bob", "phone", &["*"]).await;
    join(&mut bob, "doc-1", json!({})).await;
    // Ann's second device in the same room: she is in it already.
    let mut ann_phone = member(&app, "ann", "phone", &["*"]).await;
    join(&mut ann_phone, "doc-1", json!({})).await;
    let events = events_when(&got, 3).await;
    let seen = told(&events, &got, &key);
    assert_eq!(
        seen,
        [
            (
                "room.occupied".into(),
                json!({"room_id": "doc-1", "count": 1, "revision": seen[0].1["revision"]})
            ),
            (
                "room.joined".into(),
                json!({"room_id": "doc-1", "user_id": "ann", "count": 1, "revision": seen[0].1["revision"]})
            ),
            (
                "room.joined".into(),
                json!({"room_id": "doc-1", "user_id": "bob", "count": 2, "revision": seen[2].1["revision"]})
            ),
        ],
    );
    let joined = &events[1];
    assert_eq!(
        header(&joined.0, "webhook-id"),
        format!("room-joined.doc-1.ann.{}", joined.1["data"]["revision"]),
        "named by the change that made it"
    );
    bob.send(json!({"type": "leave", "room": "doc-1"})).await;
    next_of(&mut bob, "left", 5 * SECOND).await;
    events_when(&got, 4).await;
    // Ann's laptop closes: her phone is still in the room.
    ann.close().await;
    eventually(5 * SECOND, "ann's laptop gone from her record", || async {
        let presence: Value = app.read("ann").await.json().await.unwrap();
        presence["devices"].get("laptop").is_none().then_some(())
    })
    .await;
    ann_phone.send(json!({"type": "leave", "room": "doc-1"})).await;
    next_of(&mut ann_phone, "left", 5 * SECOND).await;
    let events = events_when(&got, 6).await;
    let seen: Vec<(String, Value)> = told(&events[3..], &got, &key)
        .into_iter()
        .map(|(kind, mut data)| {
            data.as_object_mut().unwrap().remove("revision");
            (kind, data)
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("room.left".into(), json!({"room_id": "doc-1", "user_id": "bob", "count": 1})),
            ("room.left".into(), json!({"room_id": "doc-1", "user_id": "ann", "count": 0})),
            ("room.vacated".into(), json!({"room_id": "doc-1", "count": 0})),
        ]
    );
    // An erasure: told once, with nothing of the user but their id.
    let status = app.erase("bob").await.status();
    assert!(status.is_success(), "{status}");
    let events = events_when(&got, 7).await;
    let (kind, data) = &told(&events[6..], &got, &key)[0];
    assert_eq!((kind.as_str(), &data["user_id"]), ("presence.erased", &json!("bob")));
    assert!(data["revision"].is_u64());
    assert_eq!(header(&events[6].0, "webhook-id"), format!("erased-bob-{}", data["revision"]));
    // The erasure took bob's earlier notices out of the stream: none waits to be delivered again.
    let stream = format!("{}_NOTICES", app.config.events.stream);
    let js = async_nats::jetstream::new(crate::helpers::nats_connect(&app.nats_url()).await);
    let notices = js.get_stream(&stream).await.unwrap();
    let first = notices.get_first_raw_message_by_subject("presence.notice.user.bob", 1).await.unwrap();
    let first: Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(first["type"], "presence.erased", "the first of bob's notices left is the erasure");
    drop(ann_phone);
    app.stop().await;
}

#[tokio::test]
async fn a_batching_endpoint_gets_several_events_in_one_signed_request() {
    let key = secret(9);
    let (url, got) = receiver(200).await;
    let mut hook = endpoint(&url, &key);
    hook.batch = Some(BatchConfig { max_events: 3, max_wait: Duration::from_millis(500) });
    let app = TestApp::spawn_with(|c| c.webhooks = vec![hook]).await;
    for user in ["a1", "a2", "a3", "a4", "a5"] {
        app.set(user, json!({"status": "busy"})).await;
    }
    let requests = events_when(&got, 2).await;
    let mut ids = Vec::new();
    for (headers, body) in &requests {
        assert_eq!(body["type"], "batch");
        let sent = got.lock().unwrap().iter().find(|(h, _)| h == headers).unwrap().1.clone();
        assert!(verifies(&key, headers, &sent));
        assert!(header(headers, "webhook-id").starts_with("batch_"));
        for event in body["data"].as_array().unwrap() {
            assert_eq!(event["type"], "presence.changed");
            ids.push(event["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(requests[0].1["data"].as_array().unwrap().len(), 3, "a full batch goes at once");
    eventually(5 * SECOND, "all five delivered", || async {
        let events: usize = got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap()["data"].as_array().unwrap().len())
            .sum();
        (events == 5).then_some(())
    })
    .await;
    assert!(app.metric("presence_webhook_delivered_total{endpoint=\"backend\"}").await >= 5.0);
    app.stop().await;
}

#[tokio::test]
async fn a_reconnect_within_the_grace_tells_nothing() {
    let (url, got) = receiver(200).await;
    let hook = endpoint(&url, &secret(10));
    let app = TestApp::spawn_with(|c| {
        c.webhooks = vec![hook];
        c.sessions.grace = 2 * SECOND;
    })
    .await;
    let mut kim = member(&app, "kim", "laptop", &["*"]).await;
    join(&mut kim, "doc-7", json!({})).await;
    let lee = member(&app, "lee", "phone", &["*"]).await;
    let mut kinds: Vec<String> = events_when(&got, 4).await.iter().map(|(_, e)| kind_of(e)).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["presence.changed kim", "presence.changed lee", "room.joined kim", "room.occupied -"],
        "two streams, each in order"
    );
    // Both connections break at once; kim is back within the grace and joins again, lee is not.
    drop((kim.socket, lee.socket));
    let mut kim = member(&app, "kim", "laptop", &["*"]).await;
    join(&mut kim, "doc-7", json!({})).await;
    // Lee's going offline comes after the grace; then zed's changes, in both streams, come after
    // anything the grace's end could have told of kim.
    eventually(10 * SECOND, "lee goes offline after the grace", || async {
        let events: Vec<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
        events.iter().any(|b| b.contains("\"lee\"") && b.contains("\"offline\"")).then_some(())
    })
    .await;
    let mut zed = member(&app, "zed", "tab", &["*"]).await;
    join(&mut zed, "doc-8", json!({})).await;
    let events = events_when(&got, 8).await;
    let mut later: Vec<String> = events[4..].iter().map(|(_, e)| kind_of(e)).collect();
    later.sort();
    assert_eq!(
        later,
        ["presence.changed lee", "presence.changed zed", "room.joined zed", "room.occupied -"],
        "nothing of kim's reconnect"
    );
    for ws in [kim, zed] {
        ws.close().await;
    }
    app.stop().await;
}

/// An event's type and user (`-` for none).
fn kind_of(event: &Value) -> String {
    format!("{} {}", event["type"].as_str().unwrap(), event["data"]["user_id"].as_str().unwrap_or("-"))
}
