//! Webhooks: a receiver on loopback, and writes that each change a user's status: how many events
//! a second the center delivers, and the delay from each write's 200 to its delivery.

use std::collections::HashMap;

use axum::{Router, extract::State, routing::post};

use super::*;

type Arrivals = Arc<std::sync::Mutex<HashMap<(String, u64), Instant>>>;

/// `webhooks --url NODE --receiver-port P --tokens FILE --count N [--concurrency C] [--pace-ms MS]`: answers
/// 204 at 127.0.0.1:P/hook, then writes about N status changes (C at a time, each user's in
/// order) to the users of FILE.
pub(crate) async fn webhooks(args: &[String]) {
    let url = arg(args, "--url").expect("--url");
    let port = num(args, "--receiver-port", 0) as u16;
    let tokens = read_tokens(&arg(args, "--tokens").expect("--tokens FILE"));
    let count = num(args, "--count", 2000) as usize;
    let concurrency = num(args, "--concurrency", 8) as usize;
    // Between one writer's writes: no event waits behind another, the delay is the path's own.
    let pace = Duration::from_millis(num(args, "--pace-ms", 0));
    let arrivals: Arrivals = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(|State(arrivals): State<Arrivals>, body: String| async move {
                let at = Instant::now();
                let event: serde_json::Value = serde_json::from_str(&body).unwrap();
                let user = event["data"]["user_id"].as_str().unwrap_or_default().to_string();
                let revision = event["data"]["revision"].as_u64().unwrap_or_default();
                arrivals.lock().unwrap().entry((user, revision)).or_insert(at);
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the receiver's port");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Each user's writes go one after the other (from one worker), alternating between online and
    // busy: every one is a status change, and each user's events are told in order.
    let client = reqwest::Client::new();
    // Each write: its user, when it was sent, when its 200 came.
    let acked: Arc<std::sync::Mutex<Vec<(String, Instant, Instant)>>> = Arc::default();
    let rounds = count.div_ceil(tokens.len());
    let started = Instant::now();
    let mut writes = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let mine: Vec<(String, String)> = tokens.iter().skip(worker).step_by(concurrency).cloned().collect();
        let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
        writes.spawn(async move {
            for round in 0..rounds {
                let status = if round.is_multiple_of(2) { "online" } else { "busy" };
                for (user, token) in &mine {
                    let put = client.put(format!("{url}/api/v2/presence/{user}")).bearer_auth(token);
                    let sent = Instant::now();
                    let response = put.json(&json!({"status": status, "ttl": 3600})).send().await.unwrap();
                    assert!(response.status().is_success(), "write failed");
                    acked.lock().unwrap().push((user.clone(), sent, Instant::now()));
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                }
            }
        });
    }
    while writes.join_next().await.is_some() {}
    let written = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = rounds * tokens.len();
    while arrivals.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = arrivals.lock().unwrap();
    let last = arrivals.values().max().copied().unwrap_or(started);
    // A user's writes go one after the other, each a change: their events, in revision order,
    // are their writes in order. The delay runs from the write's 200 (0 when the event arrived
    // first: the receiver can hear of a write before its writer does) and from its sending.
    let mut by_user: HashMap<&str, Vec<(u64, Instant)>> = HashMap::new();
    for ((user, revision), at) in arrivals.iter() {
        by_user.entry(user.as_str()).or_default().push((*revision, *at));
    }
    for list in by_user.values_mut() {
        list.sort();
    }
    let acked = acked.lock().unwrap().clone();
    let count = acked.len();
    let (mut hist, mut from_sent) = (Histogram::<u64>::new(3).unwrap(), Histogram::<u64>::new(3).unwrap());
    let (mut next, mut before_200): (HashMap<&str, usize>, usize) = (HashMap::new(), 0);
    for (user, sent, done) in &acked {
        let k = next.entry(user.as_str()).or_default();
        let Some((_, at)) = by_user.get(user.as_str()).and_then(|l| l.get(*k)) else { continue };
        *k += 1;
        before_200 += usize::from(at < done);
        hist.record((at.saturating_duration_since(*done).as_micros() as u64).max(1)).unwrap();
        from_sent.record((at.saturating_duration_since(*sent).as_micros() as u64).max(1)).unwrap();
    }
    let seconds = last.duration_since(started).as_secs_f64();
    let ms = |q| hist.value_at_quantile(q) as f64 / 1000.0;
    let sent_ms = |q| from_sent.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({"what": "webhooks", "writes": count, "writes_per_s": (count as f64 / written).round(),
               "delivered": arrivals.len(),
               "rps": (arrivals.len() as f64 / seconds).round(), "p50_ms": ms(0.5), "p99_ms": ms(0.99),
               "max_ms": hist.max() as f64 / 1000.0, "before_200": before_200,
               "from_sent_p50_ms": sent_ms(0.5), "from_sent_p99_ms": sent_ms(0.99)})
    );
    std::process::exit(0);
}
