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
//! - `propagation --write URL --read URL --user U --token T --count N [--name NAME]`: N times,
//!   writes a new message for U at one node while polling the other until it serves it (with no
//!   stale mark). Prints three results: NAME (from the write's acknowledgement to the first read
//!   that shows it; 0 when it showed before), NAME_from_sent (from the moment the write was
//!   sent) and NAME_write (the write itself).
//! - `proxy --target PORT --ms D`: a TCP proxy on loopback to PORT that delays each direction by
//!   D milliseconds (a distant link); prints its port, then runs until killed. SIGUSR1 cuts it
//!   (open connections dropped, new ones refused), SIGUSR2 heals it.
//! - `outage --proxy-pid PID --center URL --tokens FILE --leaf URL --center-nats URL --leaf-nats URL
//!   --seconds S --rate R`: cuts the proxy between a leaf and its center, writes at R per second
//!   to users of FILE at the center for S seconds, heals the proxy, and measures how long the
//!   leaf takes to serve the last of those writes with no stale mark, and its copy of the bucket
//!   to hold the center's last revision.
//!
//! - `live --url URL --tokens FILE --pid PID [--subscribers N --watch W --rate R --seconds S]`:
//!   N event-stream subscribers, each watching W users drawn from those in FILE, then writes
//!   at R per second to random users of FILE: RSS per idle subscriber (of process PID), the
//!   delivery latency from each write's 200 to its receipt (p50, p99), the node's CPU per
//!   subscriber, and the deliveries per second at saturation (writes as fast as they go). With
//!   `--poll`, the same users are polled instead (`?users=` every second per subscriber) while the
//!   same writes go on: the node's CPU per subscriber of the alternative.
//!   With `--ws`, the subscribers use the WebSocket instead.
//! - `live-propagation --write URL --read URL --user U --token T --count N [--every MS]`: N
//!   times, one every MS (20) milliseconds, writes a new message at one node and waits for it on
//!   an event stream at the other; the latency runs from the write's 200 to the receipt.
//! - `sessions-hold --url URL --tokens FILE --count N [--activity-every S]`: opens N device
//!   sessions (WebSocket, `hello`, wait for `welcome`) for the first N users of FILE, 256 being
//!   opened at once; prints the rate of connect + hello, then holds them (each says `activity`
//!   every S seconds, 20 by default, spread) until killed.
//! - `sessions-churn --url URL --watch-url URL --tokens FILE --users M --rate R --seconds S`:
//!   with the last M users of FILE, half of them connected at first, R connects and R clean
//!   disconnects per second at URL for S seconds, while subscribers at WATCH-URL (another node)
//!   watch all M: the delay from each `hello` (or close frame) sent until the other node shows
//!   the user online (offline), p50 and p99.
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
        Some("live") => live(&args).await,
        Some("live-propagation") => live_propagation(&args).await,
        Some("proxy") => proxy(&args).await,
        Some("outage") => outage(&args).await,
        Some("sessions-hold") => sessions_hold(&args).await,
        Some("sessions-churn") => sessions_churn(&args).await,
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
    let name = arg(args, "--name").unwrap_or_else(|| "propagation".into());
    let client = reqwest::Client::new();
    let histogram = || Histogram::<u64>::new(3).unwrap();
    let (mut from_ack, mut from_sent, mut writes) = (histogram(), histogram(), histogram());
    let micros = |d: Duration| (d.as_micros() as u64).max(1);
    let started = Instant::now();
    for i in 0..count {
        let message = format!("m{i}");
        let body = json!({"status": "online", "message": message, "ttl": 3600});
        let put = client.put(format!("{write}/api/v2/presence/{user}")).bearer_auth(&token).json(&body);
        // The other node is watched from the moment the write is sent, not from its answer.
        let watcher = {
            let (client, read, user, message) = (client.clone(), read.clone(), user.clone(), message.clone());
            tokio::spawn(async move {
                let since = Instant::now();
                while !serves(&client, &read, &user, &message).await {
                    assert!(since.elapsed() < Duration::from_secs(10), "update never arrived");
                }
                Instant::now()
            })
        };
        let sent = Instant::now();
        assert!(put.send().await.unwrap().status().is_success(), "write failed");
        let acked = Instant::now();
        let seen = watcher.await.unwrap();
        from_ack.record(micros(seen.saturating_duration_since(acked))).unwrap();
        from_sent.record(micros(seen - sent)).unwrap();
        writes.record(micros(acked - sent)).unwrap();
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    print_result(&name, rate, &from_ack);
    print_result(&format!("{name}_from_sent"), rate, &from_sent);
    print_result(&format!("{name}_write"), rate, &writes);
}

/// Whether the node at `base` serves `message` for `user`, with no stale mark.
async fn serves(client: &reqwest::Client, base: &str, user: &str, message: &str) -> bool {
    let Ok(response) = client.get(format!("{base}/api/v2/presence/{user}")).send().await else {
        return false;
    };
    let stale = response.headers().contains_key("x-presence-stale");
    let Ok(body) = response.json::<serde_json::Value>().await else { return false };
    !stale && body["data"][user]["message"] == message
}

#[path = "../tests/api/helpers/chaos.rs"]
#[allow(dead_code)]
mod chaos;

async fn proxy(args: &[String]) {
    use tokio::signal::unix::{SignalKind, signal};
    let target = num(args, "--target", 0) as u16;
    let delay = Duration::from_millis(num(args, "--ms", 0));
    let proxy = chaos::ChaosProxy::start(target).await;
    proxy.delay(delay, delay);
    println!("{}", proxy.port);
    let (mut cut, mut heal) =
        (signal(SignalKind::user_defined1()).unwrap(), signal(SignalKind::user_defined2()).unwrap());
    loop {
        tokio::select! {
            _ = cut.recv() => proxy.cut(),
            _ = heal.recv() => proxy.heal(),
        }
    }
}

/// The last revision of the bucket `KV_presence` on the NATS at `url`.
async fn last_revision(url: &str) -> u64 {
    let js = jetstream::new(connect(url).await);
    js.get_stream("KV_presence").await.unwrap().info().await.unwrap().state.last_sequence
}

async fn outage(args: &[String]) {
    let pid = arg(args, "--proxy-pid").expect("--proxy-pid");
    let center = arg(args, "--center").expect("--center URL");
    let leaf = arg(args, "--leaf").expect("--leaf URL");
    let (center_nats, leaf_nats) = (arg(args, "--center-nats").unwrap(), arg(args, "--leaf-nats").unwrap());
    let tokens = Arc::new(read_tokens(&arg(args, "--tokens").expect("--tokens FILE")));
    let (seconds, rate) = (num(args, "--seconds", 60), num(args, "--rate", 100));
    let signal = |which: &str| {
        assert!(std::process::Command::new("kill").args([which, &pid]).status().unwrap().success());
    };
    signal("-USR1");
    let client = reqwest::Client::new();
    eventually_down(&client, &leaf).await;
    let written = writes(&center, tokens.clone(), rate, seconds as f64, 0).await.len();
    let (user, token) = &tokens[0];
    let body = json!({"status": "busy", "message": "the last write of the outage", "ttl": 3600});
    let put = client.put(format!("{center}/api/v2/presence/{user}")).bearer_auth(token).json(&body);
    assert!(put.send().await.unwrap().status().is_success());
    let wanted = last_revision(&center_nats).await;
    let healed = Instant::now();
    signal("-USR2");
    let (mut served, mut copied) = (None, None);
    while served.is_none() || copied.is_none() {
        if served.is_none() && serves(&client, &leaf, user, "the last write of the outage").await {
            served = Some(healed.elapsed());
        }
        if copied.is_none() && last_revision(&leaf_nats).await >= wanted {
            copied = Some(healed.elapsed());
        }
        assert!(healed.elapsed() < Duration::from_secs(600), "the leaf never caught up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ms = |d: Option<Duration>| d.unwrap().as_secs_f64() * 1000.0;
    println!(
        "{}",
        json!({"what": format!("catch_up_{seconds}s"), "outage_s": seconds, "writes": written + 1,
               "revisions": wanted, "served_ms": ms(served), "copy_ms": ms(copied), "rps": 0, "p50_ms": 0, "p99_ms": 0})
    );
}

/// Waits until the leaf at `base` knows that its center is away.
async fn eventually_down(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health: serde_json::Value =
            client.get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
        if health["status"] == "degraded" {
            return;
        }
        assert!(Instant::now() < deadline, "the leaf did not notice the outage");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// The CPU time (user + system) process `pid` has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb * 1024
}

/// The write ids (`"message":"t{id}"`) in a chunk of an event stream.
fn write_ids(text: &str, into: &mut Vec<u64>) {
    for (at, _) in text.match_indices("\"message\":\"t") {
        let digits: String = text[at + 12..].chars().take_while(char::is_ascii_digit).collect();
        if let Ok(id) = digits.parse() {
            into.push(id);
        }
    }
}

/// Opens `GET /api/v2/presence/stream?users=...` at `authority` over its own connection.
async fn open_stream(authority: &str, users: &str) -> hyper::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(authority).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("/api/v2/presence/stream?users={users}"))
        .header("host", authority)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200, "the stream was refused");
    response
}

/// What one subscriber received: (write id, when), and whether its snapshot came.
struct Tally {
    received: Vec<(u64, Instant)>,
    ids: Vec<u64>,
    snapshot: bool,
    opened: Arc<AtomicU64>,
}

impl Tally {
    fn new(opened: Arc<AtomicU64>) -> Self {
        Self { received: Vec::new(), ids: Vec::new(), snapshot: false, opened }
    }

    /// Records a message received now; `snapshot` says whether it is the snapshot.
    fn record(&mut self, text: &str, snapshot: bool) {
        let now = Instant::now();
        if snapshot && !self.snapshot {
            self.snapshot = true;
            self.opened.fetch_add(1, Relaxed);
        }
        self.ids.clear();
        write_ids(text, &mut self.ids);
        self.received.extend(self.ids.iter().map(|&id| (id, now)));
    }
}

/// One subscriber: opens the stream, counts its snapshot, records (write id, time) of every
/// change until `stop`.
async fn subscriber(
    authority: String,
    users: String,
    opened: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Vec<(u64, Instant)> {
    use http_body_util::BodyExt;
    let mut response = open_stream(&authority, &users).await;
    let mut tally = Tally::new(opened);
    while !stop.load(Relaxed) {
        let frame = tokio::select! {
            frame = response.body_mut().frame() => frame,
            () = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let Some(Ok(frame)) = frame else { break };
        let Ok(data) = frame.into_data() else { continue };
        let text = String::from_utf8_lossy(&data);
        tally.record(&text, text.contains("event: snapshot"));
    }
    tally.received
}

/// The same over a WebSocket: connects, subscribes to `users`, records changes until `stop`.
async fn ws_subscriber(
    authority: String,
    users: String,
    opened: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Vec<(u64, Instant)> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://{authority}/api/v2/ws"),
        Some(config),
        true,
    )
    .await
    .expect("the WebSocket opens");
    let users: Vec<&str> = users.split(',').collect();
    socket.send(Message::text(json!({"type": "subscribe", "users": users}).to_string())).await.unwrap();
    let mut tally = Tally::new(opened);
    while !stop.load(Relaxed) {
        let message = tokio::select! {
            message = socket.next() => message,
            () = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let Some(Ok(message)) = message else { break };
        let Message::Text(text) = message else { continue };
        tally.record(&text, text.starts_with(r#"{"type":"snapshot""#));
    }
    tally.received
}

/// Writes to random users of `tokens` at `rate` per second (0: as fast as 64 in flight go) for
/// `seconds`; returns each write's 200 time by id, starting at `first`.
async fn writes(
    base: &str,
    tokens: Arc<Vec<(String, String)>>,
    rate: u64,
    seconds: f64,
    first: u64,
) -> Vec<(u64, Instant)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap();
    let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(first));
    let base = base.to_string();
    let one = {
        let acks = acks.clone();
        move |id: u64| {
            let (client, tokens, acks, base) = (client.clone(), tokens.clone(), acks.clone(), base.clone());
            async move {
                let (user, token) = &tokens[rand::random_range(0..tokens.len())];
                let body = json!({"status": "online", "message": format!("t{id}"), "ttl": 3600});
                let put = client.put(format!("{base}/api/v2/presence/{user}")).bearer_auth(token).json(&body);
                let response = put.send().await.unwrap();
                assert!(response.status().is_success(), "write failed: {}", response.status());
                acks.lock().unwrap().push((id, Instant::now()));
            }
        }
    };
    if rate == 0 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let (one, next) = (one.clone(), next.clone());
            tasks.spawn(async move {
                while started.elapsed().as_secs_f64() < seconds {
                    one(next.fetch_add(1, Relaxed)).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    } else {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..(rate as f64 * seconds) as u64 {
            ticker.tick().await;
            tasks.spawn(one(next.fetch_add(1, Relaxed)));
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }
    std::mem::take(&mut *acks.lock().unwrap())
}

fn read_tokens(path: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (u, t) = l.split_once(' ').unwrap();
            (u.to_string(), t.to_string())
        })
        .collect()
}

async fn live(args: &[String]) {
    let base = arg(args, "--url").expect("--url");
    let authority = base.trim_start_matches("http://").to_string();
    let tokens = Arc::new(read_tokens(&arg(args, "--tokens").expect("--tokens FILE")));
    let pid = num(args, "--pid", 0) as u32;
    let count = num(args, "--subscribers", 10_000);
    let watch = num(args, "--watch", 50) as usize;
    let rate = num(args, "--rate", 1000);
    let seconds = num(args, "--seconds", 20) as f64;
    let poll = args.iter().any(|a| a == "--poll");
    let lists: Vec<String> = (0..count)
        .map(|_| {
            let mut picked = std::collections::BTreeSet::new();
            while picked.len() < watch {
                picked.insert(rand::random_range(0..tokens.len()));
            }
            picked.into_iter().map(|i| tokens[i].0.as_str()).collect::<Vec<_>>().join(",")
        })
        .collect();
    let rss_before = rss_bytes(pid);
    if poll {
        // Each subscriber's list, read once a second, while the writes go on.
        let cpu = cpu_seconds(pid);
        let started = Instant::now();
        let polling = tokio::spawn({
            let (base, lists) = (base.clone(), lists.clone());
            async move {
                let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
                let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / count as f64));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut tasks = tokio::task::JoinSet::new();
                let mut done = 0u64;
                for i in 0..(count as f64 * seconds) as u64 {
                    ticker.tick().await;
                    let url = format!("{base}/api/v2/presence?users={}", lists[(i % count) as usize]);
                    let client = client.clone();
                    tasks.spawn(
                        async move { client.get(url).send().await.unwrap().bytes().await.unwrap().len() },
                    );
                    while tasks.try_join_next().is_some() {
                        done += 1;
                    }
                }
                while tasks.join_next().await.is_some() {
                    done += 1;
                }
                done
            }
        });
        writes(&base, tokens.clone(), rate, seconds, 0).await;
        let polls = polling.await.unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = (cpu_seconds(pid) - cpu) / elapsed;
        println!(
            "{}",
            json!({"what": "live_poll", "rps": (polls as f64 / elapsed).round(), "subscribers": count,
                   "node_cpu_cores": cpu, "cpu_us_per_subscriber_second": cpu * 1e6 / count as f64})
        );
        return;
    }

    let opened = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let open_started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    let ws = args.iter().any(|a| a == "--ws");
    for list in lists {
        if ws {
            clients.spawn(ws_subscriber(authority.clone(), list, opened.clone(), stop.clone()));
        } else {
            clients.spawn(subscriber(authority.clone(), list, opened.clone(), stop.clone()));
        }
        // At most 500 stream requests in flight while opening.
        while clients.len() as u64 > opened.load(Relaxed) + 500 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    while opened.load(Relaxed) < count {
        assert!(
            open_started.elapsed() < Duration::from_secs(300),
            "only {} streams opened",
            opened.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_rate = count as f64 / open_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await; // idle: let the allocator settle
    let rss_idle = rss_bytes(pid);

    let cpu = cpu_seconds(pid);
    let steady_started = Instant::now();
    let mut acks = writes(&base, tokens.clone(), rate, seconds, 0).await;
    let steady = steady_started.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(pid) - cpu) / steady;
    tokio::time::sleep(Duration::from_secs(1)).await; // the last deliveries
    let boundary = acks.len() as u64;

    let saturation_started = Instant::now();
    let saturated = writes(&base, tokens.clone(), 0, seconds / 2.0, 1_000_000_000).await;
    let saturation = saturation_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Relaxed);
    let mut receipts = Vec::new();
    while let Some(r) = clients.join_next().await {
        receipts.extend(r.unwrap());
    }
    acks.sort_unstable();
    let ack_of = |id: u64| acks.binary_search_by_key(&id, |a| a.0).ok().map(|i| acks[i].1);
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let (mut steady_deliveries, mut saturated_deliveries) = (0u64, 0u64);
    for (id, at) in &receipts {
        if *id >= 1_000_000_000 {
            saturated_deliveries += 1;
        } else if let Some(acked) = ack_of(*id) {
            steady_deliveries += 1;
            hist.record((at.saturating_duration_since(acked).as_micros() as u64).max(1)).unwrap();
        }
    }
    let ms = |q| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({"what": if ws { "live_ws" } else { "live_sse" }, "rps": rate, "subscribers": count, "watch": watch,
               "connects_per_s": open_rate.round(),
               "rss_per_subscriber_bytes": (rss_idle.saturating_sub(rss_before)) / count,
               "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": hist.max() as f64 / 1000.0,
               "writes": boundary, "deliveries": steady_deliveries,
               "deliveries_per_s": (steady_deliveries as f64 / steady).round(),
               "node_cpu_cores": cpu, "cpu_us_per_subscriber_second": cpu * 1e6 / count as f64,
               "saturation_writes_per_s": (saturated.len() as f64 / saturation).round(),
               "saturation_deliveries_per_s": (saturated_deliveries as f64 / saturation).round()})
    );
}

async fn live_propagation(args: &[String]) {
    let write = arg(args, "--write").expect("--write URL");
    let read = arg(args, "--read").expect("--read URL");
    let user = arg(args, "--user").expect("--user");
    let token = arg(args, "--token").expect("--token");
    let count = num(args, "--count", 1000);
    let opened = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    {
        use http_body_util::BodyExt;
        let authority = read.trim_start_matches("http://").to_string();
        let mut response = open_stream(&authority, &user).await;
        let opened = opened.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            while let Some(Ok(frame)) = response.body_mut().frame().await {
                let Ok(data) = frame.into_data() else { continue };
                let now = Instant::now();
                opened.store(1, Relaxed);
                ids.clear();
                write_ids(&String::from_utf8_lossy(&data), &mut ids);
                for id in &ids {
                    let _ = tx.send((*id, now));
                }
            }
        });
    }
    while opened.load(Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = reqwest::Client::new();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    // One write every `--every` ms (default 20): a connection sends 3 messages per 50 ms batch
    // window at once, so writes back to back would measure the pacing of a burst, not the path.
    let every = Duration::from_millis(num(args, "--every", 20));
    let mut ticker = tokio::time::interval(every);
    for i in 0..count {
        ticker.tick().await;
        let body = json!({"status": "online", "message": format!("t{i}"), "ttl": 3600});
        let put = client.put(format!("{write}/api/v2/presence/{user}")).bearer_auth(&token).json(&body);
        assert!(put.send().await.unwrap().status().is_success(), "write failed");
        let acked = Instant::now();
        loop {
            let (id, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
            if id == i {
                hist.record((at.saturating_duration_since(acked).as_micros() as u64).max(1)).unwrap();
                break;
            }
        }
    }
    stop.store(true, Relaxed);
    print_result("live_propagation", count as f64 / started.elapsed().as_secs_f64(), &hist);
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A device session at `authority`: connected, `hello` said, `welcome` received; with the moment
/// the hello went out.
async fn open_session(authority: &str, token: &str, device: &str) -> (Socket, Instant) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let url = format!("ws://{authority}/api/v2/ws");
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .expect("the WebSocket opens");
    let hello = json!({"type": "hello", "token": token, "device": device, "kind": "web"});
    let sent = Instant::now();
    socket.send(Message::text(hello.to_string())).await.unwrap();
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains(r#""type":"welcome""#) => return (socket, sent),
            Some(Ok(Message::Text(text))) => panic!("hello refused: {text}"),
            Some(Ok(_)) => continue,
            other => panic!("the session did not open: {other:?}"),
        }
    }
}

async fn sessions_hold(args: &[String]) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let authority = arg(args, "--url").expect("--url").trim_start_matches("http://").to_string();
    let tokens = read_tokens(&arg(args, "--tokens").expect("--tokens FILE"));
    let count = num(args, "--count", 20_000) as usize;
    let every = Duration::from_secs(num(args, "--activity-every", 20));
    let opened = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut held = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    for (_, token) in tokens.into_iter().take(count) {
        let (authority, opened, gate) = (authority.clone(), opened.clone(), gate.clone());
        held.spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let (mut socket, _) = open_session(&authority, &token, "bench").await;
            drop(permit);
            opened.fetch_add(1, Relaxed);
            // Activity at a random phase, then every `every`; reading answers the pings.
            let first = every.mul_f64(rand::random::<f64>());
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        if socket.send(Message::text(r#"{"type":"activity"}"#)).await.is_err() { return; }
                    }
                    message = socket.next() => if !matches!(message, Some(Ok(_))) { return },
                }
            }
        });
    }
    while opened.load(Relaxed) < count as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {} sessions opened",
            opened.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"what": "sessions_open", "sessions": count, "connects_per_s": (count as f64 / elapsed).round()})
    );
    while held.join_next().await.is_some() {}
}

async fn sessions_churn(args: &[String]) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let authority = arg(args, "--url").expect("--url").trim_start_matches("http://").to_string();
    let watch = arg(args, "--watch-url").expect("--watch-url").trim_start_matches("http://").to_string();
    let tokens = read_tokens(&arg(args, "--tokens").expect("--tokens FILE"));
    let users = num(args, "--users", 2000) as usize;
    let rate = num(args, "--rate", 1000);
    let seconds = num(args, "--seconds", 10);
    let pool: Vec<(String, String)> = tokens[tokens.len() - users..].to_vec();

    // What the other node shows: (user, status, when), from subscribers of 1000 users each.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool, Instant)>();
    let mut ready = Vec::new();
    for chunk in pool.chunks(1000) {
        let names: Vec<&str> = chunk.iter().map(|(u, _)| u.as_str()).collect();
        let (mut socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{watch}/api/v2/ws")).await.unwrap();
        socket.send(Message::text(json!({"type": "subscribe", "users": names}).to_string())).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        let seen = seen_tx.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else { continue };
                let at = Instant::now();
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                match value["type"].as_str() {
                    Some("snapshot") => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Some("changes") => {
                        for change in value["changes"].as_array().unwrap() {
                            let online = change["presence"]["status"] != "offline";
                            let _ = seen.send((change["user_id"].as_str().unwrap().to_string(), online, at));
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    for rx in ready {
        rx.await.unwrap();
    }

    // Half the pool connected at first.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool, Instant)>();
    let mut online: std::collections::VecDeque<(usize, tokio::sync::oneshot::Sender<()>)> =
        Default::default();
    let mut offline: std::collections::VecDeque<usize> = (0..users).collect();
    let connect = |i: usize, done: tokio::sync::mpsc::UnboundedSender<(String, bool, Instant)>| {
        let (authority, (user, token)) = (authority.clone(), pool[i].clone());
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut socket, sent) = open_session(&authority, &token, "churn").await;
            let _ = done.send((user.clone(), true, sent));
            tokio::select! {
                _ = close_rx => {}
                () = async { while let Some(Ok(_)) = socket.next().await {} } => return,
            }
            let sent = Instant::now();
            let _ = socket.close(None).await;
            let _ = done.send((user, false, sent));
        });
        close_tx
    };
    for _ in 0..users / 2 {
        let i = offline.pop_front().unwrap();
        online.push_back((i, connect(i, done_tx.clone())));
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // the first half settles
    while done_rx.try_recv().is_ok() {}
    while seen_rx.try_recv().is_ok() {}

    let per_tick = (rate / 100).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let started = Instant::now();
    let mut ops = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        for _ in 0..per_tick {
            if let Some((i, close)) = online.pop_front() {
                let _ = close.send(());
                offline.push_back(i);
            }
            if let Some(i) = offline.pop_front() {
                online.push_back((i, connect(i, done_tx.clone())));
            }
            ops += 2;
        }
    }
    let churn = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await; // the last changes arrive
    let mut done: std::collections::HashMap<String, Vec<(bool, Instant)>> = Default::default();
    while let Ok((user, up, at)) = done_rx.try_recv() {
        done.entry(user).or_default().push((up, at));
    }
    let mut seen: std::collections::HashMap<String, Vec<(bool, Instant)>> = Default::default();
    while let Ok((user, up, at)) = seen_rx.try_recv() {
        seen.entry(user).or_default().push((up, at));
    }
    // Each transition, matched in order with the first later change at the other node that shows it.
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let (mut transitions, mut unseen) = (0u64, 0u64);
    for (user, ops) in &done {
        let shown = seen.get(user).map(Vec::as_slice).unwrap_or_default();
        let mut from = 0;
        for (up, at) in ops {
            transitions += 1;
            match shown[from..].iter().position(|(s, t)| s == up && t >= at) {
                Some(k) => {
                    hist.record((shown[from + k].1.duration_since(*at).as_micros() as u64).max(1)).unwrap();
                    from += k + 1;
                }
                None => unseen += 1,
            }
        }
    }
    let ms = |q| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({"what": "sessions_churn", "rate": rate, "rps": (ops as f64 / churn).round(), "ops_per_s": (ops as f64 / churn).round(),
               "transitions": transitions, "unseen": unseen, "p50_ms": ms(0.5), "p99_ms": ms(0.99),
               "max_ms": hist.max() as f64 / 1000.0})
    );
    std::process::exit(0);
}
