//! Device sessions: thousands held at one node, and a churn of connects and disconnects watched
//! from another.

use super::*;

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A device session at `authority`: connected, `hello` said, `welcome` received; with the moment
/// the hello went out.
pub(crate) async fn open_session(authority: &str, token: &str, device: &str) -> (Socket, Instant) {
    open_session_from(authority, token, device, None).await
}

/// A session opened from the loopback address `source` (to spread a region's clients over
/// several addresses), or from any.
pub(crate) async fn open_session_from(
    authority: &str,
    token: &str,
    device: &str,
    source: Option<std::net::IpAddr>,
) -> (Socket, Instant) {
    try_open_session(authority, token, device, source).await.unwrap_or_else(|e| panic!("{e}"))
}

/// The same, with why it did not open.
async fn try_open_session(
    authority: &str,
    token: &str,
    device: &str,
    source: Option<std::net::IpAddr>,
) -> Result<(Socket, Instant), String> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let url = format!("ws://{authority}/api/v2/ws");
    let (mut socket, _) = match source {
        None => tokio_tungstenite::connect_async_with_config(url, Some(config), true).await,
        Some(source) => {
            let tcp = tokio::net::TcpSocket::new_v4().unwrap();
            tcp.bind((source, 0).into()).expect("bind the source address");
            let stream = tcp
                .connect(authority.parse().expect("host:port"))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            stream.set_nodelay(true).unwrap();
            let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await
        }
    }
    .map_err(|e| format!("the WebSocket did not open: {e:?}"))?;
    let hello = json!({"type": "hello", "token": token, "device": device, "kind": "web"});
    let sent = Instant::now();
    socket.send(Message::text(hello.to_string())).await.map_err(|e| format!("hello: {e}"))?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains(r#""type":"welcome""#) => {
                return Ok((socket, sent));
            }
            Some(Ok(Message::Text(text))) => panic!("hello refused: {text}"),
            Some(Ok(_)) => continue,
            other => return Err(format!("the session did not open: {other:?}")),
        }
    }
}

pub(crate) async fn sessions_hold(args: &[String]) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let authority = arg(args, "--url").expect("--url").trim_start_matches("http://").to_string();
    let tokens = read_tokens(&arg(args, "--tokens").expect("--tokens FILE"));
    let count = num(args, "--count", 20_000) as usize;
    let every = Duration::from_secs(num(args, "--activity-every", 20));
    let source: Option<std::net::IpAddr> = arg(args, "--bind").map(|a| a.parse().expect("--bind ADDRESS"));
    let opened = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut held = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    for (_, token) in tokens.into_iter().take(count) {
        let (authority, opened, gate, retried) =
            (authority.clone(), opened.clone(), gate.clone(), retried.clone());
        held.spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            // A client whose connection broke before its welcome connects again (at most 5 times,
            // counted): on a machine this loaded, a connect may wait past the header timeout.
            let mut attempt = 0;
            let mut socket = loop {
                match try_open_session(&authority, &token, "bench", source).await {
                    Ok((socket, _)) => break socket,
                    Err(_) if attempt < 5 => {
                        attempt += 1;
                        retried.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            };
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
        json!({"what": "sessions_open", "sessions": count, "connects_per_s": (count as f64 / elapsed).round(),
               "retried": retried.load(Relaxed)})
    );
    while held.join_next().await.is_some() {}
}

pub(crate) async fn sessions_churn(args: &[String]) {
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
