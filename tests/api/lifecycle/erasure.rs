//! An erasure racing a write: when both answer 200, the outcome is one of the two orders, never
//! half of each. Write then erasure: neither the record nor any event of the user remains.
//! Erasure then write: the record is the write's, and the audit log holds the write's event and
//! nothing older. 1,000 races, writes at a leaf and at the center, erasures at either, a
//! quarter of them of users erased once before.

use std::collections::HashMap;

use async_nats::jetstream::stream::RawMessageErrorKind;
use futures::{StreamExt, stream};

use super::*;

/// What the center holds of `user`: the record's revision and message (if any), and the
/// revisions of the user's events in the audit log. The test's own reads of JetStream are retried
/// (within a deadline) when they fail rather than answer: under the whole suite's load a request
/// may time out, which says nothing of what is stored.
async fn held(js: &async_nats::jetstream::Context, user: &str) -> (Option<(u64, String)>, Vec<u64>) {
    let what = format!("the center's record and events of {user}");
    eventually(Duration::from_secs(30), &what, || async { read_held(js, user).await.ok() }).await
}

async fn read_held(
    js: &async_nats::jetstream::Context,
    user: &str,
) -> Result<(Option<(u64, String)>, Vec<u64>), Box<dyn std::error::Error>> {
    let kv = js.get_key_value("presence").await?;
    let record = kv.entry(format!("user.{user}")).await?.and_then(|entry| {
        let value: Value = serde_json::from_slice(&entry.value).ok()?;
        Some((entry.revision, value["message"].as_str().unwrap_or_default().to_string()))
    });
    let log = js.get_stream("PRESENCE_EVENTS").await?;
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let subject = format!("presence.*.{user}");
        let message = match log.get_first_raw_message_by_subject(subject, after + 1).await {
            Ok(message) => message,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok((record, events)),
            Err(e) => return Err(e.into()),
        };
        let event: Value = serde_json::from_slice(&message.payload)?;
        events.push(event["revision"].as_u64().ok_or("an event without a revision")?);
        after = message.sequence;
    }
}

#[tokio::test]
async fn an_erasure_racing_a_write_is_one_order_or_the_other_never_a_mix() {
    let center = TestApp::spawn_with(|c| c.rate_limit.enabled = false).await;
    let leaf = crate::helpers::leaf_app_with(center.config.nats.leaf_port, "leaf-race", "eu-west", |c| {
        c.rate_limit.enabled = false;
    })
    .await;
    let operator = async_nats::jetstream::new(crate::helpers::nats_connect(&center.nats_url()).await);
    let nodes = [&center, &leaf];
    let (center_ref, operator_ref) = (&center, &operator);
    let outcomes: Vec<(&str, String)> = stream::iter(0..1000)
        .map(|i| {
            let (writer, eraser) = (nodes[i % 2], nodes[(i / 2) % 2]);
            let (center, operator) = (center_ref, operator_ref);
            async move {
                let user = format!("racer-{i}");
                // A quarter of the users were erased once before: the marker of that erasure
                // refuses their events, which take the other way of the check (stored, then the
                // bucket asked). The rest never were: their events go on condition of no marker.
                if i % 4 == 3 && center.erase(&user).await.status() != StatusCode::OK {
                    return ("not both 200", format!("the first erasure of {user}"));
                }
                let before = center.put(&user, json!({"status": "away", "message": "before"})).await;
                if before.status() != StatusCode::OK {
                    let why = format!("{}: {}", before.status(), before.text().await.unwrap_or_default());
                    return ("not both 200", format!("the first write of {user}: {why}"));
                }
                let message = format!("race-{i}");
                // Either may start first, by up to 3 ms: the races sweep across the windows.
                let lead = std::time::Duration::from_micros((i as u64 * 7919) % 3000);
                let (write_after, erase_after) =
                    if i % 3 == 0 { (lead, Duration::ZERO) } else { (Duration::ZERO, lead) };
                let (written, erased) = tokio::join!(
                    async {
                        tokio::time::sleep(write_after).await;
                        writer.put(&user, json!({"status": "online", "message": message})).await
                    },
                    async {
                        tokio::time::sleep(erase_after).await;
                        eraser.erase(&user).await
                    },
                );
                if written.status() != StatusCode::OK || erased.status() != StatusCode::OK {
                    let body = erased.text().await.unwrap_or_default();
                    return (
                        "not both 200",
                        format!("{} {} at {}: {body}", written.status(), i % 2, (i / 2) % 2),
                    );
                }
                match held(operator, &user).await {
                    (None, events) if events.is_empty() => ("write, then erasure", String::new()),
                    (Some((revision, held)), events) if held == message && events == [revision] => {
                        ("erasure, then write", String::new())
                    }
                    (record, events) => ("mixed", format!("{user}: record {record:?}, events {events:?}")),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (outcome, _) in &outcomes {
        *counts.entry(outcome).or_default() += 1;
    }
    let mixed: Vec<&String> = outcomes.iter().filter(|(o, _)| *o == "mixed").map(|(_, why)| why).collect();
    assert!(mixed.is_empty(), "{} mixed of 1000 ({counts:?}): {mixed:#?}", mixed.len());
    assert!(counts.get("not both 200").copied().unwrap_or(0) < 50, "the races ran: {counts:?} {outcomes:?}");
    let refused: Vec<&String> =
        outcomes.iter().filter(|(o, _)| *o == "not both 200").map(|(_, why)| why).collect();
    println!("erasure races: {counts:?}; refused: {refused:?}");
    leaf.stop().await;
    center.stop().await;
}

/// A write's erasure check: its event goes to the audit log on condition that no erasure of its
/// user left a marker there, and for a user never erased that is the whole check (no request
/// besides the write's own two). Once the user was erased, the marker refuses the event: it is
/// stored without the condition, and the check reads the bucket's last revision (one request for
/// the writers that ask meanwhile) and the rest from the cache; the leader is asked about the key
/// itself only when those cannot say. On a healthy node they always can. Either way the events
/// are kept.
#[tokio::test]
async fn a_writes_erasure_check_rests_on_the_erasures_marker() {
    let app = TestApp::spawn_with(|c| c.rate_limit.enabled = false).await;
    let per_key = "presence_nats_request_duration_seconds_count{op=\"erased_since\"}";
    let revisions = "presence_nats_request_duration_seconds_count{op=\"last_revision\"}";
    let (asked, before) = (app.metric(per_key).await, app.metric(revisions).await);
    for i in 0..20 {
        app.set(&format!("checked-{}", i % 4), json!({"status": "online", "message": format!("{i}")})).await;
    }
    assert_eq!(app.metric(revisions).await, before, "no write of a user never erased asked for more");
    assert_eq!(app.erase("checked-0").await.status(), StatusCode::OK);
    for i in 0..5 {
        app.set("checked-0", json!({"status": "online", "message": format!("again {i}")})).await;
    }
    app.set("checked-1", json!({"status": "online", "message": "another"})).await;
    let asked_after = app.metric(revisions).await - before;
    assert_eq!(asked_after, 5.0, "one revision request for each write of the erased user, none for others");
    assert_eq!(app.metric(per_key).await, asked, "no write needed the leader's read of its key");
    let (status, body) = json_of(app.history("checked-0", None).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kept: Vec<&str> = body["data"]["checked-0"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["presence"]["message"].as_str())
        .collect();
    assert_eq!(
        kept,
        ["again 4", "again 3", "again 2", "again 1", "again 0"],
        "the events after the erasure stay"
    );
    app.stop().await;
}

/// The worst case of the race, made on purpose: a write whose record was stored before the
/// erasure's purge and whose event comes only after the erasure has swept the audit log. The
/// erasure's marker is what stops it: that event, sent as the service sends its events (on
/// condition that no marker of the user exists), is refused, where before the erasure it was
/// stored, and another user's is stored all the same.
#[tokio::test]
async fn an_erasure_leaves_a_marker_that_refuses_a_late_event() {
    let app = TestApp::spawn().await;
    app.set("late", json!({"status": "online"})).await;
    let js = async_nats::jetstream::new(crate::helpers::nats_connect(&app.nats_url()).await);
    let send = |user: &'static str, id: &'static str| {
        let js = js.clone();
        async move {
            let event =
                json!({"kind": "update", "user_id": user, "revision": 1, "presence": {"status": "online"}});
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id);
            headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence-Subject",
                format!("presence.erased.user.{user}").as_str(),
            );
            let subject = format!("presence.update.{user}");
            js.publish_with_headers(subject, headers, event.to_string().into()).await.unwrap().await
        }
    };
    assert!(send("late", "late-before").await.is_ok(), "a user never erased: stored");
    assert_eq!(app.erase("late").await.status(), StatusCode::OK);
    let refused = send("late", "late-after").await.expect_err("after the erasure: refused");
    assert!(refused.to_string().contains("wrong last sequence"), "{refused}");
    assert!(send("other", "other-after").await.is_ok(), "another user's event: stored");
    let (status, body) = json_of(app.history("late", None).await).await;
    assert_eq!((status, body["data"]["late"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{body}");
    app.stop().await;
}
