//! The four endpoints and the design document's response shape (docs/design.md, 4.2).

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, json_of};

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn put_then_get_answers_the_design_documents_shape() {
    let app = TestApp::spawn().await;
    let before = Utc::now() - chrono::Duration::seconds(1);
    let (status, put) =
        json_of(app.put("user123", json!({"status": "busy", "message": "In a meeting", "ttl": 3600})).await)
            .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(keys(&put), BTreeSet::from(["success", "data"]));
    assert_eq!(put["success"], json!(true));
    assert_eq!(keys(&put["data"]), BTreeSet::from(["user123"]));
    let p = &put["data"]["user123"];
    assert_eq!(
        keys(p),
        BTreeSet::from(["user_id", "status", "message", "last_seen", "updated_at", "node_id", "ttl"])
    );
    assert_eq!(p["user_id"], "user123");
    assert_eq!(p["status"], "busy");
    assert_eq!(p["message"], "In a meeting");
    assert_eq!(p["node_id"], "test-node");
    assert_eq!(p["ttl"], 3600);
    assert_eq!(p["last_seen"], p["updated_at"]);
    assert!(time(&p["updated_at"]) >= before && time(&p["updated_at"]) <= Utc::now());

    let (status, got) = json_of(app.get("/api/v2/presence/user123").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, put, "a read returns what the write acknowledged");
    app.stop().await;
}

#[tokio::test]
async fn a_user_never_seen_is_404_alone_and_offline_in_lists() {
    let app = TestApp::spawn().await;
    crate::helpers::assert_error(app.get("/api/v2/presence/ghost").await, StatusCode::NOT_FOUND).await;
    assert_eq!(app.put("user1", json!({"status": "online"})).await.status(), StatusCode::OK);

    let (status, body) = json_of(app.get("/api/v2/presence?users=user1,ghost,user1").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&body["data"]), BTreeSet::from(["user1", "ghost"]), "duplicates answered once");
    assert_eq!(body["data"]["ghost"], json!({"user_id": "ghost", "status": "offline"}));
    assert_eq!(body["data"]["user1"]["status"], "online");
    assert_eq!(body["data"]["user1"]["ttl"], 3600, "the default ttl is nats.kv.ttl");

    let (status, batch) = json_of(app.batch(json!(["ghost", "user1"])).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(batch, body, "batch and ?users= agree");
    app.stop().await;
}

#[tokio::test]
async fn many_users_in_one_read() {
    let app = TestApp::spawn().await;
    let ids: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
    for id in ids.iter().step_by(100) {
        assert_eq!(app.put(id, json!({"status": "away"})).await.status(), StatusCode::OK);
    }
    let (status, body) = json_of(app.batch(json!(ids)).await).await;
    assert_eq!(status, StatusCode::OK);
    let data = body["data"].as_object().unwrap();
    assert_eq!(data.len(), 1000);
    assert_eq!(data.values().filter(|p| p["status"] == "away").count(), 10);
    app.stop().await;
}

#[tokio::test]
async fn an_offline_write_keeps_last_seen_and_a_new_status_replaces_the_old() {
    let app = TestApp::spawn().await;
    let (_, first) = json_of(app.put("alice", json!({"status": "online", "message": "hi"})).await).await;
    let last_seen = first["data"]["alice"]["last_seen"].clone();
    let (status, off) = json_of(app.put("alice", json!({"status": "offline"})).await).await;
    assert_eq!(status, StatusCode::OK);
    let p = &off["data"]["alice"];
    assert_eq!(p["status"], "offline");
    assert_eq!(p["last_seen"], last_seen, "offline keeps the last active time");
    assert!(p.get("message").is_none(), "a write without message clears it");
    assert!(time(&p["updated_at"]) >= time(&last_seen));
    app.stop().await;
}

#[tokio::test]
async fn batch_is_also_a_user_id() {
    let app = TestApp::spawn().await;
    assert_eq!(app.put("batch", json!({"status": "busy"})).await.status(), StatusCode::OK);
    let (status, body) = json_of(app.get("/api/v2/presence/batch").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["batch"]["status"], "busy");
    app.stop().await;
}

#[tokio::test]
async fn an_expired_presence_reads_offline_with_last_seen_kept() {
    let app = TestApp::spawn().await;
    let (_, put) =
        json_of(app.put("shortlived", json!({"status": "online", "message": "brb", "ttl": 1})).await).await;
    let written = put["data"]["shortlived"].clone();
    let read = eventually(Duration::from_secs(5), "the presence expires", || async {
        let (_, body) = json_of(app.get("/api/v2/presence/shortlived").await).await;
        (body["data"]["shortlived"]["status"] == "offline").then(|| body["data"]["shortlived"].clone())
    })
    .await;
    assert!(Utc::now() >= time(&written["updated_at"]) + chrono::Duration::seconds(1), "never early");
    assert_eq!(read["last_seen"], written["last_seen"]);
    assert_eq!(read["updated_at"], written["updated_at"]);
    assert!(read.get("message").is_none(), "the message is cleared");
    assert!(read.get("ttl").is_none());
    let (_, list) = json_of(app.get("/api/v2/presence?users=shortlived").await).await;
    assert_eq!(list["data"]["shortlived"], read, "lists evaluate expiry too");
    app.stop().await;
}

#[tokio::test]
async fn health_names_the_node() {
    let app = TestApp::spawn().await;
    let body = app.health().await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["node_id"], "test-node");
    assert_eq!(body["node_type"], "center");
    assert_eq!(body["nats_connected"], true);
    app.stop().await;
}

/// `offline` writes keep the previous `last_seen`, so each reads the record and writes with
/// compare-and-set on its revision. Concurrent ones conflict: the loser reads again and retries,
/// and every client hears 200 (not "outcome unknown"). The node's count of compare-and-set calls
/// shows that the writes really did conflict.
#[tokio::test]
async fn concurrent_offline_writes_conflict_retry_and_all_succeed() {
    let app = TestApp::spawn_with(|c| c.rate_limit.enabled = false).await;
    let calls = |metrics: &str, op: &str| -> f64 {
        let series = format!("presence_nats_request_duration_seconds_count{{op=\"{op}\"}}");
        metrics
            .lines()
            .find(|l| l.starts_with(&series))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0.0)
    };
    // Users never seen: the first write creates the key, and concurrent creates conflict too.
    let mut created = false;
    for round in 0..20 {
        let user = format!("new-{round}");
        let answers =
            futures::future::join_all((0..4).map(|_| app.put(&user, json!({"status": "offline"})))).await;
        for answer in answers {
            assert_eq!(answer.status(), StatusCode::OK, "{:?}", answer.text().await);
        }
        let metrics = app.metrics().await;
        if calls(&metrics, "create") + calls(&metrics, "update") > 4.0 * (round + 1) as f64 {
            created = true;
            break;
        }
    }
    assert!(created, "no two creates ever conflicted; the test could not check the retry");
    let before = calls(&app.metrics().await, "update");
    app.set("nia", json!({"status": "online"})).await;
    let updates = |metrics: &str| calls(metrics, "update") - before;
    let mut writes = 0.0;
    for round in 0..20 {
        let answers = futures::future::join_all(
            (0..8).map(|i| app.put("nia", json!({"status": "offline", "message": format!("{round}-{i}")}))),
        )
        .await;
        for answer in answers {
            assert_eq!(answer.status(), StatusCode::OK, "{:?}", answer.text().await);
        }
        writes += 8.0;
        if updates(&app.metrics().await) > writes {
            let (_, body) = json_of(app.read("nia").await).await;
            assert!(body["data"]["nia"]["last_seen"].is_string(), "last_seen kept: {body}");
            app.stop().await;
            return;
        }
    }
    panic!("no two offline writes ever conflicted; the test could not check the retry");
}
