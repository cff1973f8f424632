//! Webhooks: a receiver on loopback, and writes that each change a user's status: how many events
//! a second the center delivers, and the delay from each write's 200 to its delivery.

use std::collections::HashMap;

use axum::{Router, extract::State, routing::post};

use super::*;

type Arrivals = Arc<std::sync::Mutex<HashMap<(String, u64), Instant>>>;

/// `webhooks --url NODE --receiver-port P --tokens FILE --count N [--concurrency C]`: answers
/// 204 at 127.0.0.1:P/hook, then writes about N status changes (C at a time, each user's in
/// order) to the users of FILE.
pub(crate) async fn webhooks(args: &[String]) {
    let url = arg(args, "--url").expect("--url");
    let port = num(args, "--receiver-port", 0) as u16;
    let tokens = read_tokens(&arg(args, "--tokens").expect("--tokens FILE"));
    let count = num(args, "--count", 2000) as usize;
    let concurrency = num(args, "--concurrency", 8) as usize;
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
    let acked: Arc<std::sync::Mutex<Vec<(String, Instant)>>> = Arc::default();
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
                    let response = put.json(&json!({"status": status, "ttl": 3600})).send().await.unwrap();
                    assert!(response.status().is_success(), "write failed");
                    acked.lock().unwrap().push((user.clone(), Instant::now()));
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
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut by_user: HashMap<&str, Vec<Instant>> = HashMap::new();
    for ((user, _), at) in arrivals.iter() {
        by_user.entry(user.as_str()).or_default().push(*at);
    }
    // A write's delivery: its user's first arrival at or after its 200 not yet matched.
    let mut acked = acked.lock().unwrap().clone();
    acked.sort_by_key(|(_, at)| *at);
    let count = acked.len();
    let mut used: HashMap<&str, usize> = HashMap::new();
    for list in by_user.values_mut() {
        list.sort();
    }
    for (user, at) in &acked {
        let Some(list) = by_user.get(user.as_str()) else { continue };
        let from = used.entry(user.as_str()).or_default();
        if let Some(k) = list[*from..].iter().position(|t| t >= at) {
            hist.record((list[*from + k].duration_since(*at).as_micros() as u64).max(1)).unwrap();
            *from += k + 1;
        }
    }
    let seconds = last.duration_since(started).as_secs_f64();
    let ms = |q| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({"what": "webhooks", "writes": count, "writes_per_s": (count as f64 / written).round(),
               "delivered": arrivals.len(),
               "rps": (arrivals.len() as f64 / seconds).round(), "p50_ms": ms(0.5), "p99_ms": ms(0.99),
               "max_ms": hist.max() as f64 / 1000.0})
    );
    std::process::exit(0);
}
