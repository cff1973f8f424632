//! Bad input gets the right status and the JSON envelope, and nothing stored is lost.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, json_of, mint};

#[tokio::test]
async fn invalid_writes_are_400_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, original) = json_of(app.put("bob", json!({"status": "away", "message": "lunch"})).await).await;
    let cases = [
        json!({"status": "sleeping"}),
        json!({"status": "ONLINE"}),
        json!({"status": 1}),
        json!({}),
        json!({"status": "busy", "ttl": 0}),
        json!({"status": "busy", "ttl": 604_801}),
        json!({"status": "busy", "ttl": -5}),
        json!({"status": "busy", "ttl": 1.5}),
        json!({"status": "busy", "ttl": "60"}),
        json!({"status": "busy", "message": "x".repeat(257)}),
        json!({"status": "busy", "message": "line\nbreak"}),
        json!({"status": "busy", "message": "admin\u{202E}txt.exe"}),
        json!({"status": "busy", "message": "in\u{200B}visible"}),
        json!({"status": "busy", "message": "two\u{2028}lines"}),
        json!({"status": "busy", "colour": "red"}),
        json!(["busy"]),
    ];
    for body in cases {
        let error = assert_error(app.put("bob", body.clone()).await, StatusCode::BAD_REQUEST).await;
        assert!(!error.contains("Failed to deserialize"), "{body}: {error}");
    }
    let (_, now) = json_of(app.get("/api/v2/presence/bob").await).await;
    assert_eq!(now, original, "failed writes left the stored presence alone");
    app.stop().await;
}

#[tokio::test]
async fn boundary_values_are_accepted() {
    let app = TestApp::spawn().await;
    for body in [
        json!({"status": "busy", "ttl": 1}),
        json!({"status": "busy", "ttl": 604_800}),
        // JSON Schema's `integer` (the document's type for ttl) counts 60.0 as one.
        json!({"status": "busy", "ttl": 60.0}),
        json!({"status": "busy", "message": "é".repeat(256)}),
    ] {
        assert_eq!(app.put("edge", body.clone()).await.status(), StatusCode::OK, "{body}");
    }
    let long = "x".repeat(128);
    assert_eq!(app.put(&long, json!({"status": "online"})).await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn invalid_user_ids_are_400_everywhere() {
    let app = TestApp::spawn().await;
    let too_long = "x".repeat(200);
    for raw in ["a.b", "*", "%3E", "a%20b", "user%3A1", too_long.as_str(), "%C3%BC"] {
        assert_error(app.get(&format!("/api/v2/presence/{raw}")).await, StatusCode::BAD_REQUEST).await;
        assert_error(app.put_as(raw, &mint("x"), json!({"status": "online"})).await, StatusCode::BAD_REQUEST)
            .await;
        assert_error(app.get(&format!("/api/v2/presence?users=ok,{raw}")).await, StatusCode::BAD_REQUEST)
            .await;
    }
    for id in ["a.b", "*", ">", "", too_long.as_str()] {
        assert_error(app.batch(json!(["ok", id])).await, StatusCode::BAD_REQUEST).await;
    }
    // An empty id in the path is no route at all.
    assert_error(app.get("/api/v2/presence/").await, StatusCode::NOT_FOUND).await;
    app.stop().await;
}

#[tokio::test]
async fn user_lists_must_hold_1_to_1000_distinct_ids() {
    let app = TestApp::spawn().await;
    for query in ["/api/v2/presence", "/api/v2/presence?users=", "/api/v2/presence?users=,,"] {
        assert_error(app.get(query).await, StatusCode::BAD_REQUEST).await;
    }
    assert_error(app.batch(json!([])).await, StatusCode::BAD_REQUEST).await;
    let ids: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    assert_error(
        app.get(&format!("/api/v2/presence?users={}", ids.join(","))).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(app.batch(json!(ids)).await, StatusCode::BAD_REQUEST).await;
    // A body's list is at most 1000 ids, as the document's `maxItems` says, a repeated one
    // counted each time (and answered once).
    let doubled: Vec<&String> = ids[..1000].iter().chain(&ids[..1000]).collect();
    assert_error(app.batch(json!(doubled)).await, StatusCode::BAD_REQUEST).await;
    let (status, body) =
        json_of(app.batch(json!(ids[..500].iter().chain(&ids[..500]).collect::<Vec<_>>())).await).await;
    assert_eq!((status, body["data"].as_object().map(|d| d.len())), (StatusCode::OK, Some(500)));
    app.stop().await;
}

#[tokio::test]
async fn bodies_must_be_json_and_small() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/v2/presence/carol");
    let auth = format!("Bearer {}", mint("carol"));
    let send = |body: String, content_type: Option<&'static str>| {
        let mut req = app.http.put(&url).header("authorization", &auth).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    assert_error(
        send("{\"status\": ".into(), Some("application/json")).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(send("not json".into(), Some("application/json")).await.unwrap(), StatusCode::BAD_REQUEST)
        .await;
    assert_error(
        send("{\"status\":\"online\"}".into(), Some("text/plain")).await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert_error(
        send("{\"status\":\"online\"}".into(), None).await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let big = format!("{{\"status\":\"online\",\"message\":\"{}\"}}", "x".repeat(17 * 1024));
    assert_error(send(big.clone(), Some("application/json")).await.unwrap(), StatusCode::PAYLOAD_TOO_LARGE)
        .await;
    let bigger = format!("{{\"user_ids\":[\"{}\"]}}", "x".repeat(145 * 1024));
    let batch = app
        .http
        .post(app.url("/api/v2/presence/batch"))
        .header("content-type", "application/json")
        .body(bigger)
        .send()
        .await
        .unwrap();
    assert_error(batch, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_error(app.get("/api/v2/presence/carol").await, StatusCode::NOT_FOUND).await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let app = TestApp::spawn().await;
    assert_error(app.get("/nope").await, StatusCode::NOT_FOUND).await;
    assert_error(app.get("/api/v2/presence/a/b").await, StatusCode::NOT_FOUND).await;
    let patch = app.http.patch(app.url("/api/v2/presence/user1")).send().await.unwrap();
    assert_eq!(patch.headers()["allow"], "GET,HEAD,PUT,DELETE");
    assert_error(patch, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_error(
        app.http.post(app.url("/api/v2/presence/user1")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    assert_error(
        app.http.patch(app.url("/api/v2/presence/batch")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    let history = app.http.post(app.url("/api/v2/presence/user1/history")).send().await.unwrap();
    assert_error(history, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_error(app.http.post(app.url("/health")).send().await.unwrap(), StatusCode::METHOD_NOT_ALLOWED)
        .await;
    app.stop().await;
}

/// The largest valid multi-user reads are served: 1000 distinct ids of 128 characters in a batch
/// body, and 1000 ids in a query string as long as a URI may be; one id more is a 400, a bigger
/// body a 413.
#[tokio::test]
async fn the_largest_valid_multi_reads_fit() {
    let app = TestApp::spawn_with(|c| c.rate_limit.enabled = false).await;
    let longest = |i: usize| format!("{i:0>128}");
    let ids: Vec<String> = (0..1000).map(longest).collect();
    let (status, body) = json_of(app.batch(json!(ids)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_object().unwrap().len(), 1000);
    let mut over = ids.clone();
    over.push(longest(1000));
    assert_error(app.batch(json!(over)).await, StatusCode::BAD_REQUEST).await;
    let padded = format!("{{\"user_ids\": {}, \"pad\": \"{}\"}}", json!(ids), " ".repeat(64 * 1024));
    let response = app
        .http
        .post(app.url("/api/v2/presence/batch"))
        .header("content-type", "application/json")
        .body(padded)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    let write = json!({"status": "busy", "message": "x".repeat(17 * 1024)});
    assert_error(app.put("batch", write).await, StatusCode::PAYLOAD_TOO_LARGE).await;

    // A URI holds at most 65,534 bytes: 1000 ids of 60 characters fit.
    let ids: Vec<String> = (0..1000).map(|i| format!("{i:0>60}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (status, body) = json_of(app.read_many(&refs).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_object().unwrap().len(), 1000);
    app.stop().await;
}

/// A write that no stream takes (the bucket's stream is gone, as during a failover before a new
/// leader answers) is refused as unavailable with nothing stored, not as an unknown outcome: the
/// server said at once that nobody listens.
#[tokio::test]
async fn a_write_no_stream_takes_is_unavailable_not_unknown() {
    let app = TestApp::spawn().await;
    app.set("ulla", json!({"status": "online"})).await;
    let js = async_nats::jetstream::new(crate::helpers::nats_connect(&app.nats_url()).await);
    js.delete_stream("KV_presence").await.unwrap();
    let response = app.put("ulla", json!({"status": "busy"})).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (_, body) = json_of(response).await;
    let said = body["error"].as_str().unwrap();
    assert!(said.contains("unavailable, nothing was stored"), "{said}");
    assert!(!said.contains("may or may not"), "{said}");
    app.stop().await;
}
