//! Test fixtures: a Presence node with its own real nats-server on free ports in a temporary
//! directory, either in this process ([`TestApp`]) or as the real binary ([`ServiceProcess`]).

use std::{
    future::Future,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use presence::{
    app::Application,
    auth::Authenticator,
    config::{Config, Secret, from_sources},
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

pub(crate) const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";
pub(crate) const ISSUER: &str = "presence-service";

/// A free TCP port on loopback, chosen by the OS.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A configuration for a node whose every port and path is its own.
pub(crate) fn test_config(dir: &Path) -> Config {
    let mut config = from_sources(None, &[]).unwrap();
    config.service.port = 0;
    config.service.node_id = "test-node".into();
    config.nats.port = free_port();
    config.nats.leaf_port = free_port();
    config.nats.data_dir = dir.join("nats-data");
    config.nats.startup_timeout = Duration::from_secs(20);
    config.auth.jwt_secret = Some(Secret::new(SECRET.into()));
    config
}

pub(crate) fn mint(user: &str) -> String {
    let config = from_sources(None, &[]).unwrap();
    Authenticator::new(&Secret::new(SECRET.into()), &config.auth).mint(user, Duration::from_secs(600))
}

/// A node running inside the test process.
pub(crate) struct TestApp {
    pub addr: SocketAddr,
    pub config: Config,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: TempDir,
}

impl TestApp {
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub(crate) async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        adjust(&mut config);
        // Logs only when asked for: RUST_LOG=warn cargo test ...
        if std::env::var_os("RUST_LOG").is_some() {
            presence::telemetry::init(&config.logging);
        }
        let app = Application::build(config.clone()).await.expect("the app builds");
        let addr = app.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self { addr, config, http: reqwest::Client::new(), stop: Some(stop), task, _dir: dir }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.config.nats.data_dir
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// PUT a presence as `user` with a valid token of their own.
    pub(crate) async fn put(&self, user: &str, body: Value) -> Response {
        self.put_as(user, &mint(user), body).await
    }

    pub(crate) async fn put_as(&self, user: &str, token: &str, body: Value) -> Response {
        self.http
            .put(self.url(&format!("/api/v2/presence/{user}")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn batch(&self, ids: Value) -> Response {
        self.http
            .post(self.url("/api/v2/presence/batch"))
            .json(&json!({ "user_ids": ids }))
            .send()
            .await
            .unwrap()
    }

    /// Stops the node the way SIGTERM does and waits until it has.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

impl TestApp {
    /// Waits until `/health` says `status` (`ok` or `degraded`).
    pub(crate) async fn wait_health(&self, status: &str, within: Duration) {
        let what = format!("{} reports {status}", self.config.service.node_id);
        eventually(within, &what, || async {
            let (_, body) = json_of(self.get("/health").await).await;
            (body["status"] == status).then_some(())
        })
        .await;
    }
}

/// The JSON body of a response, with its status.
pub(crate) async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: body is not JSON: {text:?}"));
    assert_eq!(content_type.as_deref(), Some("application/json"), "{status}: {text}");
    (status, body)
}

/// Asserts the error envelope with `status`.
pub(crate) async fn assert_error(response: Response, status: StatusCode) -> String {
    let (got, body) = json_of(response).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["success"], json!(false), "{body}");
    let error = body["error"].as_str().unwrap_or_else(|| panic!("no error message: {body}"));
    assert!(!error.is_empty());
    assert_eq!(body.as_object().unwrap().len(), 2, "only success and error: {body}");
    error.to_string()
}

/// The real `presence` binary, run against its own data directory and ports.
pub(crate) struct ServiceProcess {
    pub child: Child,
    pub http_port: u16,
    pub nats_port: u16,
    pub leaf_port: u16,
    pub dir: PathBuf,
}

impl ServiceProcess {
    /// Writes a config into `dir` (with `extra` YAML appended) and starts the binary on it.
    pub(crate) fn start(dir: &Path, ports: Option<(u16, u16, u16)>, secret: Option<&str>) -> Self {
        let (http_port, nats_port, leaf_port) =
            ports.unwrap_or_else(|| (free_port(), free_port(), free_port()));
        let secret_line = secret.map(|s| format!("  jwt_secret: {s}\n")).unwrap_or_default();
        let yaml = format!(
            "service:\n  host: 127.0.0.1\n  port: {http_port}\n  node_id: proc-node\n\
             nats:\n  embedded: true\n  port: {nats_port}\n  leaf_port: {leaf_port}\n  data_dir: {data}\n\
             auth:\n{secret_line}  jwt_issuer: {ISSUER}\nlogging:\n  level: debug\n  format: json\n",
            data = dir.join("nats-data").display(),
        );
        let config = dir.join("presence.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.join("service.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_presence"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, http_port, nats_port, leaf_port, dir: dir.to_path_buf() }
    }

    pub(crate) fn ports(&self) -> (u16, u16, u16) {
        (self.http_port, self.nats_port, self.leaf_port)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.join("presence.yaml")
    }

    /// Waits until `/health` answers 200.
    pub(crate) async fn wait_healthy(&mut self) {
        let url = self.url("/health");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "service exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "service not healthy in 30s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pid of the embedded nats-server, from its pid file.
    pub(crate) fn nats_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("nats-data").join("nats-server.pid")).ok()?.trim().parse().ok()
    }

    pub(crate) fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = self.nats_pid()
            && is_alive(pid)
        {
            kill9(pid);
        }
    }
}

/// Sends SIGKILL to `pid`.
pub(crate) fn kill9(pid: i32) {
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// True while `pid` is a live (not zombie) process.
pub(crate) fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// True when nothing listens on the port any more.
pub(crate) fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A standalone nats-server (the project's pinned binary) for tests that must stop and start
/// NATS under a running node.
pub(crate) struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl NatsServer {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self { child: None, port: free_port(), dir };
        server.restart().await;
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and store, and waits until it serves JetStream.
    pub(crate) async fn restart(&mut self) {
        let conf = self.dir.path().join("nats.conf");
        let store = self.dir.path().join("js");
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{}\"\njetstream {{ store_dir: {:?} }}\n",
                self.port,
                store.display().to_string()
            ),
        )
        .unwrap();
        let bin = presence::nats::server::find_binary(None).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
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

/// A node on `nats` instead of an embedded server.
pub(crate) async fn external_app(nats: &NatsServer, node_id: &str) -> TestApp {
    let (url, node_id) = (nats.url(), node_id.to_string());
    TestApp::spawn_with(move |c| {
        c.nats.embedded = false;
        c.nats.url = url;
        c.service.node_id = node_id;
    })
    .await
}

/// A JetStream KV handle on the node's bucket, as another client would have it.
pub(crate) async fn bucket(nats_url: &str) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(nats_url).await.unwrap();
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

/// A TCP proxy on loopback whose link can be cut and healed: a network partition between a leaf
/// and its center, for tests.
pub(crate) struct ChaosProxy {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    pub(crate) async fn start(target: u16) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (flag, gen_tx) = (cut.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if flag.load(SeqCst) {
                    continue; // dropped: refused while cut
                }
                let mut cancelled = gen_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cancelled.changed() => {}
                    }
                });
            }
        });
        Self { port, cut, generation, task }
    }

    /// Drops every open connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub(crate) fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A leaf node whose leafnode connection goes to `center_leaf_port` on loopback.
pub(crate) async fn leaf_app(center_leaf_port: u16, node_id: &str, region: &str) -> TestApp {
    let (node_id, region) = (node_id.to_string(), region.to_string());
    TestApp::spawn_with(move |c| {
        c.service.node_type = presence::config::NodeType::Leaf;
        c.service.node_id = node_id;
        c.service.region = Some(region);
        c.nats.center_url = Some(format!("nats-leaf://127.0.0.1:{center_leaf_port}"));
    })
    .await
}

/// Three nats-servers clustered as the center (JetStream domain `center`), each with a leafnode
/// listener, for tests of a replicated bucket.
pub(crate) struct NatsCluster {
    children: Vec<Option<Child>>,
    pub client_ports: Vec<u16>,
    pub leaf_ports: Vec<u16>,
    _dir: TempDir,
}

impl NatsCluster {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let leaf_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let bin = presence::nats::server::find_binary(None).unwrap();
        let children = (0..3)
            .map(|i| {
                let conf = dir.path().join(format!("c{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "server_name: c{i}\nlisten: \"127.0.0.1:{}\"\njetstream {{ domain: center, store_dir: {:?} }}\n\
                         cluster {{ name: presence-center, listen: \"127.0.0.1:{}\", routes: [{routes}] }}\n\
                         leafnodes {{ listen: \"127.0.0.1:{}\", no_advertise: true }}\n",
                        client_ports[i],
                        dir.path().join(format!("js{i}")).display().to_string(),
                        route_ports[i],
                        leaf_ports[i],
                    ),
                )
                .unwrap();
                Some(Command::new(&bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
            })
            .collect();
        let cluster = Self { children, client_ports, leaf_ports, _dir: dir };
        let url = format!("nats://127.0.0.1:{}", cluster.client_ports[0]);
        eventually(Duration::from_secs(30), "the cluster elects a JetStream meta leader", || {
            let url = url.clone();
            async move {
                let client = async_nats::connect(url.as_str()).await.ok()?;
                let js = async_nats::jetstream::new(client);
                js.query_account().await.ok().map(drop)
            }
        })
        .await;
        cluster
    }

    /// All three client URLs, comma-separated (as `nats.url` takes them).
    pub(crate) fn url(&self) -> String {
        self.client_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}
