//! Rate limits, health endpoints and metrics, as a client and a scraper see them.

use super::*;

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
    for stream in ["bucket", "audit_log"] {
        // One embedded server: it leads both streams, named `{node_id}-{8 hex digits}`.
        let placement = &nats["streams"][stream];
        assert!(placement["leader"].as_str().unwrap().starts_with("test-node-"), "{placement}");
        assert_eq!(placement["replicas"], json!([]), "{placement}");
    }
    assert!(nats["server_version"].as_str().unwrap().starts_with("2."));
    let rtt = nats["rtt_ms"].as_f64().unwrap();
    assert!(rtt > 0.0 && rtt < 1000.0, "one round trip on loopback, within the probe's deadline: {rtt}");
    assert_eq!(nats["breaker_open"], false);
    eventually(Duration::from_secs(5), "the watcher applied the write", || async {
        let (_, nats) = app.nats_health().await;
        (nats["watcher"]["connected"] == true && nats["watcher"]["lag"] == 0).then_some(())
    })
    .await;
    app.stop().await;
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

/// An IPv6 client is limited per /64 (a host there can take any of 2^64 addresses): its reads
/// and its streams share one budget across the block; the next /64 is another client.
#[tokio::test]
async fn an_ipv6_client_is_limited_per_64() {
    let behind_proxy = |reads: u32, streams: usize| {
        TestApp::spawn_with(move |c| {
            (c.rate_limit.reads_per_second, c.rate_limit.read_burst) = (reads, reads);
            c.rate_limit.trusted_proxies = vec![presence::config::units::parse_network("127.0.0.1").unwrap()];
            c.stream.max_connections_per_ip = streams;
        })
    };
    let from = |app: &TestApp, path: &str, client: &'static str| {
        app.http.get(app.url(path)).header("x-forwarded-for", client).send()
    };
    let app = behind_proxy(1, 100).await;
    let read = "/api/v2/presence/a";
    assert_eq!(from(&app, read, "2001:db8:1:2::1").await.unwrap().status(), StatusCode::NOT_FOUND);
    let rotated = from(&app, read, "2001:db8:1:2:ffff:eeee:dddd:9").await.unwrap();
    assert_eq!(rotated.status(), StatusCode::TOO_MANY_REQUESTS, "another address in the same /64");
    let next = from(&app, read, "2001:db8:1:3::1").await.unwrap();
    assert_eq!(next.status(), StatusCode::NOT_FOUND, "another /64");
    app.stop().await;

    let app = behind_proxy(1000, 1).await;
    let stream = "/api/v2/presence/stream?users=a";
    let open = from(&app, stream, "2001:db8:9:9::1").await.unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    let second = from(&app, stream, "2001:db8:9:9::2").await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS, "one stream per /64");
    let refusal = second.json::<serde_json::Value>().await.unwrap();
    assert!(refusal["error"].as_str().unwrap().contains("streams"), "the stream cap: {refusal}");
    let elsewhere = from(&app, stream, "2001:db8:9:8::1").await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::OK, "another /64");
    drop((open, elsewhere));
    app.stop().await;
}
