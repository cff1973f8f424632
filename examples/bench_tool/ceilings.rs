//! The storage ceilings Presence is compared against (raw KV calls; the HTTP ceiling is its own
//! example, `http_ceiling`) and the fixed-rate load generator.

use futures::StreamExt;

use super::*;

pub(crate) fn value_of_200_bytes(i: u64) -> bytes::Bytes {
    let now = chrono::Utc::now();
    let v = json!({"user_id": format!("k{i}"), "status": "online", "message": "benchmark value",
        "last_seen": now, "updated_at": now, "node_id": "bench", "ttl": 3600,
        "expires_at": now + chrono::Duration::hours(1)});
    serde_json::to_vec(&v).unwrap().into()
}

pub(crate) async fn kv(args: &[String]) {
    let url = arg(args, "--url").expect("--url");
    let op = arg(args, "--op").unwrap_or_else(|| "put".into());
    let concurrency = num(args, "--concurrency", 64);
    let seconds = num(args, "--seconds", 10);
    // One connection, as a node has; more to see what nats-server does with several.
    let connections = num(args, "--connections", 1);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(jetstream::new(connect(&url).await));
    }
    let js = clients[0].clone();
    // `put-event-guarded`: the NATS work of a PUT as the service does it (see `guarded_write`).
    let guarded = op == "put-event-guarded";
    let guards = Guards::from_args(args);
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "ceiling".into(),
            history: 1,
            // The service's bucket: records expire, and leave a marker when they do.
            limit_markers: guarded.then_some(Duration::from_secs(300)),
            ..Default::default()
        })
        .await
        .unwrap();
    if op.starts_with("put-event") {
        let config = jetstream::stream::Config {
            name: "CEILING_EVENTS".into(),
            subjects: vec!["ceiling.events.>".into(), "ceiling.erased.>".into()],
            // The service's audit log keeps 1,000 events per user and kind.
            max_messages_per_subject: if guarded { 1000 } else { 0 },
            ..Default::default()
        };
        js.get_or_create_stream(config).await.unwrap();
    }
    if guarded && guards.watch {
        // Every node watches the bucket: each change is delivered back to the one that wrote it.
        let mut changes = kv.watch_all().await.unwrap();
        tokio::spawn(async move { while changes.next().await.is_some() {} });
    }
    let keys = 10_000u64;
    if op == "get" {
        for i in 0..keys {
            kv.put(format!("k{i}"), value_of_200_bytes(i)).await.unwrap();
        }
    }
    // The bucket through each connection, opened before the clock starts.
    let mut handles = Vec::new();
    for client in &clients {
        handles.push((client.clone(), client.get_key_value("ceiling").await.unwrap()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (js, kv) = handles[w as usize % handles.len()].clone();
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3).unwrap();
                let mut i = w;
                // Guarded: this worker's own keys, and the revision each is at.
                let mut revisions = std::collections::HashMap::new();
                while !stop.load(Relaxed) {
                    let t = Instant::now();
                    let key = format!("k{}", i % keys);
                    if guarded {
                        let key = format!("k{w}-{}", (i / concurrency) % (keys / concurrency));
                        let last = revisions.get(&key).copied();
                        let revision = guarded_write(&kv, &js, (&key, last), i, guards).await;
                        revisions.insert(key, revision);
                    } else if op == "put" {
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
    if op.starts_with("put-event") {
        js.delete_stream("CEILING_EVENTS").await.unwrap();
    }
    print_result(&op, done.load(Relaxed) as f64 / elapsed, &hist);
}

/// The guarantees `put-event-guarded` keeps; `--without watch,cas,id,condition` takes some out
/// (to tell what each costs the server).
#[derive(Clone, Copy)]
struct Guards {
    watch: bool,
    cas: bool,
    id: bool,
    condition: bool,
}

impl Guards {
    fn from_args(args: &[String]) -> Self {
        let without = arg(args, "--without").unwrap_or_default();
        let keeps = |guard: &str| !without.split(',').any(|w| w == guard);
        Self { watch: keeps("watch"), cas: keeps("cas"), id: keeps("id"), condition: keeps("condition") }
    }
}

/// A PUT's NATS work as the service does it: the record written on condition of the revision
/// it was read at (created, the first time), then its event stored with an id (JetStream's
/// de-duplication) on condition that no erasure marker of the user is stored. The record's new
/// revision.
async fn guarded_write(
    kv: &jetstream::kv::Store,
    js: &jetstream::Context,
    (key, last): (&str, Option<u64>),
    i: u64,
    guards: Guards,
) -> u64 {
    let value = value_of_200_bytes(i);
    let revision = match last {
        _ if !guards.cas => kv.put(key, value).await.unwrap(),
        None => kv.create(key, value).await.unwrap(),
        Some(last) => kv.update(key, value, last).await.unwrap(),
    };
    let mut event = jetstream::message::PublishMessage::build().payload(bytes::Bytes::from(vec![b'x'; 500]));
    if guards.id {
        event = event.message_id(format!("update-{key}-{revision}"));
    }
    if guards.condition {
        let marker = format!("ceiling.erased.user.{key}");
        event = event
            .expected_last_subject_sequence(0)
            .header("Nats-Expected-Last-Subject-Sequence-Subject", marker.as_str());
    }
    js.send_publish(format!("ceiling.events.{key}"), event).await.unwrap().await.unwrap();
    revision
}

pub(crate) fn print_result(what: &str, rps: f64, hist: &Histogram<u64>) {
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({"what": what, "rps": rps.round(), "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": hist.max() as f64 / 1000.0, "count": hist.len()})
    );
}

pub(crate) async fn fixed_rate(args: &[String]) {
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
