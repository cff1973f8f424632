//! A read of one user by a plain id is answered before axum's router (src/http/fast.rs); the
//! same id percent-encoded goes through the router. Both must give the same answer, headers and
//! all, and be counted under the same route.

use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, ORIGIN};

use super::*;
use crate::helpers::mint;

/// `id` with its first character percent-encoded: the same id, which the fast path leaves to the
/// router.
fn encoded(id: &str) -> String {
    let first = id.as_bytes()[0];
    format!("%{first:02X}{}", &id[1..])
}

/// The answer to GET `/api/v2/presence/{path_id}`, with `token` if any: status, the headers a
/// client reads, and the body.
async fn answer(
    app: &TestApp,
    path_id: &str,
    token: Option<&str>,
) -> (StatusCode, Vec<Option<String>>, String) {
    let mut request =
        app.http_get(&format!("/api/v2/presence/{path_id}")).header(ORIGIN, "https://app.example");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = [
        CONTENT_TYPE.as_str(),
        ACCESS_CONTROL_ALLOW_ORIGIN.as_str(),
        "x-presence-stale",
        "x-presence-degraded",
    ]
    .iter()
    .map(|name| response.headers().get(*name).map(|v| v.to_str().unwrap().to_string()))
    .collect();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn a_plain_id_and_its_percent_encoded_form_read_the_same() {
    let app =
        TestApp::spawn_with(|c| c.service.cors.allowed_origins = vec!["https://app.example".into()]).await;
    app.set("fast-1", json!({"status": "busy", "message": "in a \"meeting\""})).await;
    // Seen once, then invisible: everyone else reads `offline` (never seen at all would be 404).
    app.set("hidden", json!({"status": "online"})).await;
    app.set("hidden", json!({"status": "invisible"})).await;
    let route =
        "presence_http_requests_total{method=\"GET\",route=\"/api/v2/presence/{user_id}\",status=\"200\"}";
    let counted = app.metric(route).await;
    let owner = mint("hidden");
    let cases: [(&str, Option<&str>, StatusCode); 5] = [
        ("fast-1", None, StatusCode::OK),
        // Another's token: everyone's view; the owner's: theirs (`invisible`).
        ("hidden", None, StatusCode::OK),
        ("hidden", Some(owner.as_str()), StatusCode::OK),
        ("nobody-here", None, StatusCode::NOT_FOUND),
        ("bad!id", None, StatusCode::BAD_REQUEST),
    ];
    for (id, token, status) in cases {
        let fast = answer(&app, id, token).await;
        let routed = answer(&app, &encoded(id), token).await;
        assert_eq!(fast.0, status, "{id}: {}", fast.2);
        assert_eq!(fast, routed, "{id} with token {}: the fast path and the router", token.is_some());
        assert_eq!(fast.1[1].as_deref(), Some("https://app.example"), "CORS on both ways");
    }
    assert!(answer(&app, "hidden", Some(&owner)).await.2.contains("invisible"), "the owner's view");
    assert!(answer(&app, "hidden", None).await.2.contains("offline"), "everyone else's");
    // Both ways are counted under the route's name: three reads of 200 each way, and two more.
    assert_eq!(app.metric(route).await - counted, 8.0);
    app.stop().await;
}
