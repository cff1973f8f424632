//! The audit log's repair: a record whose event never reached the audit log (the node that wrote
//! it was killed between the KV put and the event) gets its event from a center node: at once
//! when a center starts, and from another center once the writer went silent.

use super::*;
use crate::helpers::stored_value;

/// The revisions of `user`'s events in the audit log, newest first, with their kinds and actors.
async fn events_of(app: &TestApp, user: &str) -> Vec<Value> {
    let (status, body) = json_of(app.history(user, None).await).await;
    assert_eq!(status, StatusCode::OK);
    body["data"][user].as_array().unwrap().clone()
}

async fn put_raw(kv: &async_nats::jetstream::kv::Store, user: &str, value: &Value) -> u64 {
    kv.put(format!("user.{user}"), serde_json::to_vec(value).unwrap().into()).await.unwrap()
}

#[tokio::test]
async fn a_center_started_again_stores_the_events_a_crash_left_out() {
    let app = TestApp::spawn().await;
    app.set("ann", json!({"status": "online"})).await;
    app.set("cy", json!({"status": "busy", "message": "same"})).await;
    app.set("dee", json!({"status": "online", "ttl": 60})).await;
    let url = nats_url(&app);
    let kv = bucket(&url).await;
    // What a center killed after its KV puts and before their events leaves: a changed record,
    // a first record, a record others see as before (no event due), an expiry's transition.
    let ann = kv.put("user.ann", stored_value("ann", "busy", "after the crash", 600)).await.unwrap();
    let bo = kv.put("user.bo", stored_value("bo", "online", "first", 600)).await.unwrap();
    let cy_before = stored(&url, "cy").await.unwrap();
    put_raw(&kv, "cy", &cy_before).await;
    let mut dee = stored(&url, "dee").await.unwrap();
    dee["status"] = json!("offline");
    dee.as_object_mut().unwrap().remove("message");
    dee["expires_at"] = json!((Utc::now() - chrono::Duration::seconds(1)).to_rfc3339());
    let dee = put_raw(&kv, "dee", &dee).await;
    let app = TestApp::restart(app.stop_keeping().await).await;

    let newest = |user: &'static str, revision: u64| {
        let app = &app;
        async move {
            let events = events_of(app, user).await;
            (events.first()?["revision"] == revision).then_some(events)
        }
    };
    let what = "the center's repair stores the three missing events";
    let (ann, bo, dee) = eventually(Duration::from_secs(20), what, || async {
        Some((newest("ann", ann).await?, newest("bo", bo).await?, newest("dee", dee).await?))
    })
    .await;
    assert_eq!(ann.len(), 2, "one event per change: {ann:?}");
    let (event, before) = (&ann[0], &ann[1]);
    assert_eq!(
        (&event["kind"], &event["actor"], &event["previous_status"]),
        (&json!("update"), &json!("ann"), &json!("online"))
    );
    assert_eq!(
        (&event["presence"]["status"], &event["presence"]["message"]),
        (&json!("busy"), &json!("after the crash"))
    );
    assert_eq!(event["node_id"], "elsewhere", "the node the record names");
    assert!(before["revision"].as_u64() < event["revision"].as_u64());
    assert_eq!((bo.len(), &bo[0]["previous_status"]), (1, &Value::Null), "{bo:?}");
    let expired = &dee[0];
    assert_eq!((&expired["kind"], &expired["actor"]), (&json!("expire"), &json!("system")), "{expired:?}");
    assert_eq!(
        (&expired["presence"]["status"], &expired["previous_status"]),
        (&json!("offline"), &json!("online"))
    );
    assert_eq!(events_of(&app, "cy").await.len(), 1, "a record others see as before gets no event");
    assert_eq!(app.metric("presence_events_repaired_total").await, 3.0);
    app.stop().await;
}

#[tokio::test]
async fn a_center_stores_what_a_center_that_went_silent_left_out() {
    // Two center nodes on one NATS; the second writes a record and dies before its event (the
    // record is written here straight into the bucket), and never comes back.
    let nats = NatsServer::start().await;
    let (url, second_url) = (nats.url(), nats.url());
    let first = TestApp::spawn_with(move |c| {
        c.nats.embedded = false;
        c.nats.url = url;
        c.service.node_id = "center-1".into();
        // Polled for a minute: more history reads than the per-user limit lets through.
        c.rate_limit.enabled = false;
    })
    .await;
    let second = TestApp::spawn_with(move |c| {
        c.nats.embedded = false;
        c.nats.url = second_url;
        c.service.node_id = "center-2".into();
    })
    .await;
    eventually(Duration::from_secs(10), "center-1 hears center-2", || async {
        first.nodes().await.iter().any(|n| n["node_id"] == "center-2" && n["up"] == true).then_some(())
    })
    .await;
    let kv = bucket(&nats.url()).await;
    let revision = kv.put("user.eve", stored_value("eve", "away", "left behind", 600)).await.unwrap();
    second.stop().await;
    // Not at once: the writers of that moment may still be storing their events. Center-1 looks
    // once center-2 has been silent for 7 s and the writers' 45 s have passed.
    let what = "center-1's repair stores eve's event";
    let events = eventually(Duration::from_secs(120), what, || async {
        let events = events_of(&first, "eve").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (&events[0]["revision"], &events[0]["presence"]["status"]),
        (&json!(revision), &json!("away"))
    );
    first.stop().await;
}
