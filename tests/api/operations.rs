//! The operator's kit in `deploy/` holds to the code: the systemd units verify, the alert rules
//! check and pass their unit tests, every metric the dashboard and the rules name is one a node
//! exports, a real Prometheus scrapes a node with the shipped rules loaded, and the runbook's
//! backup and restore bring every presence back. The commands are the runbook's
//! (docs/operations.md).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Pki, TestApp, eventually, json_of, program_on_a_free_port};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

/// Runs `program` with `args`; its output if it succeeded, else a panic with what it said.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

#[test]
fn the_systemd_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    for unit in ["presence-center.service", "presence-leaf.service"] {
        // The binary where the unit expects it: this build's.
        let text = std::fs::read_to_string(deploy(&format!("systemd/{unit}"))).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/presence serve --config /etc/presence/"));
        let text = text.replace("/usr/local/bin/presence", env!("CARGO_BIN_EXE_presence"));
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let said = run("systemd-analyze", &["verify", path.to_str().unwrap()]);
        assert!(said.trim().is_empty(), "systemd-analyze has remarks on {unit}:\n{said}");
    }
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let said = run("promtool", &["check", "rules", deploy("prometheus/alerts.yml").to_str().unwrap()]);
    assert!(said.contains("SUCCESS: 19 rules found"), "{said}");
    run("promtool", &["test", "rules", deploy("prometheus/alerts.test.yml").to_str().unwrap()]);
}

/// The metric names in `text` (PromQL or a dashboard): every `presence_...` word.
fn names_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("presence_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether `/metrics` (text format) exports `name`: a gauge as it is, a counter with `_total`,
/// a histogram with `_bucket`, `_sum`, `_count`.
fn exported(metrics: &str, name: &str) -> bool {
    metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")).any(|line| {
        let mut parts = line.split(' ');
        let (family, kind) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        match kind {
            "counter" => name == format!("{family}_total"),
            "histogram" => ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{family}{s}")),
            _ => name == family,
        }
    })
}

/// A node with what the kit looks at: a leafnode certificate (its expiry), the embedded server,
/// a webhook endpoint (nobody listens there: it retries, in an hour), a write and a read behind
/// it. (With the delivery tests' schedule of 4 × 200 ms the endpoint was disabled within a
/// second or two, and `PresenceWebhookDisabled` rightly fired on what the test calls healthy
/// whenever the rules were evaluated after that.)
async fn equipped_node(pki: &Pki) -> TestApp {
    let leaf = pki.center("node.test", &["leaf.test"]);
    let port = crate::helpers::free_port();
    let mut hook = crate::webhooks::delivery::endpoint(
        &format!("http://127.0.0.1:{port}/hook"),
        &crate::webhooks::secret(1),
    );
    hook.retry_schedule = Some(vec![Duration::from_secs(3600)]);
    let app = TestApp::spawn_with(move |c| {
        c.nats.leaf_tls = Some(leaf);
        c.webhooks = vec![hook];
    })
    .await;
    app.set("ops", json!({"status": "online"})).await;
    assert_eq!(app.read("ops").await.status(), StatusCode::OK);
    app
}

#[tokio::test]
async fn every_metric_of_the_dashboard_and_the_rules_is_exported() {
    let pki = Pki::new(&["node.test", "leaf.test"]);
    let app = equipped_node(&pki).await;
    let metrics = app.metrics().await;
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/presence.json")).unwrap())
            .expect("valid JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    for (source, text) in [("the dashboard", &exprs), ("the alert rules", &rules)] {
        let names = names_in(text);
        assert!(names.len() >= 10, "{source} names {names:?}");
        let missing: Vec<&String> = names.iter().filter(|n| !exported(&metrics, n)).collect();
        assert!(missing.is_empty(), "{source} names metrics no node exports: {missing:?}");
    }
    let expiry = metrics
        .lines()
        .find(|l| l.starts_with("presence_tls_certificate_expiry_timestamp_seconds{link=\"leafnode\"}"));
    let seconds: f64 =
        expiry.expect("the leafnode certificate's expiry").rsplit(' ').next().unwrap().parse().unwrap();
    let in_days = (seconds - chrono::Utc::now().timestamp() as f64) / 86400.0;
    assert!(
        (360.0..=366.0).contains(&in_days),
        "presence certs makes year-long certificates: {in_days} days"
    );
    app.stop().await;
}

/// Starts Debian's `prometheus` scraping `target` every second with the shipped rules; its
/// HTTP address. Killed by its pid when the guard drops.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [{:?}]\n\
                 scrape_configs:\n  - job_name: presence\n    static_configs: [{{ targets: [\"{target}\"] }}]\n",
                deploy("prometheus/alerts.yml")
            ),
        )
        .unwrap();
        let log = dir.path().join("prometheus.log");
        let prometheus = |port: u16| {
            let mut command = Command::new("prometheus");
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"));
            command
        };
        let (child, port) = program_on_a_free_port("prometheus", &log, prometheus, "/-/ready").await;
        Self { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    async fn api(&self, path: &str) -> Option<Value> {
        let body: Value = reqwest::get(format!("{}{path}", self.url)).await.ok()?.json().await.ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_a_node_with_the_shipped_rules() {
    let pki = Pki::new(&["node.test", "leaf.test"]);
    let app = equipped_node(&pki).await;
    let prometheus = Prometheus::start(app.addr).await;
    let instance = app.addr.to_string();
    let series = eventually(Duration::from_secs(60), "Prometheus has the node's series", || async {
        let data = prometheus.api("/api/v1/query?query=presence_updates_total").await?;
        let result = data["result"].as_array()?.first()?.clone();
        (result["metric"]["instance"] == instance.as_str()).then_some(result)
    })
    .await;
    assert_eq!(series["metric"]["job"], "presence");
    assert_eq!(series["value"][1], "1", "the one write");
    let rules = eventually(Duration::from_secs(30), "Prometheus loaded the rules", || async {
        let data = prometheus.api("/api/v1/rules").await?;
        let group = data["groups"].as_array()?.iter().find(|g| g["name"] == "presence")?.clone();
        Some(group["rules"].as_array()?.clone())
    })
    .await;
    assert_eq!(rules.len(), 19);
    let healthy = eventually(Duration::from_secs(30), "every rule evaluated", || async {
        let data = prometheus.api("/api/v1/rules").await?;
        let group = data["groups"].as_array()?.iter().find(|g| g["name"] == "presence")?.clone();
        let rules = group["rules"].as_array()?.clone();
        rules.iter().all(|r| r["health"] == "ok").then_some(rules)
    })
    .await;
    let firing: Vec<&Value> = healthy.iter().filter(|r| r["state"] == "firing").map(|r| &r["name"]).collect();
    assert!(firing.is_empty(), "a healthy node fires {firing:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_runbooks_cold_backup_restores_every_presence() {
    let store = tempfile::tempdir().unwrap();
    let data = store.path().join("nats-data");
    let d = data.clone();
    let app = TestApp::spawn_with(move |c| c.nats.data_dir = d).await;
    for user in ["ann", "bob", "cy"] {
        app.set(user, json!({"status": "busy", "message": format!("{user} before the backup")})).await;
    }
    app.stop().await;
    // docs/operations.md, "Backup and restore": with the node stopped.
    let archive = store.path().join("presence-backup.tar.gz");
    run("tar", &["-C", store.path().to_str().unwrap(), "-czf", archive.to_str().unwrap(), "nats-data"]);
    std::fs::remove_dir_all(&data).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    run("tar", &["-C", elsewhere.path().to_str().unwrap(), "-xzf", archive.to_str().unwrap()]);
    let restored = elsewhere.path().join("nats-data");
    let app = TestApp::spawn_with(move |c| c.nats.data_dir = restored).await;
    for user in ["ann", "bob", "cy"] {
        let (status, body) = json_of(app.read(user).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"][user]["message"], format!("{user} before the backup"));
    }
    let (_, history) = json_of(app.history("ann", None).await).await;
    assert_eq!(history["data"]["ann"].as_array().map(Vec::len), Some(1), "the audit log came back too");
    app.stop().await;
}

#[test]
fn the_example_configs_of_the_units_are_valid_and_take_their_secrets_from_the_environment() {
    let secret = |name: &str, value: &str| (name.to_string(), value.to_string());
    let env = [
        secret("JWT_SECRET", "jwt-secret-0123456789-0123456789-0123456789"),
        secret("PRESENCE_JS_KEY", "encryption-key-0123456789-0123456789-0123"),
        secret("OPS_PASSWORD", "operator-password-0123456789"),
    ];
    for (file, node_type) in [("center.yaml", "center"), ("leaf.yaml", "leaf")] {
        let text = std::fs::read_to_string(deploy(&format!("config/{file}"))).unwrap();
        let config =
            presence::config::from_sources(Some(&text), &env).unwrap_or_else(|e| panic!("{file}: {e}"));
        config.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(config.service.node_type.as_str(), node_type);
        assert!(config.service.tls.is_some() && config.nats.leaf_tls.is_some(), "{file}: TLS on every hop");
        assert!(config.auth.previous_jwt_secret.is_none(), "{file}: no previous secret outside a rotation");
    }
    let without = presence::config::from_sources(
        Some(&std::fs::read_to_string(deploy("config/center.yaml")).unwrap()),
        &env[..1],
    )
    .and_then(|c| c.validate().map(|()| c));
    assert!(without.is_err(), "the center refuses to start without its encryption key");
}
