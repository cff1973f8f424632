//! Events delivered from the audit log: each type, signed; the same `webhook-id` on every
//! attempt; a 410 that disables; a write at a leaf delivered once, by the center.

use std::time::Duration;

use presence::config::{Secret, WebhookConfig};

use super::*;
use crate::helpers::{TestApp, eventually};

pub(super) const SECOND: Duration = Duration::from_secs(1);

/// An endpoint for the receiver at `url`, on loopback over plain HTTP, with a quick schedule.
pub(crate) fn endpoint(url: &str, key: &str) -> WebhookConfig {
    WebhookConfig {
        name: "backend".into(),
        url: url.into(),
        secret: Secret::new(key.into()),
        previous_secret: None,
        allow_insecure: true,
        allow_private: true,
        ca_file: None,
        events: Vec::new(),
        users: Vec::new(),
        rooms: Vec::new(),
        batch: None,
        retry_schedule: Some(vec![Duration::from_millis(200); 4]),
    }
}

/// The events the receiver got, once `count` arrived (within 10 s).
pub(super) async fn events_when(got: &Received, count: usize) -> Vec<(Vec<(String, String)>, Value)> {
    eventually(10 * SECOND, &format!("{count} requests"), || async {
        let got = got.lock().unwrap();
        (got.len() >= count)
            .then(|| got.iter().map(|(h, b)| (h.clone(), serde_json::from_str(b).unwrap())).collect())
    })
    .await
}

pub(super) fn header(headers: &[(String, String)], name: &str) -> String {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap()
}

#[tokio::test]
async fn status_changes_and_expiries_are_delivered_signed_and_a_kept_status_is_not() {
    let key = secret(5);
    let (url, got) = receiver(200).await;
    let hook = endpoint(&url, &key);
    let app = TestApp::spawn_with(|c| c.webhooks = vec![hook]).await;
    app.set("ann", json!({"status": "online"})).await;
    app.set("ann", json!({"status": "online", "message": "same status"})).await;
    app.set("ann", json!({"status": "busy", "ttl": 1})).await;
    let events = events_when(&got, 3).await;
    let kinds: Vec<&str> = events.iter().map(|(_, e)| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["presence.changed", "presence.changed", "presence.expired"], "{events:#?}");
    let (first, second, expired) = (&events[0].1, &events[1].1, &events[2].1);
    assert_eq!(
        (&first["data"]["status"], &first["data"]["previous_status"]),
        (&json!("online"), &json!(null))
    );
    assert_eq!(
        (&second["data"]["status"], &second["data"]["previous_status"]),
        (&json!("busy"), &json!("online"))
    );
    assert_eq!(
        (&expired["data"]["status"], &expired["data"]["previous_status"]),
        (&json!("offline"), &json!("busy"))
    );
    assert!(
        first["data"]["revision"].as_u64() < second["data"]["revision"].as_u64(),
        "each carries its revision"
    );
    for (headers, body) in &events {
        let text = body.to_string();
        // The body as it was sent (serde_json keeps the order of an object's keys as parsed).
        let sent = got.lock().unwrap().iter().find(|(h, _)| h == headers).unwrap().1.clone();
        assert_eq!(serde_json::from_str::<Value>(&sent).unwrap().to_string(), text);
        assert!(verifies(&key, headers, &sent), "signed: {sent}");
    }
    assert!(app.metric("presence_webhook_delivered_total{endpoint=\"backend\"}").await >= 3.0);
    app.stop().await;
}

#[tokio::test]
async fn a_failing_endpoint_gets_the_same_id_until_it_answers_and_a_410_disables_it() {
    let (url, got) = scripted(vec![500, 503, 500], 200).await;
    let app = TestApp::spawn_with(|c| c.webhooks = vec![endpoint(&url, &secret(6))]).await;
    app.set("bo", json!({"status": "busy"})).await;
    let attempts = events_when(&got, 4).await;
    let ids: Vec<String> = attempts.iter().map(|(h, _)| header(h, "webhook-id")).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one id on every attempt: {ids:?}");
    assert_eq!(attempts[3].1["data"]["status"], "busy");
    assert!(app.metric("presence_webhook_retried_total{endpoint=\"backend\"}").await >= 3.0);
    app.stop().await;

    // A 410 from one endpoint; a second endpoint, healthy, hears the same events: once it has
    // the later ones, the first would have had them too.
    let (gone_url, gone) = receiver(410).await;
    let (ok_url, ok) = receiver(200).await;
    let app = TestApp::spawn_with(|c| {
        let healthy = WebhookConfig { name: "healthy".into(), ..endpoint(&ok_url, &secret(6)) };
        c.webhooks = vec![endpoint(&gone_url, &secret(6)), healthy];
    })
    .await;
    app.set("cy", json!({"status": "busy"})).await;
    events_when(&gone, 1).await;
    eventually(5 * SECOND, "the endpoint shows as disabled", || async {
        (app.metric("presence_webhook_disabled{endpoint=\"backend\"}").await == 1.0).then_some(())
    })
    .await;
    app.set("cy", json!({"status": "away"})).await;
    app.set("dee", json!({"status": "away"})).await;
    events_when(&ok, 3).await;
    assert_eq!(gone.lock().unwrap().len(), 1, "a 410 ends the deliveries");
    app.stop().await;
}

#[tokio::test]
async fn a_write_at_a_leaf_is_delivered_once_by_the_center() {
    let (url, got) = receiver(200).await;
    let center = TestApp::spawn_with(|c| c.webhooks = vec![endpoint(&url, &secret(7))]).await;
    // The leaf names the same endpoint: a leaf never delivers (nothing is multiplied by regions).
    let leaf = crate::helpers::leaf_app_with(center.config.nats.leaf_port, "leaf-a", "us-east-1", |c| {
        c.webhooks = vec![endpoint(&url, &secret(7))]
    })
    .await;
    leaf.set("eve", json!({"status": "online"})).await;
    let events = events_when(&got, 1).await;
    assert_eq!(events[0].1["data"]["node_id"], "leaf-a", "made at the leaf");
    // A second write, after the first was delivered: a duplicate of the first would be sent (by
    // the leaf, or another attempt) no later than this one.
    leaf.set("eve", json!({"status": "busy"})).await;
    let events = events_when(&got, 2).await;
    let statuses: Vec<&Value> = events.iter().map(|(_, e)| &e["data"]["status"]).collect();
    assert_eq!(statuses, [&json!("online"), &json!("busy")], "each delivered once");
    for app in [leaf, center] {
        app.stop().await;
    }
}

#[tokio::test]
async fn two_center_nodes_deliver_each_event_once_room_events_included() {
    let nats = crate::helpers::NatsServer::start().await;
    let (url, got) = receiver(200).await;
    let center = |node: &'static str| {
        let (nats_url, hook) = (nats.url(), endpoint(&url, &secret(14)));
        TestApp::spawn_with(move |c| {
            c.nats.embedded = false;
            c.nats.url = nats_url;
            c.service.node_id = node.into();
            c.webhooks = vec![hook];
        })
    };
    let (a, b) = (center("center-a").await, center("center-b").await);
    // Writes at both; a member at one: both nodes see every record and make the same room events.
    a.set("ann", json!({"status": "busy"})).await;
    b.set("bob", json!({"status": "away"})).await;
    let mut kim = crate::rooms::member(&a, "kim", "laptop", &["*"]).await;
    crate::rooms::join(&mut kim, "doc-9", json!({})).await;
    // In the record first (a join and a leave within one session write would tell nothing).
    eventually(10 * SECOND, "kim in the room", || async {
        got.lock().unwrap().iter().any(|(_, b)| b.contains("room.joined")).then_some(())
    })
    .await;
    kim.close().await;
    // Ann, bob, kim online, occupied, joined, left, vacated, kim offline: then a marker, last.
    let marker = || async {
        let got = got.lock().unwrap();
        got.iter().any(|(_, b)| b.contains("room.vacated") && b.contains("doc-9")).then_some(())
    };
    eventually(10 * SECOND, "the room emptied", marker).await;
    a.set("zed", json!({"status": "busy"})).await;
    eventually(10 * SECOND, "the marker", || async {
        got.lock().unwrap().iter().any(|(_, b)| b.contains("\"zed\"")).then_some(())
    })
    .await;
    let got = got.lock().unwrap().clone();
    let ids: Vec<String> = got.iter().map(|(h, _)| header(h, "webhook-id")).collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "each event once, from one of the two: {ids:#?}");
    let kinds: Vec<String> = got
        .iter()
        .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap()["type"].as_str().unwrap().to_string())
        .collect();
    for kind in ["room.occupied", "room.joined", "room.left", "room.vacated"] {
        assert_eq!(kinds.iter().filter(|k| *k == kind).count(), 1, "{kind} once: {kinds:?}");
    }
    for app in [a, b] {
        app.stop().await;
    }
}

#[tokio::test]
async fn an_endpoint_failing_past_its_schedule_is_disabled_and_says_why() {
    let (url, got) = receiver(500).await;
    let mut hook = endpoint(&url, &secret(15));
    hook.retry_schedule = Some(vec![Duration::from_millis(100); 2]);
    let app = TestApp::spawn_with(|c| c.webhooks = vec![hook]).await;
    app.set("gus", json!({"status": "busy"})).await;
    let backend = eventually(10 * SECOND, "disabled", || async {
        let backend = app.health().await["webhooks"]["backend"].clone();
        (backend["state"] == "disabled").then_some(backend)
    })
    .await;
    let reason = backend["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("past its retry schedule") && reason.contains("500"), "{reason}");
    assert_eq!(got.lock().unwrap().len(), 3, "the first attempt and the schedule's two");
    assert_eq!(app.metric("presence_webhook_disabled{endpoint=\"backend\"}").await, 1.0);
    app.stop().await;
}
