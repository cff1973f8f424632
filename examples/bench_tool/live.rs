//! Live presence: subscribers' memory, delivery latency and CPU, polling as the alternative,
//! and propagation between nodes over an event stream.

use super::*;

pub(crate) async fn live(args: &[String]) {
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

pub(crate) async fn live_propagation(args: &[String]) {
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
    let mut from_sent = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    // One write every `--every` ms (default 20): a connection sends 3 messages per 50 ms batch
    // window at once, so writes back to back would measure the pacing of a burst, not the path.
    let every = Duration::from_millis(num(args, "--every", 20));
    let mut ticker = tokio::time::interval(every);
    for i in 0..count {
        ticker.tick().await;
        let body = json!({"status": "online", "message": format!("t{i}"), "ttl": 3600});
        let put = client.put(format!("{write}/api/v2/presence/{user}")).bearer_auth(&token).json(&body);
        let sent = Instant::now();
        assert!(put.send().await.unwrap().status().is_success(), "write failed");
        let acked = Instant::now();
        loop {
            let (id, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
            if id == i {
                hist.record((at.saturating_duration_since(acked).as_micros() as u64).max(1)).unwrap();
                from_sent.record((at.saturating_duration_since(sent).as_micros() as u64).max(1)).unwrap();
                break;
            }
        }
    }
    stop.store(true, Relaxed);
    let rate = count as f64 / started.elapsed().as_secs_f64();
    print_result("live_propagation", rate, &hist);
    if arg(args, "--from-sent").is_some() {
        print_result("live_propagation_from_sent", rate, &from_sent);
    }
}
