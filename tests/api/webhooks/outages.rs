//! Nothing lost across the worst moments: a receiver down for 30 s, the center killed (`kill -9`,
//! service and NATS) in the middle of a stream of deliveries, an endpoint disabled across a
//! restart, a node stopped while a request is in flight; `/health` and the metrics showing what
//! waits.

use std::{collections::HashSet, sync::Arc, time::Duration};

use presence::config::WebhookConfig;

use super::{
    answers::{Reply, Script, answering},
    delivery::{SECOND, endpoint, header},
    *,
};
use crate::helpers::{SECRET, ServiceProcess, TestApp, eventually, is_alive, kill9, mint};

/// The distinct `webhook-id`s received and the number of requests, and each event's user.
fn tally(got: &Received) -> (HashSet<String>, usize, HashSet<String>) {
    let got = got.lock().unwrap();
    let ids = got.iter().map(|(h, _)| header(h, "webhook-id")).collect();
    let users = got
        .iter()
        .filter_map(|(_, b)| {
            serde_json::from_str::<Value>(b).ok()?["data"]["user_id"].as_str().map(String::from)
        })
        .collect();
    (ids, got.len(), users)
}

#[tokio::test]
async fn a_receiver_down_for_30_seconds_gets_every_event_once_it_is_back() {
    // The receiver's port, bound and not listening: a connection is refused, as to a receiver
    // that is down, and no other process takes the port meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let mut hook = endpoint(&format!("http://127.0.0.1:{port}/hook"), &secret(11));
    hook.retry_schedule = Some(vec![3 * SECOND; 20]);
    let app = TestApp::spawn_with(|c| c.webhooks = vec![hook]).await;
    let down = tokio::time::Instant::now();
    let users: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    for user in &users[..10] {
        app.set(user, json!({"status": "busy"})).await;
    }
    // While it is down, health and the metrics show the endpoint retrying with events waiting.
    eventually(10 * SECOND, "health shows the endpoint retrying", || async {
        let health = app.health().await;
        let backend = &health["webhooks"]["backend"];
        (backend["state"] == "retrying" && backend["pending"].as_u64() >= Some(10)).then_some(())
    })
    .await;
    eventually(10 * SECOND, "the oldest pending event ages", || async {
        (app.metric("presence_webhook_oldest_pending_seconds{endpoint=\"backend\"}").await >= 1.0)
            .then_some(())
    })
    .await;
    for user in &users[10..] {
        app.set(user, json!({"status": "away"})).await;
    }
    // The outage lasts 30 s (its length, not a wait for anything).
    tokio::time::sleep((down + 30 * SECOND).saturating_duration_since(tokio::time::Instant::now())).await;
    let (got, _server) = serve(socket.listen(1024).unwrap(), vec![], 200);
    eventually(20 * SECOND, "every event delivered", || async {
        let (_, _, seen) = tally(&got);
        users.iter().all(|u| seen.contains(u)).then_some(())
    })
    .await;
    eventually(10 * SECOND, "health shows nothing waiting", || async {
        let health = app.health().await;
        let backend = &health["webhooks"]["backend"];
        (backend["state"] == "delivering" && backend["pending"] == 0).then_some(())
    })
    .await;
    let (ids, requests, _) = tally(&got);
    assert_eq!((ids.len(), requests), (20, 20), "each event once: nothing lost, nothing repeated");
    app.stop().await;
}

#[tokio::test]
async fn a_center_killed_mid_stream_loses_nothing_and_repeats_at_most_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (got, _server) = serve(listener, vec![], 200);
    let webhooks = format!(
        "webhooks:\n  - {{ name: backend, url: \"{url}\", secret: \"{}\", allow_insecure: true, \
         allow_private: true, events: [presence.changed], retry_schedule: [1s, 1s, 1s, 1s, 1s] }}\n",
        secret(12)
    );
    let logging = ("level: info\n  format: json", webhooks.as_str());
    let mut service = ServiceProcess::start_with(dir.path(), None, Some(SECRET), logging);
    service.wait_healthy().await;
    let client = reqwest::Client::new();
    let write = move |user: String, base: String| {
        let client = client.clone();
        async move {
            let url = format!("{base}/api/v2/presence/{user}");
            let sent = client.put(url).bearer_auth(mint(&user)).json(&json!({"status": "busy"})).send();
            sent.await.is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
        }
    };
    // A stream of writes; the center dies (service and NATS, kill -9) once deliveries are flowing.
    let base = service.url("");
    let writing = write.clone();
    let writer = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..400 {
            let user = format!("w{i}");
            if !writing(user.clone(), base.clone()).await {
                break;
            }
            acknowledged.push(user);
        }
        acknowledged
    });
    eventually(20 * SECOND, "deliveries flowing", || async {
        (got.lock().unwrap().len() >= 40).then_some(())
    })
    .await;
    let nats = service.nats_pid().expect("the embedded server wrote its pid");
    service.kill9();
    kill9(nats);
    let killed = received_at_now();
    let mut acknowledged = writer.await.unwrap();
    assert!(acknowledged.len() < 400, "killed mid-stream");
    eventually(10 * SECOND, "nats-server is gone", || async { (!is_alive(nats)).then_some(()) }).await;

    let mut again = ServiceProcess::start_with(dir.path(), Some(service.ports()), Some(SECRET), logging);
    again.wait_healthy().await;
    for i in 0..20 {
        let user = format!("after{i}");
        assert!(write(user.clone(), again.url("")).await);
        acknowledged.push(user);
    }
    // Events the dead node had taken and not acknowledged go out again once their
    // acknowledgement is overdue (30 s).
    eventually(60 * SECOND, "every acknowledged write's event delivered", || async {
        let (_, _, seen) = tally(&got);
        acknowledged.iter().all(|u| seen.contains(u)).then_some(())
    })
    .await;
    let (ids, requests, _) = tally(&got);
    let repeated = requests - ids.len();
    println!("{} events delivered in {requests} requests: {repeated} repeated", ids.len());
    // What must be repeated: the request in flight, and what was acknowledged within the moment
    // before NATS died (JetStream writes a consumer's acknowledgements down at most every 100 ms).
    let mut first: std::collections::HashMap<String, u128> = Default::default();
    for (headers, _) in got.lock().unwrap().iter() {
        let at: u128 = header(headers, RECEIVED_AT).parse().unwrap();
        let earliest = *first.entry(header(headers, "webhook-id")).or_insert(at);
        let before_kill = killed.saturating_sub(earliest);
        assert!(
            earliest == at || before_kill <= 500_000,
            "repeated, though first delivered {before_kill} µs before the kill"
        );
    }
}

fn received_at_now() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
}

#[tokio::test]
async fn a_disabled_endpoint_stays_disabled_across_a_restart_and_keeps_its_events_until_its_url_changes() {
    let (gone_url, gone) = receiver(410).await;
    let (ok_url, ok) = receiver(200).await;
    let healthy = WebhookConfig { name: "healthy".into(), ..endpoint(&ok_url, &secret(13)) };
    let hooks = vec![endpoint(&gone_url, &secret(13)), healthy];
    let app = TestApp::spawn_with(|c| c.webhooks = hooks).await;
    app.set("cy", json!({"status": "busy"})).await;
    let disabled = || async {
        let health = app.health().await;
        let backend = health["webhooks"]["backend"].clone();
        (backend["state"] == "disabled").then_some(backend)
    };
    let backend = eventually(10 * SECOND, "disabled", disabled).await;
    assert!(backend["disabled_reason"].as_str().unwrap().contains("410"), "{backend}");
    app.set("dee", json!({"status": "away"})).await;
    let mut kept = app.stop_keeping().await;

    // Restarted, with a batch size that changes its consumers: still disabled, at once, and
    // nothing goes to it.

    let batch = presence::config::BatchConfig { max_events: 100, max_wait: SECOND };
    kept.config.webhooks[0].batch = Some(batch);
    let app = TestApp::restart(kept).await;
    let health = app.health().await;
    assert_eq!(health["webhooks"]["backend"]["state"], "disabled", "{health}");
    app.set("fay", json!({"status": "busy"})).await;
    eventually(10 * SECOND, "the healthy endpoint has all three", || async {
        (tally(&ok).2.len() == 3).then_some(())
    })
    .await;
    assert_eq!(gone.lock().unwrap().len(), 1, "nothing more to a disabled endpoint");
    let mut kept = app.stop_keeping().await;

    // Its url changes: enabled again, and what waited while it was disabled arrives.
    let (moved_url, moved) = receiver(200).await;
    (kept.config.webhooks[0].url, kept.config.webhooks[0].batch) = (moved_url, None);
    let app = TestApp::restart(kept).await;
    eventually(10 * SECOND, "the events kept while disabled", || async {
        (tally(&moved).2 == HashSet::from(["dee".to_string(), "fay".to_string()])).then_some(())
    })
    .await;
    assert_eq!(app.health().await["webhooks"]["backend"]["state"], "delivering");
    app.stop().await;
}

#[tokio::test]
async fn a_stopping_node_hands_back_what_it_holds_and_the_next_start_sends_it_at_once() {
    // The first request is answered after 20 s: the node stops while it is in flight, with the
    // next events waiting behind it. Not handed back, they would wait for their acknowledgement to
    // be overdue (30 s) after the restart.
    let script: Script =
        Arc::new(|n| Reply { hold: if n == 0 { 20 * SECOND } else { Duration::ZERO }, ..Reply::status(204) });
    let (url, got) = answering("http", None, script).await;
    let app = TestApp::spawn_with(|c| c.webhooks = vec![endpoint(&url, &secret(14))]).await;
    app.set("ann", json!({"status": "busy"})).await;
    eventually(10 * SECOND, "the first request in flight", || async { (tally(&got).1 == 1).then_some(()) })
        .await;
    app.set("ben", json!({"status": "away"})).await;
    app.set("cat", json!({"status": "busy"})).await;
    let kept = app.stop_keeping().await;

    let app = TestApp::restart(kept).await;
    let restarted = std::time::Instant::now();
    let all = HashSet::from(["ann", "ben", "cat"].map(String::from));
    eventually(10 * SECOND, "every event, soon after the restart", || async {
        (tally(&got).2 == all).then_some(())
    })
    .await;
    assert!(restarted.elapsed() < 10 * SECOND);
    // The request that was cut short went out again, as the same message.
    let got_now = got.lock().unwrap().clone();
    let ann: Vec<String> =
        got_now.iter().filter(|(_, b)| b.contains("\"ann\"")).map(|(h, _)| header(h, "webhook-id")).collect();
    assert!(ann.len() == 2 && ann[0] == ann[1], "ann's event twice, with one id: {ann:?}");
    app.stop().await;
}
