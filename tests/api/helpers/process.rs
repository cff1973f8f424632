//! The real `presence` binary as a child process, and process utilities (kill -9, liveness, free
//! ports).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::StatusCode;

use super::{ISSUER, LEAF_PASSWORD, SECRET, free_port, lost_its_port};

/// The real `presence` binary, run against its own data directory and ports.
pub(crate) struct ServiceProcess {
    pub child: Child,
    pub http_port: u16,
    pub nats_port: u16,
    pub leaf_port: u16,
    pub dir: PathBuf,
    /// The environment the binary was started with.
    env: Vec<(String, String)>,
    /// Whether this helper chose the ports (then it may choose them again, see `wait_healthy`).
    chosen: bool,
}

impl ServiceProcess {
    /// Writes a config into `dir` (with `extra` YAML appended) and starts the binary on it.
    pub(crate) fn start(dir: &Path, ports: Option<(u16, u16, u16)>, secret: Option<&str>) -> Self {
        Self::start_logging(dir, ports, secret, "level: debug\n  format: json")
    }

    /// The same, with `logging` (indented YAML under `logging:`) as given.
    pub(crate) fn start_logging(
        dir: &Path,
        ports: Option<(u16, u16, u16)>,
        secret: Option<&str>,
        logging: &str,
    ) -> Self {
        Self::start_with(dir, ports, secret, (logging, ""))
    }

    /// The same, with `extra` (top-level YAML sections) appended.
    pub(crate) fn start_with(
        dir: &Path,
        ports: Option<(u16, u16, u16)>,
        secret: Option<&str>,
        (logging, extra): (&str, &str),
    ) -> Self {
        let chosen = ports.is_none();
        let (http_port, nats_port, leaf_port) =
            ports.unwrap_or_else(|| (free_port(), free_port(), free_port()));
        let secret_line = secret.map(|s| format!("  jwt_secret: {s}\n")).unwrap_or_default();
        let yaml = format!(
            "service:\n  host: 127.0.0.1\n  port: {http_port}\n  node_id: proc-node\n\
             nats:\n  embedded: true\n  port: {nats_port}\n  leaf_port: {leaf_port}\n  data_dir: {data}\n  leaf_password: {leaf:?}\n\
             auth:\n{secret_line}  jwt_issuer: {ISSUER}\nlogging:\n  {logging}\n{extra}",
            data = dir.join("nats-data").display(),
            leaf = LEAF_PASSWORD,
        );
        let mut process = Self::start_yaml(dir, http_port, &yaml);
        (process.nats_port, process.leaf_port, process.chosen) = (nats_port, leaf_port, chosen);
        process
    }

    /// A leaf of the center whose leafnode port is `center_leaf_port`, with `extra` (top-level
    /// YAML sections) appended and `nats_extra` (lines under `nats:`, each indented) added.
    pub(crate) fn start_leaf(
        dir: &Path,
        center_leaf_port: u16,
        node_id: &str,
        nats_extra: &str,
        extra: &str,
    ) -> Self {
        let (http, nats, leaf) = (free_port(), free_port(), free_port());
        let yaml = format!(
            "service:\n  host: 127.0.0.1\n  port: {http}\n  node_id: {node_id}\n  node_type: leaf\n  region: ap-south-1\n\
             nats:\n  embedded: true\n  port: {nats}\n  leaf_port: {leaf}\n  data_dir: {data}\n  leaf_password: {password:?}\n  center_url: nats-leaf://127.0.0.1:{center_leaf_port}\n{nats_extra}\
             auth:\n  jwt_secret: {SECRET}\n  jwt_issuer: {ISSUER}\n{extra}",
            data = dir.join("nats-data").display(),
            password = LEAF_PASSWORD,
        );
        Self::start_yaml(dir, http, &yaml).on_free_ports(nats, leaf)
    }

    /// What the process has written to its log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default()
    }

    /// Starts the binary on `yaml`, written into `dir`, serving HTTP on `http_port`.
    pub(crate) fn start_yaml(dir: &Path, http_port: u16, yaml: &str) -> Self {
        Self::start_yaml_env(dir, http_port, yaml, &[])
    }

    /// The same, with `env` added to the binary's environment.
    pub(crate) fn start_yaml_env(dir: &Path, http_port: u16, yaml: &str, env: &[(&str, &str)]) -> Self {
        std::fs::write(dir.join("presence.yaml"), yaml).unwrap();
        let env: Vec<_> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let child = spawn(dir, &env);
        Self { child, http_port, nats_port: 0, leaf_port: 0, dir: dir.to_path_buf(), env, chosen: false }
    }

    /// Its configuration's NATS ports, which like its HTTP port the test took from `free_port`:
    /// [`ServiceProcess::wait_healthy`] may choose all three again if one was taken.
    pub(crate) fn on_free_ports(mut self, nats: u16, leaf: u16) -> Self {
        (self.nats_port, self.leaf_port, self.chosen) = (nats, leaf, true);
        self
    }

    /// Starts the binary again on fresh ports, after it could not take the ones this helper
    /// chose: another test's outgoing connection may take a free port between its choice and
    /// the service's bind (both come from the kernel's ephemeral range).
    async fn choose_ports_again(&mut self) {
        // Its embedded nats-server is killed as it exits: wait until it has let the store go.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.nats_pid().is_some_and(is_alive) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let fresh = (free_port(), free_port(), free_port());
        let mut yaml = std::fs::read_to_string(self.config_path()).unwrap();
        for (old, new) in [(self.http_port, fresh.0), (self.nats_port, fresh.1), (self.leaf_port, fresh.2)] {
            yaml = yaml.replace(&format!(": {old}\n"), &format!(": {new}\n"));
        }
        std::fs::write(self.config_path(), yaml).unwrap();
        (self.http_port, self.nats_port, self.leaf_port) = fresh;
        self.child = spawn(&self.dir, &self.env);
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

    /// Waits until `/health` answers 200 (on fresh ports, if the ones this helper chose were
    /// taken before the service could bind them).
    pub(crate) async fn wait_healthy(&mut self) {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut attempts = 1;
        loop {
            if let Ok(r) = client.get(self.url("/health")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log();
                if self.chosen && attempts < 3 && lost_its_port(&log) {
                    attempts += 1;
                    self.choose_ports_again().await;
                    continue;
                }
                panic!("service exited ({status}): {log}");
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

/// The binary, serving on the configuration in `dir` with `env` added to its environment, its
/// output written to `dir/service.log`.
fn spawn(dir: &Path, env: &[(String, String)]) -> Child {
    let log = std::fs::File::create(dir.join("service.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["serve", "--config"])
        .arg(dir.join("presence.yaml"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
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
