//! Reads through the cache: hits after writes, one KV read for concurrent misses, the watcher's changes, expiry purges, NATS restarts and outages.

use super::*;

#[tokio::test]
async fn reads_after_a_write_are_cache_hits() {
    let app = TestApp::spawn().await;
    app.set("olga", json!({"status": "online"})).await;
    let before = cache_stats(&app).await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/v2/presence/olga").await.status(), StatusCode::OK);
    }
    app.get("/api/v2/presence/nobody").await;
    let after = cache_stats(&app).await;
    assert_eq!(after["hits"].as_u64().unwrap() - before["hits"].as_u64().unwrap(), 3);
    assert_eq!(after["misses"].as_u64().unwrap() - before["misses"].as_u64().unwrap(), 1);
    for field in [
        "keys_added",
        "keys_evicted",
        "cost_added",
        "cost_evicted",
        "hit_ratio",
        "entries",
        "weighted_size",
        "max_cost",
        "stale",
    ] {
        assert!(after.get(field).is_some(), "/health/cache has {field}: {after}");
    }
    assert!(after["entries"].as_u64().unwrap() >= 1);
    let (hits, misses) = (after["hits"].as_f64().unwrap(), after["misses"].as_f64().unwrap());
    let ratio = after["hit_ratio"].as_f64().unwrap();
    assert!(
        (ratio - hits / (hits + misses)).abs() < 1e-9,
        "hit_ratio {ratio} for {hits} hits, {misses} misses"
    );
    assert!(
        (metric(&app, "presence_cache_hit_ratio").await - ratio).abs() < 1e-9,
        "the metric says the same"
    );
    assert_eq!(metric(&app, "presence_cache_hits_total").await, hits, "one set of counters");
    assert_eq!(metric(&app, "presence_cache_misses_total").await, misses, "one set of counters");
    app.stop().await;
}

#[tokio::test]
async fn concurrent_misses_for_one_user_cost_one_kv_read() {
    let app = TestApp::spawn().await;
    let series = "presence_nats_request_duration_seconds_count{op=\"get\"}";
    let before = metric(&app, series).await;
    let reads = (0..50).map(|_| app.get("/api/v2/presence/single-flight"));
    let statuses: Vec<StatusCode> =
        futures::future::join_all(reads).await.iter().map(|r| r.status()).collect();
    assert!(statuses.iter().all(|s| *s == StatusCode::NOT_FOUND), "{statuses:?}");
    assert_eq!(metric(&app, series).await - before, 1.0, "one KV get for 50 concurrent readers");
    app.stop().await;
}

#[tokio::test]
async fn a_write_made_directly_to_the_bucket_shows_in_the_next_reads() {
    let app = TestApp::spawn().await;
    app.set("pia", json!({"status": "online", "message": "via the API"})).await;
    app.get("/api/v2/presence/pia").await; // cached now
    let kv = bucket(&nats_url(&app)).await;
    kv.put("user.pia", stored_value("pia", "busy", "via the bucket", 600)).await.unwrap();
    eventually(Duration::from_secs(5), "the watcher applies the direct write", || async {
        let (_, body) = json_of(app.get("/api/v2/presence/pia").await).await;
        (body["data"]["pia"]["message"] == "via the bucket").then_some(())
    })
    .await;
    kv.delete("user.pia").await.unwrap();
    eventually(Duration::from_secs(5), "the watcher applies the delete", || async {
        (app.get("/api/v2/presence/pia").await.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_expiry_purge_removes_the_cached_entry() {
    let app = TestApp::spawn().await;
    let kv = bucket(&nats_url(&app)).await;
    kv.create_with_ttl("user.quinn", stored_value("quinn", "online", "", 600), Duration::from_secs(1))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the entry is readable", || async {
        (app.get("/api/v2/presence/quinn").await.status() == StatusCode::OK).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the expiry marker evicts it", || async {
        (app.get("/api/v2/presence/quinn").await.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_watcher_resumes_after_a_nats_restart_while_idle() {
    let mut nats = NatsServer::start().await;
    let app = external_app(&nats, "test-node").await;
    app.set("rita", json!({"status": "online", "message": "before"})).await;
    nats.kill();
    nats.restart().await;
    let kv = bucket(&nats.url()).await;
    app.wait_health("ok", Duration::from_secs(15)).await;
    kv.put("user.rita", stored_value("rita", "away", "after", 600)).await.unwrap();
    eventually(Duration::from_secs(10), "the resumed watcher delivers the update", || async {
        let (_, body) = json_of(app.get("/api/v2/presence/rita").await).await;
        (body["data"]["rita"]["message"] == "after").then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn without_nats_reads_degrade_writes_fail_fast_and_all_recovers() {
    let mut nats = NatsServer::start().await;
    let app = external_app(&nats, "test-node").await;
    app.set("sam", json!({"status": "busy", "message": "cached"})).await;
    nats.kill();
    app.wait_health("degraded", Duration::from_secs(5)).await;

    let cached = app.get("/api/v2/presence/sam").await;
    assert_eq!(cached.headers().get("x-presence-stale").map(|v| v.to_str().unwrap()), Some("true"));
    let (status, body) = json_of(cached).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["sam"]["message"], "cached");

    let started = Instant::now();
    let miss = app.get("/api/v2/presence/unseen").await;
    assert_eq!(miss.headers().get("x-presence-degraded").map(|v| v.to_str().unwrap()), Some("true"));
    let (status, body) = json_of(miss).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["unseen"], json!({"user_id": "unseen", "status": "offline"}));
    // A multi-user read with a miss it could not look up says so, as a single read does.
    let many = app.get("/api/v2/presence?users=sam,unseen").await;
    assert_eq!(many.headers().get("x-presence-degraded").map(|v| v.to_str().unwrap()), Some("true"));
    let (status, body) = json_of(many).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["sam"]["status"], "busy");
    assert_eq!(body["data"]["unseen"]["status"], "offline");
    let batch = app.batch(json!(["sam", "unseen"])).await;
    assert_eq!(batch.headers().get("x-presence-degraded").map(|v| v.to_str().unwrap()), Some("true"));
    let only_cached = app.get("/api/v2/presence?users=sam").await;
    assert!(only_cached.headers().get("x-presence-degraded").is_none(), "every answer came from the cache");

    let write = app.put("sam", json!({"status": "online"})).await;
    assert_error(write, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "degraded answers come at once: {:?}",
        started.elapsed()
    );
    assert_eq!(app.get("/health/nats").await.status(), StatusCode::SERVICE_UNAVAILABLE);

    nats.restart().await;
    eventually(Duration::from_secs(20), "writes succeed again", || async {
        (app.put("sam", json!({"status": "online"})).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "reads are fresh again", || async {
        let r = app.get("/api/v2/presence/sam").await;
        r.headers().get("x-presence-stale").is_none().then_some(())
    })
    .await;
    let (status, body) = json_of(app.get("/api/v2/presence/sam").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["sam"]["status"], "online");
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_writes_is_applied_without_rebuilding_the_cache() {
    let app = TestApp::spawn().await;
    let kv = bucket(&nats_url(&app)).await;
    // 10,000 writes spread over a couple of seconds, so that the checker looks at the bucket
    // (every 250 ms) while the watcher is busy applying them.
    for batch in 0..40 {
        futures::stream::iter(batch * 250..(batch + 1) * 250)
            .map(|i| {
                let kv = kv.clone();
                async move {
                    kv.put(format!("user.burst{i}"), stored_value(&format!("burst{i}"), "online", "", 600))
                        .await
                        .unwrap()
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    eventually(Duration::from_secs(20), "the watcher applied the whole burst", || async {
        let (_, nats) = app.nats_health().await;
        let entries = app.cache_health().await["entries"].as_u64();
        (nats["watcher"]["lag"] == 0 && entries == Some(10_000)).then_some(())
    })
    .await;
    let (_, nats) = app.nats_health().await;
    assert_eq!(nats["watcher"]["rebuilds"], 0, "a busy bucket is not a replaced one");
    let cache = app.cache_health().await;
    assert_eq!(cache["entries"], 10_000);
    assert_eq!(cache["keys_added"], 10_000);
    app.stop().await;
}
