//! Embedded NATS: `nats-server` as a supervised child process.
//!
//! The child gets a parent-death signal (SIGTERM), so that a `kill -9` of the service does not
//! leave an orphaned server holding the ports. Linux sends that signal when the *thread* that
//! forked exits, so children are only spawned from threads that live as long as the service:
//! the thread that runs start-up and the runtime's worker threads (never `spawn_blocking`). If the child dies while the service runs, it is
//! restarted with exponential backoff; the service's NATS client reconnects by itself. On
//! shutdown the child gets SIGTERM (a clean JetStream shutdown) and SIGKILL if it lingers.

use std::{
    collections::VecDeque,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::{
    NatsError, at_rest, server,
    status::{Answer, Expected, ServerStatus, probe},
};
use crate::config::{Config, NodeType, SERVICE_USER, Secret};

/// The service's generated password on its embedded server, inside the data directory.
const PASSWORD_FILE: &str = "nats-password";
/// The leafnode password a center generates when none is configured, inside the data directory.
pub(crate) const LEAF_PASSWORD_FILE: &str = "nats-leaf-password";

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A child that ran this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of the child's log kept to explain a failed start.
const LOG_TAIL: usize = 20;

/// A running embedded `nats-server`, restarted when it dies, stopped by [`EmbeddedServer::stop`].
pub(crate) struct EmbeddedServer {
    client_url: String,
    server_name: String,
    /// The service's own password on the server (user [`SERVICE_USER`]).
    password: Secret,
    status: Arc<ServerStatus>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    /// The store and the server's files (absolute).
    data_dir: PathBuf,
}

struct Launch {
    bin: PathBuf,
    conf: PathBuf,
    /// Set in the child's environment (when `Some`): the encryption keys, and
    /// on a leaf the center URLs with its password.
    env: Vec<(String, Option<Secret>)>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl EmbeddedServer {
    /// Writes the server's config into the data directory, starts it, and waits until it serves
    /// JetStream (at most `nats.startup_timeout`).
    ///
    /// Each run of the service names its server anew (`{node_id}-{8 hex digits}`), so that a
    /// client can tell this node's own server from any other that answers on its port.
    pub(crate) async fn start(config: &Config, node_id: &str) -> Result<Self, NatsError> {
        let bin = server::find_binary(config.nats.server_bin.as_deref())?;
        let version = server::check_version(&bin).await?;
        let data_dir = absolute_dir(&config.nats.data_dir)?;
        let conf = data_dir.join("nats-server.conf");
        let mut nonce = [0u8; 4];
        rand::fill(&mut nonce);
        let server_name = format!("{node_id}-{}", hex::encode(nonce));
        let (password, _) =
            crate::auth::secret::load_or_generate(&data_dir.join(PASSWORD_FILE)).map_err(|source| {
                NatsError::Io { context: "cannot load or create the NATS service password".into(), source }
            })?;
        let leaf_password = match (config.service.node_type, &config.nats.leaf_password) {
            // Leaves authenticate by certificate when the center has nats.leaf_tls.
            (NodeType::Leaf, _) => None,
            _ if config.nats.leaf_tls.is_some() => None,
            (NodeType::Center, Some(configured)) => Some(configured.clone()),
            (NodeType::Center, None) => Some(
                crate::auth::secret::load_or_generate(&data_dir.join(LEAF_PASSWORD_FILE))
                    .map_err(|source| NatsError::Io {
                        context: "cannot load or create the leafnode password".into(),
                        source,
                    })?
                    .0,
            ),
        };
        let text = server::render_config(config, &server_name, &data_dir, &password, leaf_password.as_ref());
        write_private(&conf, &text).map_err(|source| NatsError::Io {
            context: format!("cannot write {}", conf.display()),
            source,
        })?;
        let mut env: Vec<(String, Option<Secret>)> =
            at_rest::environment(config).into_iter().map(|(name, value)| (name.to_string(), value)).collect();
        env.extend(server::leaf_remotes(config).into_iter().map(|(name, url)| (name, Some(url))));
        let launch = Launch { bin, conf, env, tail: Arc::default() };
        let (mut child, log) = launch.spawn()?;
        let connect_host = match config.nats.host {
            IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(a) if a.is_unspecified() => "[::1]".to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        let client_url = format!("nats://{connect_host}:{}", config.nats.port);
        tracing::info!(%version, url = %client_url, data_dir = %data_dir.display(), "starting embedded nats-server");
        let expected = Expected {
            server_name: &server_name,
            password: &password,
            ca_file: config.nats.tls.as_ref().and_then(|t| t.ca_file.as_deref()),
        };
        let ready = wait_ready(&client_url, &expected, &mut child, log, &launch, config.nats.startup_timeout);
        if let Err(e) = ready.await {
            terminate(&mut child).await;
            return Err(e);
        }
        tracing::info!(url = %client_url, server_name, "embedded nats-server serves JetStream");
        let status = Arc::new(ServerStatus::started(child.id()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(supervise(child, launch, status.clone(), shutdown.clone()));
        Ok(Self { client_url, server_name, password, status, shutdown, task, data_dir })
    }

    pub(crate) fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The name this run gave its server: a client connected elsewhere sees another.
    pub(crate) fn server_name(&self) -> &str {
        &self.server_name
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The service's credentials on this server.
    pub(crate) fn credentials(&self) -> (&str, &Secret) {
        (SERVICE_USER, &self.password)
    }

    pub(crate) fn status(&self) -> Arc<ServerStatus> {
        self.status.clone()
    }

    /// Stops the server cleanly (SIGTERM, then SIGKILL after a grace period).
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// The only variables of the service's environment the embedded server inherits.
const INHERITED: &[&str] = &["PATH", "HOME", "TZ", "LANG", "LC_ALL", "TMPDIR"];

impl Launch {
    /// Starts the server; the handle is the task that forwards its log, done at its exit.
    fn spawn(&self) -> Result<(Child, JoinHandle<()>), NatsError> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Nothing of the service's environment (its JWT secret, passwords in PRESENCE_...
            // overrides) but what the server needs: its own variables and a few harmless ones.
            .env_clear()
            .envs(INHERITED.iter().filter_map(|name| Some((name, std::env::var_os(name)?))));
        for (name, value) in &self.env {
            if let Some(value) = value {
                cmd.env(name, value.expose());
            }
        }
        let parent = std::process::id();
        // SAFETY: between fork and exec the closure calls only async-signal-safe functions.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the signal was armed.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| NatsError::Io {
            context: format!("cannot start {}", self.bin.display()),
            source,
        })?;
        let log = match child.stderr.take() {
            Some(stderr) => tokio::spawn(forward_log(stderr, self.tail.clone())),
            None => tokio::spawn(async {}),
        };
        Ok((child, log))
    }

    fn tail(&self) -> String {
        let tail = self.tail.lock().expect("log tail lock");
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Forwards the server's log lines to tracing and keeps the last few for error messages.
async fn forward_log(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("[ERR]") || line.contains("[FTL]") {
            tracing::error!(target: "nats_server", "{line}");
        } else if line.contains("[WRN]") {
            tracing::warn!(target: "nats_server", "{line}");
        } else {
            tracing::debug!(target: "nats_server", "{line}");
        }
        let mut tail = tail.lock().expect("log tail lock");
        if tail.len() == LOG_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Polls until a client can reach JetStream on the new server, or the child exits, or time runs out.
async fn wait_ready(
    url: &str,
    expected: &Expected<'_>,
    child: &mut Child,
    log: JoinHandle<()>,
    launch: &Launch,
    limit: Duration,
) -> Result<(), NatsError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|source| NatsError::Io { context: "cannot wait for nats-server".into(), source })?
        {
            // The forwarder ends at the pipe's end of file, with the last lines in the tail.
            let _ = tokio::time::timeout(Duration::from_secs(2), log).await;
            return Err(NatsError::Start(format!(
                "nats-server exited during start-up ({status}):\n{}",
                launch.tail()
            )));
        }
        match probe(url, expected).await {
            Answer::Ours => return Ok(()),
            Answer::Foreign(other) => {
                return Err(NatsError::Start(format!(
                    "another nats-server (server_name {other:?}) already answers at {url}; stop it, or give \
                     this node a free nats.port (--nats-port)"
                )));
            }
            Answer::Nothing => {}
        }
        if Instant::now() >= deadline {
            return Err(NatsError::Start(format!(
                "nats-server did not serve JetStream within {limit:?}:\n{}",
                launch.tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn supervise(mut child: Child, launch: Launch, status: Arc<ServerStatus>, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_START;
    let mut started = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                terminate(&mut child).await;
                return;
            }
            exit = child.wait() => {
                status.exited();
                tracing::error!(status = ?exit.ok(), tail = %launch.tail(), "embedded nats-server exited; restarting");
            }
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff = BACKOFF_START;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            match launch.spawn() {
                Ok((next, _log)) => {
                    tracing::info!(
                        pid = next.id(),
                        restarts = status.restarts() + 1,
                        "embedded nats-server restarted"
                    );
                    status.restarted(next.id());
                    child = next;
                    started = Instant::now();
                    break;
                }
                Err(e) => tracing::error!(error = %e, "cannot restart embedded nats-server"),
            }
        }
    }
}

/// SIGTERM, then SIGKILL if the server has not exited within the grace period.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            tracing::info!("embedded nats-server stopped");
            return;
        }
        tracing::warn!("embedded nats-server ignored SIGTERM; killing it");
    }
    let _ = child.kill().await;
}

/// Writes `text` to `path` readable by the owner only (the server's config holds passwords).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

fn absolute_dir(dir: &Path) -> Result<PathBuf, NatsError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| dir.canonicalize())
        .map_err(|source| NatsError::Io { context: format!("nats.data_dir {}", dir.display()), source })
}
