//! The read path: cache hits and misses, single flight, coherence through the KV watcher,
//! degradation while NATS is away, rate limits, health and metrics.

use std::time::{Duration, Instant};

use futures::StreamExt;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    NatsServer, TestApp, assert_error, bucket, eventually, external_app, json_of, stored_value,
};

async fn cache_stats(app: &TestApp) -> Value {
    app.cache_health().await
}

async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .unwrap_or(0.0)
}

fn nats_url(app: &TestApp) -> String {
    app.nats_url()
}

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
async fn rate_limits_answer_429_with_retry_after() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit.writes_per_second = 1;
        c.rate_limit.write_burst = 2;
        c.rate_limit.reads_per_second = 1;
        c.rate_limit.read_burst = 3;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(app.put("tom", json!({"status": "online"})).await.status(), StatusCode::OK);
    }
    let limited = app.put("tom", json!({"status": "online"})).await;
    let retry: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_error(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(app.put("uma", json!({"status": "online"})).await.status(), StatusCode::OK, "per user");

    for _ in 0..3 {
        assert_eq!(app.get("/api/v2/presence/tom").await.status(), StatusCode::OK);
    }
    let limited = app.get("/api/v2/presence?users=tom").await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_error(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(app.get("/health").await.status(), StatusCode::OK, "operations endpoints are not limited");
    app.stop().await;
}

#[tokio::test]
async fn health_endpoints_report_their_fields() {
    let app = TestApp::spawn().await;
    app.set("vic", json!({"status": "online"})).await;
    let (status, health) = json_of(app.get("/health").await).await;
    assert_eq!(status, StatusCode::OK);
    for field in ["status", "node_id", "node_type", "version", "uptime_seconds"] {
        assert!(health.get(field).is_some(), "/health has {field}");
    }
    let (status, nats) = app.nats_health().await;
    assert_eq!(status, StatusCode::OK, "{nats}");
    assert_eq!(nats["connected"], true);
    assert_eq!(nats["jetstream"], true);
    assert_eq!(nats["bucket"], true);
    assert!(nats["server_version"].as_str().unwrap().starts_with("2."));
    let rtt = nats["rtt_ms"].as_f64().unwrap();
    assert!(rtt > 0.0 && rtt < 1000.0, "one round trip on loopback, within the probe's deadline: {rtt}");
    assert_eq!(nats["breaker_open"], false);
    eventually(Duration::from_secs(5), "the watcher applied the write", || async {
        let (_, nats) = app.nats_health().await;
        (nats["watcher"]["connected"] == true
            && nats["watcher"]["applied_revision"].as_u64() >= Some(1)
            && nats["watcher"]["lag"] == 0)
            .then_some(())
    })
    .await;
    app.stop().await;
}

/// Checks each sample line of the Prometheus text format: a metric name, optional well-formed
/// labels, and a number.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let name_ok =
        |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels =
                        labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) =
                            pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair}: {line}"));
                        assert!(name_ok(k) && !v.contains('\n'), "bad label: {line}");
                    }
                    name
                }
                None => series,
            };
            assert!(name_ok(name), "bad name: {line}");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_documented_series() {
    let app = TestApp::spawn().await;
    app.set("walt", json!({"status": "online"})).await;
    app.get("/api/v2/presence/walt").await;
    let response = app.get("/metrics").await;
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let samples = parse_prometheus(&response.text().await.unwrap());
    let has = |prefix: &str| samples.iter().any(|(s, _)| s.starts_with(prefix));
    for series in [
        "presence_http_requests_total{method=\"GET\",route=\"/api/v2/presence/{user_id}\",status=\"200\"}",
        "presence_http_request_duration_seconds_bucket",
        "presence_updates_total",
        "presence_cache_hits_total",
        "presence_cache_misses_total",
        "presence_cache_evictions_total",
        "presence_cache_hit_ratio",
        "presence_cache_entries",
        "presence_nats_request_duration_seconds_count{op=\"create\"}",
        "presence_http_open_connections",
        "presence_process_resident_memory_bytes",
        "presence_watcher_lag_revisions",
    ] {
        assert!(has(series), "missing {series}");
    }
    let value = |prefix: &str| samples.iter().find(|(s, _)| s.starts_with(prefix)).unwrap().1;
    assert_eq!(value("presence_updates_total"), 1.0);
    assert!(value("presence_process_resident_memory_bytes") > 1e6);
    assert!(value("presence_http_open_connections") >= 1.0);
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
        (nats["watcher"]["lag"] == 0 && nats["watcher"]["applied_revision"].as_u64() >= Some(5000))
            .then_some(())
    })
    .await;
    let (_, nats) = app.nats_health().await;
    assert_eq!(nats["watcher"]["rebuilds"], 0, "a busy bucket is not a replaced one");
    let cache = app.cache_health().await;
    assert_eq!(cache["entries"], 10_000);
    assert_eq!(cache["keys_added"], 10_000);
    app.stop().await;
}

/// Behind a trusted proxy, reads are limited per client as the proxy reports it (the rightmost
/// `X-Forwarded-For` entry the proxy appended), whatever the client wrote to its left; from any
/// other peer the header is ignored.
#[tokio::test]
async fn the_read_limit_keys_on_the_client_a_trusted_proxy_reports() {
    let limited = |trusted: Vec<&'static str>| {
        TestApp::spawn_with(move |c| {
            c.rate_limit.reads_per_second = 1;
            c.rate_limit.read_burst = 1;
            c.rate_limit.trusted_proxies =
                trusted.iter().map(|t| presence::config::units::parse_network(t).unwrap()).collect();
        })
    };
    let read = |app: &TestApp, forwarded: &'static str| {
        app.http.get(app.url("/api/v2/presence/a")).header("x-forwarded-for", forwarded).send()
    };
    let behind = limited(vec!["127.0.0.1"]).await;
    assert_eq!(read(&behind, "203.0.113.1").await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(read(&behind, "203.0.113.2").await.unwrap().status(), StatusCode::NOT_FOUND, "another client");
    let spoofed = read(&behind, "198.51.100.7, 203.0.113.1").await.unwrap();
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS, "the client's own entry is not believed");
    behind.stop().await;

    let exposed = limited(vec![]).await;
    assert_eq!(read(&exposed, "203.0.113.1").await.unwrap().status(), StatusCode::NOT_FOUND);
    let spoofed = read(&exposed, "203.0.113.2").await.unwrap();
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS, "no trusted proxy: the header is ignored");
    exposed.stop().await;
}

/// A multi-user read that costs more than the read burst (one read plus one per miss) is not
/// refused for ever: it is charged at most the burst, and goes through once the client has it.
#[tokio::test]
async fn a_read_costlier_than_the_burst_goes_through_when_the_bucket_is_full() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit.reads_per_second = 2;
        c.rate_limit.read_burst = 5;
    })
    .await;
    let many: Vec<&str> = vec!["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"];
    assert_eq!(app.read_many(&many).await.status(), StatusCode::OK, "ten misses, a burst of five");
    let limited = app.read_many(&many).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS, "the bucket is empty");
    // A client that waits as long as Retry-After says gets through (each try costs a read, so a
    // client that does not wait would keep its bucket empty).
    let mut wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    for attempt in 0..3 {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let again = app.read_many(&["n0", "n1", "n2", "n3", "n4", "n5"]).await;
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(attempt < 2, "still refused after waiting as told: {}", again.status());
        wait = again.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    }
    app.stop().await;
}
