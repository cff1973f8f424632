//! What the live benchmarks share: event-stream and WebSocket subscribers, their tallies, the
//! writers, and the process's CPU and memory.

use super::*;

/// The CPU time (user + system) process `pid` has used, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

pub(crate) fn rss_bytes(pid: u32) -> u64 {
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
pub(crate) fn write_ids(text: &str, into: &mut Vec<u64>) {
    for (at, _) in text.match_indices("\"message\":\"t") {
        let digits: String = text[at + 12..].chars().take_while(char::is_ascii_digit).collect();
        if let Ok(id) = digits.parse() {
            into.push(id);
        }
    }
}

/// Opens `GET /api/v2/presence/stream?users=...` at `authority` over its own connection.
pub(crate) async fn open_stream(authority: &str, users: &str) -> hyper::Response<hyper::body::Incoming> {
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
pub(crate) struct Tally {
    received: Vec<(u64, Instant)>,
    ids: Vec<u64>,
    snapshot: bool,
    opened: Arc<AtomicU64>,
}

impl Tally {
    pub(crate) fn new(opened: Arc<AtomicU64>) -> Self {
        Self { received: Vec::new(), ids: Vec::new(), snapshot: false, opened }
    }

    /// Records a change received now (its write id, if it has one); `snapshot` says whether it
    /// came with the snapshot.
    pub(crate) fn record_ids(&mut self, id: Option<u64>, snapshot: bool) {
        let now = Instant::now();
        if snapshot && !self.snapshot {
            self.snapshot = true;
            self.opened.fetch_add(1, Relaxed);
        }
        self.received.extend(id.map(|id| (id, now)));
    }

    /// Records a message received now; `snapshot` says whether it is the snapshot.
    pub(crate) fn record(&mut self, text: &str, snapshot: bool) {
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
pub(crate) async fn subscriber(
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

/// The same over a WebSocket, through the Rust client (`clients/rust`): watches `users`, records
/// changes until `stop`.
pub(crate) async fn ws_subscriber(
    authority: String,
    users: String,
    opened: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Vec<(u64, Instant)> {
    use futures::StreamExt;
    use presence_client::{ChangeKind, Client};
    let client = Client::builder().url(format!("http://{authority}")).build().expect("a client");
    let mut watch = client.watch(users.split(',').map(String::from).collect::<Vec<_>>());
    let mut tally = Tally::new(opened);
    while !stop.load(Relaxed) {
        let change = tokio::select! {
            change = watch.next() => change,
            () = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let Some(change) = change else { break };
        let id =
            change.presence.message.as_deref().and_then(|m| m.strip_prefix('t')).and_then(|d| d.parse().ok());
        tally.record_ids(id, change.kind == ChangeKind::Snapshot);
    }
    client.close();
    tally.received
}

/// Writes to random users of `tokens` at `rate` per second (0: as fast as 64 in flight go) for
/// `seconds`; returns each write's 200 time by id, starting at `first`.
pub(crate) async fn writes(
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
