//! Typing: a signal across nodes, never stored, ending by itself when not renewed.

use super::*;

#[tokio::test]
async fn typing_crosses_nodes_ends_when_not_renewed_and_writes_nothing() {
    let quick = |c: &mut presence::config::Config| c.rooms.typing_ttl = 2 * SECOND;
    let center = TestApp::spawn_with(quick).await;
    let leaf =
        crate::helpers::leaf_app_with(center.config.nats.leaf_port, "leaf-a", "us-east-1", quick).await;
    let mut ana = member(&leaf, "ana", "d", &["chat-*"]).await;
    join(&mut ana, "chat-1", json!({})).await;
    let mut ben = member(&center, "ben", "d", &["chat-*"]).await;
    let joined = join(&mut ben, "chat-1", json!({})).await;
    // Ben has heard of ana (a read shows a change at once; a watcher hears of it with the
    // room's next batch), and both records are written and seen by the other node.
    if joined["members"].get("ana").is_none() {
        room_change_until(&mut ben, 5 * SECOND, "ana at the center", |c| c["joins"].get("ana").is_some())
            .await;
    }
    members_when(&leaf, "chat-1", "has both", |d| d["count"] == 2).await;
    // Every write of the bucket, at any node, is one more message in its stream.
    let kv = crate::helpers::bucket(&center.nats_url()).await;
    let writes = || async { kv.status().await.unwrap().info.state.last_sequence };
    let before = writes().await;

    let sent = tokio::time::Instant::now();
    ana.send(json!({"type": "typing", "room": "chat-1"})).await;
    let change = room_change_until(&mut ben, 5 * SECOND, "ana types", |c| c.get("typing").is_some()).await;
    assert_eq!(change["typing"], json!(["ana"]), "{change}");
    assert!(sent.elapsed() < SECOND, "a signal, not a write: {:?}", sent.elapsed());
    assert!(change.get("joins").is_none(), "{change}");
    // Not renewed: it ends after rooms.typing_ttl at every node.
    let change = room_change_until(&mut ben, 5 * SECOND, "ana stopped", |c| c.get("typing").is_some()).await;
    assert_eq!(change["typing"], json!([]), "{change}");
    assert!(sent.elapsed() >= Duration::from_millis(1900), "not before the ttl: {:?}", sent.elapsed());
    // `active: false` ends it at once; the typist's own node shows it too.
    ana.send(json!({"type": "typing", "room": "chat-1", "active": true})).await;
    room_change_until(&mut ben, 5 * SECOND, "ana types again", |c| c["typing"] == json!(["ana"])).await;
    let (status, body) = read_room(&leaf, "chat-1", Some(&mint_rooms("r", &["chat-1"]))).await;
    assert_eq!((status, &body["data"]["typing"]), (StatusCode::OK, &json!(["ana"])), "{body}");
    ana.send(json!({"type": "typing", "room": "chat-1", "active": false})).await;
    let stopped = tokio::time::Instant::now();
    room_change_until(&mut ben, 5 * SECOND, "ana stops", |c| c["typing"] == json!([])).await;
    assert!(stopped.elapsed() < SECOND, "{:?}", stopped.elapsed());
    assert_eq!(writes().await, before, "typing wrote no record");
    assert!(center.metric("presence_room_typing_signals_total{kind=\"remote\"}").await >= 3.0);
    for app in [leaf, center] {
        app.stop().await;
    }
}
