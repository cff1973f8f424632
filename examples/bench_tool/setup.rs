//! Test data: presences loaded straight into the bucket, tokens for writers, NATS connections.

use super::*;

pub(crate) async fn preload(args: &[String]) {
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

pub(crate) fn tokens(args: &[String]) {
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

/// A client of `url`, with the `user:password@` it may carry (async-nats ignores credentials
/// written in a URL; the node's embedded server lets nobody in without them).
pub(crate) async fn connect(url: &str) -> async_nats::Client {
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

pub(crate) fn read_tokens(path: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (u, t) = l.split_once(' ').unwrap();
            (u.to_string(), t.to_string())
        })
        .collect()
}
