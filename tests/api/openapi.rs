//! The OpenAPI document is served, describes every route, and real responses match it.

use jsonschema::Validator;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, json_of, mint};

/// A validator for the schema at `pointer` of the document, resolving its `$ref`s in place.
fn validator(doc: &Value, pointer: &str) -> Validator {
    let mut schema = doc.clone();
    schema["$ref"] = json!(format!("#{}", pointer.replace('{', "%7B").replace('}', "%7D")));
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{pointer}: {e}"))
}

fn response_schema(path: &str, method: &str, status: u16) -> String {
    let escaped = path.replace('~', "~0").replace('/', "~1");
    format!("/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema")
}

fn check(doc: &Value, path: &str, method: &str, status: StatusCode, body: &Value) {
    let pointer = response_schema(path, method, status.as_u16());
    assert!(doc.pointer(&pointer).is_some(), "the document describes {method} {path} {status}");
    let v = validator(doc, &pointer);
    let errors: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{method} {path} {status}: {errors:?}\n{body}");
}

#[tokio::test]
async fn real_responses_match_the_served_document() {
    let app = TestApp::spawn().await;
    let (status, doc) = json_of(app.get("/api/v2/openapi.json").await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let single = "/api/v2/presence/{user_id}";
    let (s, body) =
        json_of(app.put("jane", json!({"status": "busy", "message": "m", "ttl": 60})).await).await;
    check(&doc, single, "put", s, &body);
    let (s, body) = json_of(app.get("/api/v2/presence/jane").await).await;
    check(&doc, single, "get", s, &body);
    let (s, body) = json_of(app.get("/api/v2/presence/nobody").await).await;
    check(&doc, single, "get", s, &body);
    let (s, body) = json_of(app.get("/api/v2/presence/a.b").await).await;
    check(&doc, single, "get", s, &body);
    let (s, body) = json_of(app.put_as("jane", &mint("kim"), json!({"status": "busy"})).await).await;
    check(&doc, single, "put", s, &body);
    let (s, body) = json_of(app.put_as("jane", "bad", json!({"status": "busy"})).await).await;
    check(&doc, single, "put", s, &body);
    let (s, body) = json_of(app.get("/api/v2/presence?users=jane,nobody").await).await;
    check(&doc, "/api/v2/presence", "get", s, &body);
    let (s, body) = json_of(app.batch(json!(["jane", "nobody"])).await).await;
    check(&doc, "/api/v2/presence/batch", "post", s, &body);
    let (s, body) = json_of(app.batch(json!([])).await).await;
    check(&doc, "/api/v2/presence/batch", "post", s, &body);
    let (s, body) = json_of(app.get("/health").await).await;
    check(&doc, "/health", "get", s, &body);

    // The live endpoints as a client meets them: the upgrade's headers (what the node refuses
    // without), and each event of the stream, whose data is JSON.
    let ws = &doc["paths"]["/api/v2/ws"]["get"]["parameters"];
    for header in ["Connection", "Upgrade", "Sec-WebSocket-Version", "Sec-WebSocket-Key"] {
        let p = ws.as_array().unwrap().iter().find(|p| p["name"] == header).expect(header);
        assert_eq!((&p["in"], &p["required"]), (&json!("header"), &json!(true)), "{p}");
    }
    let stream = &doc["paths"]["/api/v2/presence/stream"]["get"]["responses"]["200"]["content"];
    assert_eq!(stream["text/event-stream"]["schema"]["$ref"], "#/components/schemas/StreamEvent");
    let event = &doc["components"]["schemas"]["StreamEvent"];
    assert_eq!(
        event["properties"]["event"]["enum"],
        json!(["snapshot", "change", "room", "stale", "fresh", "closed"])
    );
    // A room that is not public, read without a token: the documented refusal.
    let (s, body) = json_of(app.get("/api/v2/rooms/doc-1").await).await;
    assert_eq!(s, reqwest::StatusCode::FORBIDDEN);
    check(&doc, "/api/v2/rooms/{room}", "get", s, &body);
    let (s, body) = json_of(app.get("/api/v2/rooms?rooms=a,b").await).await;
    check(&doc, "/api/v2/rooms", "get", s, &body);
    let rooms = &doc["paths"]["/api/v2/rooms"]["get"]["parameters"][0];
    assert_eq!(
        (&rooms["name"], &rooms["in"], &rooms["required"]),
        (&json!("rooms"), &json!("query"), &json!(true))
    );
    assert_eq!(doc["components"]["schemas"]["BatchRequest"]["properties"]["user_ids"]["maxItems"], 1000);

    // The schemas are strict enough to catch a wrong shape.
    let bad = json!({"success": true, "data": {"x": {"user_id": "x", "status": "sleeping"}}});
    assert!(!validator(&doc, &response_schema(single, "get", 200)).is_valid(&bad));
    app.stop().await;
}
