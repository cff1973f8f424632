//! A center's cache snapshot: written when the node stops and while it runs, landed by its next
//! start (after a crash too) after the changes made since it was taken, and never bringing back
//! what those changes replaced or erased; a snapshot that does not fit the bucket is not used.

use super::*;

use crate::helpers::{SECRET, ServiceProcess, is_alive, kill9, mint, nats_connect};

const SNAPSHOT: &str = "cache-snapshot.jsonl";

/// How many presences the node's start took from its snapshot, once it is done with it.
async fn restored(app: &TestApp) -> u64 {
    eventually(Duration::from_secs(10), "the start-up is done with its snapshot", || async {
        let cache = cache_stats(app).await;
        (cache["restoring"] == false).then(|| cache["restored"].as_u64().expect("/health/cache says it"))
    })
    .await
}

/// What a read of `user` answers: its status and, for a 200, the presence.
async fn read_of(app: &TestApp, user: &str) -> (StatusCode, Value) {
    let (status, body) = json_of(app.read(user).await).await;
    (status, body["data"][user].clone())
}

#[tokio::test]
async fn a_restarted_center_lands_its_snapshot_after_the_changes_made_since() {
    let app = TestApp::spawn().await;
    for (user, status) in [("ann", "busy"), ("bob", "away"), ("dora", "online")] {
        app.set(user, json!({"status": status, "message": format!("{user} before")})).await;
    }
    let kept = app.stop_keeping().await;
    let path = kept.config.nats.data_dir.join(SNAPSHOT);
    let older = std::fs::read(&path).expect("a stopped center leaves its snapshot");
    let app = TestApp::restart(kept).await;
    assert_eq!(restored(&app).await, 3);
    assert!(!path.exists(), "read and removed at start; the next comes after cache.snapshot_interval (5m)");
    assert_eq!(read_of(&app, "ann").await.1["message"], "ann before");

    // Changes after that snapshot: bob writes again, carl is new, dora is erased.
    app.set("bob", json!({"status": "busy", "message": "bob after"})).await;
    app.set("carl", json!({"status": "online"})).await;
    assert_eq!(app.erase("dora").await.status(), StatusCode::OK);
    let users = ["ann", "bob", "carl", "dora"];
    let mut before = Vec::new();
    for user in users {
        before.push(read_of(&app, user).await);
    }
    // Started again from the older snapshot (as a node that crashed after landing it would find
    // it): it still holds bob's old presence and dora's, which the bucket no longer has.
    let kept = app.stop_keeping().await;
    std::fs::write(&path, &older).unwrap();
    let app = TestApp::restart(kept).await;
    assert_eq!(restored(&app).await, 1, "only ann's record: bob's and dora's were replaced since");
    for (user, before) in users.into_iter().zip(before) {
        assert_eq!(read_of(&app, user).await, before, "{user} reads as before the restart");
    }
    let (status, _) = read_of(&app, "dora").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an erased user stays erased");
    let cached = cache_stats(&app).await;
    assert!(cached["hits"].as_u64().unwrap() >= 2, "ann and bob read from the cache: {cached}");
    app.stop().await;
}

#[tokio::test]
async fn a_damaged_snapshot_one_of_another_bucket_or_an_old_one_is_not_used() {
    let app = TestApp::spawn().await;
    app.set("eve", json!({"status": "busy", "message": "eve's"})).await;
    let kept = app.stop_keeping().await;
    let path = kept.config.nats.data_dir.join(SNAPSHOT);
    let good = std::fs::read_to_string(&path).unwrap();
    let (header, records) = good.split_once('\n').unwrap();
    let header: Value = serde_json::from_str(header).unwrap();
    let mut other = header.clone();
    other["created"] = json!(header["created"].as_i64().unwrap() - 1);
    let damaged = format!("{header}\n{}", &records[..records.len() / 2]);
    let elsewhere = format!("{other}\n{records}");
    let mut stale = header.clone();
    let written_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(header["written_at"].clone()).unwrap();
    stale["written_at"] = json!(written_at - chrono::Duration::minutes(61));
    let old = format!("{stale}\n{records}");
    let mut kept = kept;
    for (what, text) in
        [("a damaged snapshot", damaged), ("another bucket's", elsewhere), ("one over an hour old", old)]
    {
        std::fs::write(&path, text).unwrap();
        let app = TestApp::restart(kept).await;
        assert_eq!(restored(&app).await, 0, "{what} is not used");
        assert!(!path.exists(), "{what} is removed");
        let (status, eve) = read_of(&app, "eve").await;
        assert_eq!((status, eve["message"].clone()), (StatusCode::OK, json!("eve's")), "{what}");
        kept = app.stop_keeping().await;
    }
}

#[tokio::test]
async fn a_snapshot_holding_a_record_the_bucket_lost_is_not_used() {
    let app = TestApp::spawn().await;
    app.set("fay", json!({"status": "busy"})).await;
    app.set("gus", json!({"status": "away"})).await;
    let kept = app.stop_keeping().await;
    let path = kept.config.nats.data_dir.join(SNAPSHOT);
    let older = std::fs::read(&path).unwrap();
    let app = TestApp::restart(kept).await;
    assert_eq!(restored(&app).await, 2);
    // The oldest record leaves the stream itself (an operator's purge of its subject): no marker,
    // no change a watcher could see. A write follows, so that the bucket moved on.
    let js = async_nats::jetstream::new(nats_connect(&app.nats_url()).await);
    let stream = js.get_stream("KV_presence").await.unwrap();
    stream.purge().filter("$KV.presence.user.fay").await.unwrap();
    app.set("hal", json!({"status": "online"})).await;
    let kept = app.stop_keeping().await;
    std::fs::write(&path, &older).unwrap();
    let app = TestApp::restart(kept).await;
    assert_eq!(
        restored(&app).await,
        0,
        "fay's record is older than the bucket's first and nothing replaced it"
    );
    assert_eq!(read_of(&app, "fay").await.0, StatusCode::NOT_FOUND, "the bucket no longer has fay");
    assert_eq!(read_of(&app, "gus").await.1["status"], "away");
    assert_eq!(read_of(&app, "hal").await.1["status"], "online");
    app.stop().await;
}

/// The records and revision of the snapshot at `path`, if one is there and reads whole.
fn snapshot_at(path: &std::path::Path) -> Option<(u64, Vec<String>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next()?).ok()?;
    let users: Vec<String> = lines
        .map(|l| {
            serde_json::from_str::<(u64, Value)>(l).map(|(_, p)| p["user_id"].as_str().unwrap().to_string())
        })
        .collect::<Result<_, _>>()
        .ok()?;
    (header["records"].as_u64()? == users.len() as u64).then(|| (header["revision"].as_u64().unwrap(), users))
}

#[tokio::test]
async fn a_center_killed_with_its_nats_server_starts_from_the_snapshot_it_wrote_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let every_second = ("level: debug\n  format: json", "cache:\n  snapshot_interval: 1s\n");
    let mut node = ServiceProcess::start_with(dir.path(), None, Some(SECRET), every_second);
    node.wait_healthy().await;
    let http = reqwest::Client::new();
    let url = |node: &ServiceProcess, user: &str| node.url(&format!("/api/v2/presence/{user}"));
    let put = |node: &ServiceProcess, user: &str, body: Value| {
        http.put(url(node, user)).bearer_auth(mint(user)).json(&body).send()
    };
    for (user, status) in [("ivy", "busy"), ("jon", "away"), ("kim", "online")] {
        let body = json!({"status": status, "message": format!("{user} before")});
        assert_eq!(put(&node, user, body).await.unwrap().status(), StatusCode::OK);
    }
    let path = dir.path().join("nats-data").join(SNAPSHOT);
    let (first, users) = eventually(Duration::from_secs(10), "a snapshot of the three", || async {
        snapshot_at(&path).filter(|(_, users)| users.len() == 3)
    })
    .await;
    assert!(["ivy", "jon", "kim"].iter().all(|u| users.contains(&u.to_string())), "{users:?}");
    let older = std::fs::read(&path).unwrap();

    // Changes after it: jon writes again, kim is erased, lea is new. The running node's next
    // snapshot has them, and no longer kim.
    let body = json!({"status": "busy", "message": "jon after"});
    assert_eq!(put(&node, "jon", body).await.unwrap().status(), StatusCode::OK);
    let erased = http.delete(url(&node, "kim")).bearer_auth(mint("kim")).send().await.unwrap();
    assert_eq!(erased.status(), StatusCode::OK);
    assert_eq!(put(&node, "lea", json!({"status": "online"})).await.unwrap().status(), StatusCode::OK);
    let (_, users) = eventually(Duration::from_secs(10), "a newer snapshot while running", || async {
        snapshot_at(&path).filter(|(revision, _)| *revision > first)
    })
    .await;
    assert!(!users.contains(&"kim".to_string()), "an erased user leaves the next snapshot: {users:?}");
    let mut before = Vec::new();
    for user in ["ivy", "jon", "kim", "lea"] {
        let response = http.get(url(&node, user)).send().await.unwrap();
        before.push(json_of(response).await);
    }

    // The worst case: the node and its nats-server killed, no stop to write a snapshot, and the
    // one on disk from before those changes (as a crash right after them would leave it).
    let nats = node.nats_pid().expect("the embedded server wrote its pid");
    node.kill9();
    kill9(nats);
    eventually(Duration::from_secs(10), "nats-server is gone", || async { (!is_alive(nats)).then_some(()) })
        .await;
    std::fs::write(&path, &older).unwrap();
    let mut node = ServiceProcess::start_with(dir.path(), Some(node.ports()), Some(SECRET), every_second);
    node.wait_healthy().await;
    let cache = eventually(Duration::from_secs(10), "the start is done with its snapshot", || async {
        let (_, cache) = json_of(http.get(node.url("/health/cache")).send().await.unwrap()).await;
        (cache["restoring"] == false).then_some(cache)
    })
    .await;
    assert_eq!(cache["restored"], 1, "ivy's record alone: jon's and kim's changed since: {cache}");
    for (user, before) in ["ivy", "jon", "kim", "lea"].into_iter().zip(before) {
        let response = http.get(url(&node, user)).send().await.unwrap();
        assert_eq!(json_of(response).await, before, "{user} reads as before the crash");
    }
}
