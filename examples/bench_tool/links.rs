//! Between nodes: propagation from one node to another, the delaying proxy, and outages of a
//! leaf's link to its center.

use super::*;

pub(crate) async fn propagation(args: &[String]) {
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
pub(crate) async fn serves(client: &reqwest::Client, base: &str, user: &str, message: &str) -> bool {
    let Ok(response) = client.get(format!("{base}/api/v2/presence/{user}")).send().await else {
        return false;
    };
    let stale = response.headers().contains_key("x-presence-stale");
    let Ok(body) = response.json::<serde_json::Value>().await else { return false };
    !stale && body["data"][user]["message"] == message
}

#[path = "../../tests/api/helpers/chaos.rs"]
#[allow(dead_code)]
mod chaos;

pub(crate) async fn proxy(args: &[String]) {
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
pub(crate) async fn last_revision(url: &str) -> u64 {
    let js = jetstream::new(connect(url).await);
    js.get_stream("KV_presence").await.unwrap().info().await.unwrap().state.last_sequence
}

pub(crate) async fn outage(args: &[String]) {
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
pub(crate) async fn eventually_down(client: &reqwest::Client, base: &str) {
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
