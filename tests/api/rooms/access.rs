//! Who may join and read rooms (secure by default), and hostile input: every refusal an
//! `error`, the connection kept, nothing stored lost.

use super::*;
use crate::helpers::mint;

/// The connection still answers: a ping gets its pong.
async fn still_open(ws: &mut Ws) {
    ws.send(json!({"type": "ping"})).await;
    next_of(ws, "pong", 5 * SECOND).await;
}

async fn refused(ws: &mut Ws, message: Value, status: u16) -> Value {
    ws.send(message.clone()).await;
    let error = next_of(ws, "error", 5 * SECOND).await;
    assert_eq!(error["status"], status, "{message} → {error}");
    error
}

#[tokio::test]
async fn joining_and_reading_need_a_rooms_claim_unless_the_room_is_public_or_rooms_are_open() {
    let app = TestApp::spawn_with(|c| c.rooms.public = vec!["lobby-*".into()]).await;
    // A token without a `rooms` claim joins nothing, reads no private room; the connection stays.
    let mut plain = Ws::session(&app, "pat", "d", "web").await;
    let error = refused(&mut plain, json!({"type": "join", "room": "doc-1"}), 403).await;
    assert_eq!(error["room"], "doc-1", "{error}");
    refused(&mut plain, json!({"type": "watch_room", "room": "doc-1"}), 403).await;
    still_open(&mut plain).await;
    // A claim for other rooms is no claim for this one.
    let mut other = member(&app, "oli", "d", &["team-*"]).await;
    refused(&mut other, json!({"type": "join", "room": "doc-1"}), 403).await;
    join(&mut other, "team-42", json!({})).await;
    // A public room may be watched by anyone, without a session; joining it still needs a claim.
    let mut anyone = Ws::connect(&app).await;
    anyone.send(json!({"type": "watch_room", "room": "lobby-1"})).await;
    next_of(&mut anyone, "room_snapshot", 5 * SECOND).await;
    refused(&mut anyone, json!({"type": "join", "room": "lobby-1"}), 400).await; // no session
    refused(&mut anyone, json!({"type": "watch_room", "room": "team-42"}), 403).await;
    still_open(&mut anyone).await;

    // Over REST: no token 403, a bad token 401, a token for the room 200, a public room 200.
    assert_eq!(read_room(&app, "team-42", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(read_room(&app, "team-42", Some("not-a-token")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(read_room(&app, "team-42", Some(&mint("pat"))).await.0, StatusCode::FORBIDDEN);
    let (status, body) = read_room(&app, "team-42", Some(&mint_rooms("x", &["team-*"]))).await;
    assert_eq!((status, body["data"]["count"].as_u64()), (StatusCode::OK, Some(1)), "{body}");
    assert_eq!(read_room(&app, "lobby-9", None).await.0, StatusCode::OK);
    let (status, body) = read_room(&app, "not a room", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["success"], false);
    // Counts: every room named must be readable.
    let counts = |rooms: &str| app.http.get(app.url(&format!("/api/v2/rooms?rooms={rooms}"))).send();
    assert_eq!(counts("lobby-1,lobby-2").await.unwrap().status(), StatusCode::OK);
    assert_eq!(counts("lobby-1,team-42").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(counts("").await.unwrap().status(), StatusCode::BAD_REQUEST);
    let many = (0..1001).map(|i| format!("lobby-{i}")).collect::<Vec<_>>().join(",");
    assert_eq!(counts(&many).await.unwrap().status(), StatusCode::BAD_REQUEST);
    // Over SSE the same rule.
    let stream = app.http.get(app.url("/api/v2/rooms/team-42/stream")).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::FORBIDDEN);
    app.stop().await;

    // rooms.open: any valid token joins and reads any room.
    let app = TestApp::spawn_with(|c| c.rooms.open = true).await;
    let mut plain = Ws::session(&app, "pat", "d", "web").await;
    join(&mut plain, "anything", json!({})).await;
    assert_eq!(read_room(&app, "anything", Some(&mint("someone"))).await.0, StatusCode::OK);
    assert_eq!(read_room(&app, "anything", None).await.0, StatusCode::FORBIDDEN, "a token still");
    app.stop().await;
}

#[tokio::test]
async fn hostile_room_messages_get_an_error_and_the_connection_and_rooms_stay() {
    let app = TestApp::spawn_with(|c| {
        c.rooms.max_rooms_per_device = 2;
        c.rooms.signals_per_second = 1;
        c.rooms.signal_burst = 2;
    })
    .await;
    let mut ws = member(&app, "hal", "d", &["*"]).await;
    join(&mut ws, "r1", json!({"keep": true})).await;
    refused(&mut ws, json!({"type": "join", "room": "a b"}), 400).await;
    refused(&mut ws, json!({"type": "join", "room": "x".repeat(129)}), 400).await;
    refused(&mut ws, json!({"type": "join", "room": "r2", "meta": [1, 2]}), 400).await;
    refused(&mut ws, json!({"type": "join", "room": "r2", "meta": {"big": "x".repeat(1100)}}), 400).await;
    refused(&mut ws, json!({"type": "meta", "room": "r9", "meta": {}}), 409).await; // not a member
    refused(&mut ws, json!({"type": "typing", "room": "r9"}), 409).await; // nor here
    let error = refused(&mut ws, json!({"type": "typing", "room": "r1"}), 429).await; // the budget is spent
    assert!(error["error"].as_str().unwrap().contains("rooms.signals_per_second"), "{error}");
    join(&mut ws, "r2", json!({})).await;
    let error = refused(&mut ws, json!({"type": "join", "room": "r3"}), 409).await;
    assert!(error["error"].as_str().unwrap().contains("rooms.max_rooms_per_device"), "{error}");
    // Not a known message, a field too many, no room: the decoder's error, the connection stays.
    for message in [
        json!({"type": "jion", "room": "r1"}),
        json!({"type": "join", "room": "r1", "extra": 1}),
        json!({"type": "leave"}),
    ] {
        ws.send(message).await;
        next_of(&mut ws, "error", 5 * SECOND).await;
    }
    still_open(&mut ws).await;
    // Nothing already there was lost: hal is in r1 with the meta of the join.
    let data = members_when(&app, "r1", "keeps hal", |d| d["count"] == 1).await;
    assert_eq!(data["members"]["hal"][0]["meta"], json!({"keep": true}));
    app.stop().await;
}
