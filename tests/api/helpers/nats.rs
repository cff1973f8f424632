//! A standalone nats-server (the project's pinned binary) and direct access to the bucket, for
//! tests that stop NATS under a running node or write around the service.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::json;
use tempfile::TempDir;

use super::{eventually, free_port, lost_its_port};

/// A standalone nats-server (the project's pinned binary) for tests that must stop and start
/// NATS under a running node.
pub(crate) struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// More configuration (TLS, authorization) for secured servers.
    extra: String,
}

impl NatsServer {
    /// A server on a free port. The port is chosen again if the server cannot take it (another
    /// test's outgoing connection may take a free port between its choice and the server's bind).
    pub(crate) async fn start() -> Self {
        for _ in 0..3 {
            if let Some(server) = Self::try_start_on(free_port()).await {
                return server;
            }
        }
        panic!("nats-server exited on three free ports in a row");
    }

    /// A server on `port` if it can take it (another process may hold it): `None` when the
    /// server exits instead of serving.
    pub(crate) async fn try_start_on(port: u16) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self { child: None, port, dir, extra: String::new() };
        server.spawn();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if server.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                server.child = None;
                return None;
            }
            if server.serves_jetstream().await {
                return Some(server);
            }
            assert!(std::time::Instant::now() < deadline, "nats-server neither served nor exited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A server with `extra` configuration (TLS, authorization), ready once its port accepts
    /// connections: a client needs the right credentials to tell more.
    pub(crate) async fn start_secured(extra: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self { child: None, port: free_port(), dir, extra };
        server.spawn();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut attempts = 1;
        while tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.is_err() {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(server.dir.path().join("nats.log")).unwrap_or_default();
                // The free port was taken before the server could bind it: choose again.
                if attempts < 3 && lost_its_port(&log) {
                    (attempts, server.port) = (attempts + 1, free_port());
                    server.spawn();
                    continue;
                }
                panic!("nats-server exited ({status}):\n{log}");
            }
            assert!(std::time::Instant::now() < deadline, "nats-server did not listen within 20s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    async fn serves_jetstream(&self) -> bool {
        let Ok(client) = async_nats::connect(self.url()).await else { return false };
        async_nats::jetstream::new(client).query_account().await.is_ok()
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and store, and waits until it serves JetStream.
    pub(crate) async fn restart(&mut self) {
        self.spawn();
        let url = self.url();
        eventually(Duration::from_secs(20), "nats-server serves JetStream", || {
            let url = url.clone();
            async move {
                let client = async_nats::connect(&url).await.ok()?;
                async_nats::jetstream::new(client).query_account().await.ok().map(drop)
            }
        })
        .await;
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("nats.conf");
        let store = self.dir.path().join("js");
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{}\"\njetstream {{ store_dir: {:?} }}\n{}\n",
                self.port,
                store.display().to_string(),
                self.extra
            ),
        )
        .unwrap();
        let bin = presence::nats::server::find_binary(None).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("nats.log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client of `url`, with the `user:password@` it may carry (async-nats ignores credentials
/// written in a URL).
pub(crate) async fn nats_connect(url: &str) -> async_nats::Client {
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

/// A JetStream KV handle on the node's bucket, as another client would have it.
pub(crate) async fn bucket(nats_url: &str) -> async_nats::jetstream::kv::Store {
    let client = nats_connect(nats_url).await;
    async_nats::jetstream::new(client).get_key_value("presence").await.unwrap()
}

/// A stored presence value as the service writes it, for writes that bypass the service.
pub(crate) fn stored_value(user: &str, status: &str, message: &str, ttl_secs: i64) -> bytes::Bytes {
    let now = chrono::Utc::now();
    let value = json!({
        "user_id": user, "status": status, "message": message,
        "last_seen": now, "updated_at": now, "node_id": "elsewhere", "ttl": ttl_secs,
        "expires_at": now + chrono::Duration::seconds(ttl_secs),
    });
    serde_json::to_vec(&value).unwrap().into()
}
