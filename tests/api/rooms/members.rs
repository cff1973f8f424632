//! Who is in a room, across a center and a leaf: joins, meta updates, leaves, the snapshot a
//! joiner and a watcher start from, REST reads and counts, batching, truncation.

use super::*;

#[tokio::test]
async fn members_join_update_and_leave_and_every_node_sees_it() {
    let (center, leaf) = region().await;
    let (mut watching, snapshot) = room_watcher(&center, "doc-1").await;
    assert_eq!(
        snapshot,
        json!({"type": "room_snapshot", "room": "doc-1", "members": {}, "count": 0, "connections": 0,
               "truncated": false, "typing": []})
    );

    let mut alice = member(&leaf, "alice", "laptop", &["doc-*"]).await;
    let joined = join(&mut alice, "doc-1", json!({"name": "Alice", "cursor": {"x": 1}})).await;
    assert_eq!(
        (joined["room"].as_str(), joined["count"].as_u64(), joined["connections"].as_u64()),
        (Some("doc-1"), Some(1), Some(1)),
        "{joined}"
    );
    let entry = &joined["members"]["alice"][0];
    assert_eq!((entry["device"].as_str(), entry["kind"].as_str()), (Some("laptop"), Some("web")), "{joined}");
    assert_eq!(entry["meta"], json!({"name": "Alice", "cursor": {"x": 1}}));
    assert!(entry["joined_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{joined}");
    assert_eq!(joined["truncated"], false);

    // The center's watcher hears of it: one join, the count after.
    let change =
        room_change_until(&mut watching, 5 * SECOND, "alice joins", |c| c.get("joins").is_some()).await;
    assert_eq!(change["joins"]["alice"][0]["meta"]["name"], "Alice", "{change}");
    assert_eq!((change["count"].as_u64(), change["connections"].as_u64()), (Some(1), Some(1)));
    assert!(
        change.get("leaves").is_none() && change.get("updates").is_none(),
        "empty groups are left out: {change}"
    );

    // A member at the center: the leaf's member hears of it (members receive the room's changes).
    let mut bob = member(&center, "bob", "phone", &["doc-1"]).await;
    let joined = join(&mut bob, "doc-1", json!({})).await;
    assert_eq!(joined["count"], 2, "the joiner's snapshot has both: {joined}");
    let change =
        room_change_until(&mut alice, 5 * SECOND, "bob joins", |c| c["joins"].get("bob").is_some()).await;
    assert_eq!(change["joins"]["bob"][0]["device"], "phone");

    // A meta update is an update: never a leave plus a join.
    alice.send(json!({"type": "meta", "room": "doc-1", "meta": {"name": "Alice", "cursor": {"x": 9}}})).await;
    let change =
        room_change_until(&mut watching, 5 * SECOND, "alice's meta", |c| c.get("updates").is_some()).await;
    assert_eq!(change["updates"]["alice"][0]["meta"]["cursor"]["x"], 9, "{change}");
    assert!(change.get("joins").is_none() && change.get("leaves").is_none(), "{change}");
    assert_eq!(
        change["updates"]["alice"][0]["joined_at"], entry["joined_at"],
        "an update keeps the time of the join"
    );

    // Reads at either node, and counts.
    for app in [&center, &leaf] {
        let data = members_when(app, "doc-1", "lists both", |d| d["count"] == 2).await;
        assert_eq!(data["members"]["alice"][0]["meta"]["cursor"]["x"], 9, "{data}");
        assert_eq!(data["members"]["bob"][0]["kind"], "web");
    }
    let token = mint_rooms("reader", &["doc-*"]);
    let request = center.http.get(center.url("/api/v2/rooms?rooms=doc-1,doc-2")).bearer_auth(&token);
    let (status, counts) = json_of(request.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(
        counts,
        json!({"success": true, "data": {"doc-1": {"count": 2, "connections": 2}, "doc-2": {"count": 0, "connections": 0}}})
    );

    // A second device of alice: one more connection, the same count.
    let mut tablet = member(&center, "alice", "tablet", &["doc-*"]).await;
    join(&mut tablet, "doc-1", json!({})).await;
    let change =
        room_change_until(&mut watching, 5 * SECOND, "alice's tablet", |c| c.get("joins").is_some()).await;
    assert_eq!((change["count"].as_u64(), change["connections"].as_u64()), (Some(2), Some(3)), "{change}");

    // A leave: the device's entry goes; the user stays while another device is in.
    alice.send(json!({"type": "leave", "room": "doc-1"})).await;
    assert_eq!(next_of(&mut alice, "left", 5 * SECOND).await, json!({"type": "left", "room": "doc-1"}));
    let change =
        room_change_until(&mut watching, 5 * SECOND, "the laptop leaves", |c| c.get("leaves").is_some())
            .await;
    assert_eq!(change["leaves"]["alice"][0]["device"], "laptop", "{change}");
    assert_eq!((change["count"].as_u64(), change["connections"].as_u64()), (Some(2), Some(2)));

    // A close frame leaves at once.
    let closed = tokio::time::Instant::now();
    bob.close().await;
    let change =
        room_change_until(&mut watching, 5 * SECOND, "bob leaves", |c| c.get("leaves").is_some()).await;
    assert_eq!(change["leaves"]["bob"][0]["device"], "phone", "{change}");
    assert!(closed.elapsed() < 2 * SECOND, "at once, not after the grace: {:?}", closed.elapsed());
    assert_eq!(change["count"], 1);
    for app in [leaf, center] {
        app.stop().await;
    }
}

#[tokio::test]
async fn a_burst_of_joins_reaches_a_watcher_in_a_few_batched_messages() {
    let app = TestApp::spawn().await;
    let (mut watching, _) = room_watcher(&app, "call-7").await;
    let mut members = Vec::new();
    for i in 0..20 {
        members.push(member(&app, &format!("u{i}"), "d", &["call-*"]).await);
    }
    for ws in &mut members {
        ws.send(json!({"type": "join", "room": "call-7"})).await;
    }
    let mut joined = std::collections::BTreeSet::new();
    let mut messages = 0;
    while joined.len() < 20 {
        let change = room_change_until(&mut watching, 5 * SECOND, "the joins", |_| true).await;
        messages += 1;
        joined.extend(change["joins"].as_object().into_iter().flat_map(|j| j.keys().cloned()));
    }
    assert!(messages <= 8, "20 joins in {messages} messages: batched per window");
    // The count-only watcher hears counts, never members.
    let mut counting = member(&app, "counter", "c", &["call-*"]).await;
    counting.send(json!({"type": "watch_room", "room": "call-7", "members": false})).await;
    let snapshot = next_of(&mut counting, "room_snapshot", 5 * SECOND).await;
    assert_eq!(snapshot, json!({"type": "room_snapshot", "room": "call-7", "count": 20, "connections": 20}));

    // So does a member that joins with `"members": false` (a large room's members).
    let mut quiet = member(&app, "quiet", "q", &["call-*"]).await;
    quiet.send(json!({"type": "join", "room": "call-7", "members": false})).await;
    let joined = next_of(&mut quiet, "joined", 5 * SECOND).await;
    assert_eq!(joined, json!({"type": "joined", "room": "call-7", "count": 21, "connections": 21}));
    room_change_until(&mut counting, 5 * SECOND, "quiet counted", |c| c["count"] == 21).await;
    members.pop().unwrap().close().await;
    for ws in [&mut counting, &mut quiet] {
        let change = room_change_until(ws, 5 * SECOND, "the count", |_| true).await;
        assert_eq!(change, json!({"type": "room", "room": "call-7", "count": 20, "connections": 20}));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_large_room_lists_the_first_users_and_says_it_is_truncated() {
    let app = TestApp::spawn_with(|c| c.rooms.max_members_listed = 3).await;
    let mut members = Vec::new();
    for user in ["a", "b", "c", "d", "e"] {
        let mut ws = member(&app, user, "d", &["big"]).await;
        join(&mut ws, "big", json!({})).await;
        members.push(ws);
    }
    let data = members_when(&app, "big", "has five", |d| d["count"] == 5).await;
    let listed: Vec<&String> = data["members"].as_object().unwrap().keys().collect();
    assert_eq!(listed, ["a", "b", "c"], "{data}");
    assert_eq!((data["truncated"].as_bool(), data["connections"].as_u64()), (Some(true), Some(5)));
    // The metrics count the room and its members (a second at most after they changed).
    eventually(5 * SECOND, "the metrics count them", || async {
        let (rooms, members) =
            (app.metric("presence_rooms ").await, app.metric("presence_room_members ").await);
        (rooms == 1.0 && members == 5.0).then_some(())
    })
    .await;
    assert!(app.metric("presence_room_messages_total{kind=\"snapshot\"}").await >= 5.0);
    app.stop().await;
}
