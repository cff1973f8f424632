//! Helpers for `bench/run`: the ceilings it compares Presence against, a fixed-rate load
//! generator, and bulk loading of the bucket. Not part of the service.
//!
//! - `http-ceiling --port P --body FILE`: a minimal axum server answering every GET with the
//!   bytes of FILE as JSON: the HTTP ceiling.
//! - `kv --url U --op put|get|put-event --concurrency C --seconds S`: raw async-nats KV puts or
//!   gets of 200-byte values with C in flight: the storage ceiling. `put-event` also publishes a
//!   500-byte event into a stream per put, as a presence write does for its audit log.
//! - `fixed-rate --url U --rate R --seconds S [--body FILE]`: open-loop requests at R per second
//!   (GETs, or POSTs of FILE as JSON), spread evenly over each millisecond; latency is measured
//!   from each request's dispatch, and the run fails if the generator could not keep the rate.
//! - `preload --url U --count N --prefix P [--expire-at-ms T]`: puts N presences straight into
//!   the bucket, live for 7 days or until the Unix time T (milliseconds), all at once.
//! - `tokens --config FILE --count N --prefix P`: prints N `user token` lines for PUT load.
//! - `propagation --write URL --read URL --user U --token T --count N`: N times, writes a new
//!   message for U at one node and polls the other until it serves it; the latency runs from
//!   the write's acknowledgement to the first read that shows it.
//!
//! Results are printed as one JSON object on stdout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream;
use hdrhistogram::Histogram;
use serde_json::json;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("http-ceiling") => http_ceiling(&args).await,
        Some("kv") => kv(&args).await,
        Some("fixed-rate") => fixed_rate(&args).await,
        Some("preload") => preload(&args).await,
        Some("tokens") => tokens(&args),
        Some("propagation") => propagation(&args).await,
        _ => eprintln!("usage: bench_tool http-ceiling|kv|fixed-rate|preload|tokens ..."),
    }
}

async fn http_ceiling(args: &[String]) {
    let port = num(args, "--port", 0) as u16;
    let body: &'static [u8] = std::fs::read(arg(args, "--body").expect("--body FILE")).unwrap().leak();
    let app = axum::Router::new()
        .fallback(move || async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}

fn value_of_200_bytes(i: u64) -> bytes::Bytes {
    let now = chrono::Utc::now();
    let v = json!({"user_id": format!("k{i}"), "status": "online", "message": "benchmark value",
        "last_seen": now, "updated_at": now, "node_id": "bench", "ttl": 3600,
        "expires_at": now + chrono::Duration::hours(1)});
    serde_json::to_vec(&v).unwrap().into()
}

async fn kv(args: &[String]) {
    let url = arg(args, "--url").expect("--url");
    let op = arg(args, "--op").unwrap_or_else(|| "put".into());
    let concurrency = num(args, "--concurrency", 64);
    let seconds = num(args, "--seconds", 10);
    let client = connect(&url).await;
    let js = jetstream::new(client);
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "ceiling".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    if op == "put-event" {
        let config = jetstream::stream::Config {
            name: "CEILING_EVENTS".into(),
            subjects: vec!["ceiling.events.>".into()],
            ..Default::default()
        };
        js.get_or_create_stream(config).await.unwrap();
    }
    let keys = 10_000u64;
    if op == "get" {
        for i in 0..keys {
            kv.put(format!("k{i}"), value_of_200_bytes(i)).await.unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (kv, op, stop, done, js) = (kv.clone(), op.clone(), stop.clone(), done.clone(), js.clone());
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3).unwrap();
                let mut i = w;
                while !stop.load(Relaxed) {
                    let t = Instant::now();
                    let key = format!("k{}", i % keys);
                    if op == "put" {
                        kv.put(key, value_of_200_bytes(i)).await.unwrap();
                    } else if op == "put-event" {
                        kv.put(key.clone(), value_of_200_bytes(i)).await.unwrap();
                        let event = bytes::Bytes::from(vec![b'x'; 500]);
                        // Acknowledged before the next write, as the service does before its 200.
                        js.publish(format!("ceiling.events.{key}"), event).await.unwrap().await.unwrap();
                    } else {
                        kv.get(key).await.unwrap();
                    }
                    hist.record(t.elapsed().as_micros() as u64).unwrap();
                    done.fetch_add(1, Relaxed);
                    i += concurrency;
                }
                hist
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Relaxed);
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for w in workers {
        hist.add(w.await.unwrap()).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    js.delete_key_value("ceiling").await.unwrap();
    if op == "put-event" {
        js.delete_stream("CEILING_EVENTS").await.unwrap();
    }
    print_result(&op, done.load(Relaxed) as f64 / elapsed, &hist);
}

fn print_result(what: &str, rps: f64, hist: &Histogram<u64>) {
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({"what": what, "rps": rps.round(), "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": hist.max() as f64 / 1000.0, "count": hist.len()})
    );
}

async fn fixed_rate(args: &[String]) {
    let url = arg(args, "--url").expect("--url");
    let rate = num(args, "--rate", 10_000);
    let seconds = num(args, "--seconds", 10);
    let body: Option<bytes::Bytes> = arg(args, "--body").map(|f| std::fs::read(f).unwrap().into());
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let errors = Arc::new(AtomicU64::new(0));
    let per_tick = (rate / 1000).max(1);
    let tick = Duration::from_millis(1).max(Duration::from_secs_f64(per_tick as f64 / rate as f64));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let ticks = (seconds as f64 / tick.as_secs_f64()) as u64;
    for _ in 0..ticks {
        ticker.tick().await;
        for _ in 0..per_tick {
            let (client, url, hist, errors, body) =
                (client.clone(), url.clone(), hist.clone(), errors.clone(), body.clone());
            tasks.spawn(async move {
                let sent = Instant::now();
                let request = match body {
                    Some(b) => client.post(&url).header("content-type", "application/json").body(b),
                    None => client.get(&url),
                };
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        hist.lock().unwrap().record((sent.elapsed().as_micros() as u64).max(1)).unwrap();
                    }
                    _ => {
                        errors.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let hist = hist.lock().unwrap();
    assert_eq!(errors.load(Relaxed), 0, "requests failed");
    let achieved = hist.len() as f64 / elapsed;
    assert!(achieved > rate as f64 * 0.95, "the generator reached only {achieved:.0} of {rate} requests/s");
    print_result("fixed-rate", achieved, &hist);
}

async fn preload(args: &[String]) {
    let url = arg(args, "--url").expect("--url");
    let count = num(args, "--count", 1_000_000);
    let prefix = arg(args, "--prefix").unwrap_or_else(|| "u".into());
    let expires_at = arg(args, "--expire-at-ms")
        .map(|ms| chrono::DateTime::from_timestamp_millis(ms.parse().unwrap()).unwrap())
        .unwrap_or_else(|| chrono::Utc::now() + chrono::Duration::days(7));
    let client = connect(&url).await;
    let kv = jetstream::new(client).get_key_value("presence").await.unwrap();
    let started = Instant::now();
    use futures::StreamExt;
    futures::stream::iter(0..count)
        .map(|i| {
            let kv = kv.clone();
            let user = format!("{prefix}{i}");
            async move {
                let now = chrono::Utc::now();
                let ttl = (expires_at - now).num_seconds().max(1);
                let v = json!({"user_id": user, "status": "online", "message": "preloaded for the benchmark",
                    "last_seen": now, "updated_at": now, "node_id": "bench", "ttl": ttl,
                    "expires_at": expires_at});
                kv.put(format!("user.{user}"), serde_json::to_vec(&v).unwrap().into()).await.unwrap();
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
    println!("{}", json!({"what": "preload", "count": count, "seconds": started.elapsed().as_secs_f64()}));
}

fn tokens(args: &[String]) {
    let path = arg(args, "--config").expect("--config");
    let count = num(args, "--count", 100);
    let prefix = arg(args, "--prefix").unwrap_or_else(|| "w".into());
    let config = presence::config::load(Some(std::path::Path::new(&path)), &Default::default()).unwrap();
    let (secret, _) = presence::auth::secret::resolve(&config).unwrap();
    let auth = presence::auth::Authenticator::new(&secret, &config.auth);
    for i in 0..count {
        let user = format!("{prefix}{i}");
        println!("{user} {}", auth.mint(&user, Duration::from_secs(3600)));
    }
}

async fn propagation(args: &[String]) {
    let write = arg(args, "--write").expect("--write URL");
    let read = arg(args, "--read").expect("--read URL");
    let user = arg(args, "--user").expect("--user");
    let token = arg(args, "--token").expect("--token");
    let count = num(args, "--count", 1000);
    let client = reqwest::Client::new();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    for i in 0..count {
        let message = format!("m{i}");
        let body = json!({"status": "online", "message": message, "ttl": 3600});
        let put = client.put(format!("{write}/api/v2/presence/{user}")).bearer_auth(&token).json(&body);
        assert!(put.send().await.unwrap().status().is_success(), "write failed");
        let acked = Instant::now();
        loop {
            let got: serde_json::Value = client
                .get(format!("{read}/api/v2/presence/{user}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if got["data"][&user]["message"] == message.as_str() {
                break;
            }
            assert!(acked.elapsed() < Duration::from_secs(10), "update never arrived");
        }
        hist.record((acked.elapsed().as_micros() as u64).max(1)).unwrap();
    }
    print_result("propagation", count as f64 / started.elapsed().as_secs_f64(), &hist);
}

/// A client of `url`, with the `user:password@` it may carry (async-nats ignores credentials
/// written in a URL; the node's embedded server lets nobody in without them).
async fn connect(url: &str) -> async_nats::Client {
    let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let (user, password) = credentials.split_once(':').expect("user:password@");
            async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
                .connect(format!("{scheme}://{host}"))
                .await
                .unwrap()
        }
        None => async_nats::connect(url).await.unwrap(),
    }
}
