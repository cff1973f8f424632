//! A Presence node inside the test process, on its own embedded nats-server, with a typed client
//! for every endpoint.

use std::{net::SocketAddr, path::Path, time::Duration};

use presence::{
    app::Application,
    config::{Config, NatsUser, NodeType, Secret, from_sources},
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{NatsServer, SECRET, eventually, free_port, json_of, lost_its_port, mint};

/// The operator every test node's embedded NATS knows (full access).
pub(crate) const OPERATOR: &str = "test-operator";
pub(crate) const OPERATOR_PASSWORD: &str = "test-operator-password-0123456789";
/// The leafnode password every test center accepts and every test leaf presents.
pub(crate) const LEAF_PASSWORD: &str = "test-leaf-password: with @ and / to encode";

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
    config.nats.operators =
        vec![NatsUser { user: OPERATOR.into(), password: Secret::new(OPERATOR_PASSWORD.into()) }];
    config.nats.leaf_password = Some(Secret::new(LEAF_PASSWORD.into()));
    config
}

/// A node running inside the test process.
pub(crate) struct TestApp {
    pub addr: SocketAddr,
    pub config: Config,
    pub http: reqwest::Client,
    /// What SIGHUP does to this node.
    pub reloader: presence::app::Reloader,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: TempDir,
}

impl TestApp {
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub(crate) async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::try_spawn_with(adjust).await.expect("the app builds")
    }

    /// A node, or the start-up error (all of its chain) it stopped with.
    pub(crate) async fn try_spawn_with(adjust: impl FnOnce(&mut Config)) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        let chosen = (config.nats.port, config.nats.leaf_port);
        adjust(&mut config);
        Self::launch(dir, config, Some(chosen)).await
    }

    /// The node again, on what it kept: its data directory and configuration (its NATS ports).
    pub(crate) async fn restart(kept: Kept) -> Self {
        Self::launch(kept.dir, kept.config, None).await.expect("the app builds again")
    }

    /// Builds and runs a node on `config`; ports in `chosen` may be chosen again if taken.
    async fn launch(dir: TempDir, mut config: Config, chosen: Option<(u16, u16)>) -> Result<Self, String> {
        // Logs only when asked for: RUST_LOG=warn cargo test ...
        if std::env::var_os("RUST_LOG").is_some() {
            std::mem::forget(presence::telemetry::init(&config.logging));
        }
        let mut attempts = 0;
        let app = loop {
            attempts += 1;
            match Application::build(config.clone()).await.map_err(|e| format!("{e:#}")) {
                // A free port can be taken between its choice and the server's bind (by another
                // test's outgoing connection): choose again, if the test did not choose it.
                Err(e) if lost_its_port(&e) && attempts < 3 && chosen.is_some() => {
                    let chosen = chosen.unwrap_or_default();
                    if config.nats.port == chosen.0 {
                        config.nats.port = free_port();
                    }
                    if config.nats.leaf_port == chosen.1 {
                        config.nats.leaf_port = free_port();
                    }
                }
                built => break built?,
            }
        };
        let addr = app.local_addr();
        let reloader = app.reloader();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, config, http: reqwest::Client::new(), reloader, stop: Some(stop), task, _dir: dir })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The node's embedded NATS, as the test operator (the server lets nobody in without
    /// credentials).
    pub(crate) fn nats_url(&self) -> String {
        format!("nats://{OPERATOR}:{OPERATOR_PASSWORD}@127.0.0.1:{}", self.config.nats.port)
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.config.nats.data_dir
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.http_get(path).send().await.unwrap()
    }

    /// A GET of `path` to add headers to.
    pub(crate) fn http_get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path))
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

    /// PUT a presence as `user` and insist on 200: the presence as answered.
    pub(crate) async fn set(&self, user: &str, body: Value) -> Value {
        let (status, answer) = json_of(self.put(user, body).await).await;
        assert_eq!(status, StatusCode::OK, "PUT {user}: {answer}");
        answer["data"][user].clone()
    }

    /// GET one user's presence.
    pub(crate) async fn read(&self, user: &str) -> Response {
        self.get(&format!("/api/v2/presence/{user}")).await
    }

    /// GET several users' presences with `?users=`.
    pub(crate) async fn read_many(&self, users: &[&str]) -> Response {
        self.get(&format!("/api/v2/presence?users={}", users.join(","))).await
    }

    /// GET `user`'s history with their own token.
    pub(crate) async fn history(&self, user: &str, limit: Option<usize>) -> Response {
        let query = limit.map(|l| format!("?limit={l}")).unwrap_or_default();
        let url = self.url(&format!("/api/v2/presence/{user}/history{query}"));
        self.http.get(url).bearer_auth(mint(user)).send().await.unwrap()
    }

    /// DELETE (erase) `user` with their own token.
    pub(crate) async fn erase(&self, user: &str) -> Response {
        let url = self.url(&format!("/api/v2/presence/{user}"));
        self.http.delete(url).bearer_auth(mint(user)).send().await.unwrap()
    }

    /// `/health`, which always answers 200.
    pub(crate) async fn health(&self) -> Value {
        let (status, body) = json_of(self.get("/health").await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// `/health/nats`, with its status (503 when NATS, JetStream or the bucket does not answer).
    pub(crate) async fn nats_health(&self) -> (StatusCode, Value) {
        json_of(self.get("/health/nats").await).await
    }

    /// `/health/cache`.
    pub(crate) async fn cache_health(&self) -> Value {
        let (status, body) = json_of(self.get("/health/cache").await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// `/api/v2/nodes`: the registry's list.
    pub(crate) async fn nodes(&self) -> Vec<Value> {
        let (status, body) = json_of(self.get("/api/v2/nodes").await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().unwrap().clone()
    }

    /// `/metrics`, the Prometheus text.
    /// A scrape of `/metrics`. A test node with short timeouts may have closed the pooled
    /// connection while the test waited: then once more, on a new one.
    pub(crate) async fn metrics(&self) -> String {
        let scrape = || self.http.get(self.url("/metrics")).send();
        let response = match scrape().await {
            Ok(response) => response,
            Err(_) => scrape().await.unwrap(),
        };
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// The value of one series of `/metrics` (name and labels as exposed), 0 when absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
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
    pub(crate) async fn stop(self) {
        self.stop_keeping().await;
    }

    /// Stops the node and keeps what [`TestApp::restart`] needs to start it again.
    pub(crate) async fn stop_keeping(mut self) -> Kept {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
        let config = self.config.clone();
        Kept { dir: std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap()), config }
    }
}

/// A stopped node's data directory and configuration.
pub(crate) struct Kept {
    dir: TempDir,
    pub config: Config,
}

impl TestApp {
    /// Waits until `/health` says `status` (`ok` or `degraded`).
    pub(crate) async fn wait_health(&self, status: &str, within: Duration) {
        let what = format!("{} reports {status}", self.config.service.node_id);
        eventually(within, &what, || async { (self.health().await["status"] == status).then_some(()) }).await;
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

/// A leaf node whose leafnode connection goes to `center_leaf_port` on loopback.
pub(crate) async fn leaf_app(center_leaf_port: u16, node_id: &str, region: &str) -> TestApp {
    leaf_app_with(center_leaf_port, node_id, region, |_| {}).await
}

/// The same, with `adjust` applied to its configuration.
pub(crate) async fn leaf_app_with(
    center_leaf_port: u16,
    node_id: &str,
    region: &str,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let (node_id, region) = (node_id.to_string(), region.to_string());
    TestApp::spawn_with(move |c| {
        c.service.node_type = NodeType::Leaf;
        c.service.node_id = node_id;
        c.service.region = Some(region);
        c.nats.center_url = Some(format!("nats-leaf://127.0.0.1:{center_leaf_port}"));
        adjust(c);
    })
    .await
}
