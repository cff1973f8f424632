//! What a WebSocket client may send: a budget of messages (pings, protocol pings and text alike),
//! an error beyond it, a close (1008) when it keeps going; a `subscribe` charged like the
//! multi-user read it is, and a refused one changing nothing.

use futures::SinkExt;

use super::*;

/// A node whose WebSocket clients may send 5 messages a second, 10 at once.
async fn metered() -> TestApp {
    TestApp::spawn_with(|c| {
        c.stream.messages_per_second = 5;
        c.stream.message_burst = 10;
    })
    .await
}

/// Reads until the node closes the connection: the close frame, and how many pongs and errors
/// came before it.
async fn until_closed(ws: &mut Ws) -> (Value, usize, usize) {
    let (mut pongs, mut errors) = (0, 0);
    loop {
        let message = ws.next_within(FIVE).await.expect("the node closes a flooding connection");
        match message["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => errors += 1,
            Some("closed") => return (message["frame"].clone(), pongs, errors),
            _ => panic!("unexpected {message}"),
        }
    }
}

#[tokio::test]
async fn a_websocket_flood_gets_errors_then_a_close() {
    let app = metered().await;
    let mut ws = Ws::connect(&app).await;
    for _ in 0..500 {
        if ws.socket.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    let (frame, pongs, errors) = until_closed(&mut ws).await;
    assert_eq!(frame, json!([1008, "too many messages"]));
    assert!((10..=12).contains(&pongs), "a burst of 10 answered (and what refilled): {pongs}");
    assert!((1..10).contains(&errors), "refused messages are told so, a burst of them at most: {errors}");

    // Protocol pings count too: the library answers them, so the budget is the only bound.
    let mut ws = Ws::connect(&app).await;
    for _ in 0..500 {
        if ws.socket.send(Message::Ping(Default::default())).await.is_err() {
            break;
        }
    }
    let (frame, _, _) = until_closed(&mut ws).await;
    assert_eq!(frame, json!([1008, "too many messages"]));
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "presence_stream_clients_dropped_total{reason=\"flooding\"}"), 2.0);

    // A client within its budget is never refused.
    // Four messages a second, under its five.
    let mut ws = Ws::connect(&app).await;
    let mut pace = tokio::time::interval(Duration::from_millis(250));
    for _ in 0..15 {
        pace.tick().await;
        ws.send(json!({"type": "ping"})).await;
        ws.expect("pong", FIVE).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_subscribe_is_charged_as_a_read_and_a_refused_one_changes_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit.reads_per_second = 1;
        c.rate_limit.read_burst = 5;
    })
    .await;
    let mut ws = Ws::connect(&app).await; // one read
    ws.send(json!({"type": "subscribe", "users": ["amy"]})).await; // one, and one for the miss
    ws.expect("snapshot", FIVE).await;
    ws.send(json!({"type": "subscribe", "users": ["ben", "cy", "dee"]})).await; // four: too many
    let refused = ws.expect("error", FIVE).await;
    assert!(refused["error"].as_str().unwrap().contains("too many requests"), "{refused}");

    app.set("ben", json!({"status": "busy"})).await;
    app.set("amy", json!({"status": "away"})).await;
    let changes = ws.expect("changes", FIVE).await;
    let users: Vec<&str> =
        changes["changes"].as_array().unwrap().iter().map(|c| c["user_id"].as_str().unwrap()).collect();
    assert_eq!(users, ["amy"], "still watching amy, and only amy");

    // Subscribing again to users already in the cache still costs a read each time.
    let mut refused = false;
    for _ in 0..10 {
        ws.send(json!({"type": "subscribe", "users": ["amy"]})).await;
        let answer = ws.next_within(FIVE).await.unwrap();
        if answer["type"] == "error" {
            refused = true;
            break;
        }
    }
    assert!(refused, "ten subscribes in a moment are more than a read a second");
    app.stop().await;
}
