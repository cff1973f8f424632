//! How the embedded server is doing: whether it runs and how often it was restarted (for
//! `/health`), and whose server answers at its URL (this run's own, or a foreign one).

use std::{
    collections::VecDeque,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use crate::config::{SERVICE_USER, Secret};

/// Restarts within [`FLAPPING_WINDOW`] that make a child count as one that keeps dying.
const FLAPPING_RESTARTS: usize = 3;
const FLAPPING_WINDOW: Duration = Duration::from_secs(600);

/// How the embedded server is doing, for `/health`.
#[derive(Debug, Default)]
pub(crate) struct ServerStatus {
    running: AtomicBool,
    /// The running child's process id (0 while none runs).
    pid: AtomicU32,
    restarts: AtomicU64,
    recent: Mutex<VecDeque<Instant>>,
}

impl ServerStatus {
    /// The state of a server that just started and serves.
    pub(super) fn started(pid: Option<u32>) -> Self {
        let status = Self::default();
        status.running.store(true, Relaxed);
        status.pid.store(pid.unwrap_or(0), Relaxed);
        status
    }

    /// The running child's process id.
    pub(super) fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Relaxed)).filter(|pid| *pid != 0)
    }

    pub(crate) fn running(&self) -> bool {
        self.running.load(Relaxed)
    }

    /// Asks the running child to reload its configuration (SIGHUP, as `nats-server --signal
    /// reload`): it re-reads its certificate and key files even when the configuration is
    /// unchanged. False if no child runs.
    pub(crate) fn reload(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) == 0 }
    }

    /// Restarts since the service started.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Relaxed)
    }

    /// The child keeps dying: it was restarted [`FLAPPING_RESTARTS`] times within
    /// [`FLAPPING_WINDOW`].
    pub(crate) fn flapping(&self) -> bool {
        let recent = self.recent.lock().expect("status lock");
        recent.iter().filter(|at| at.elapsed() < FLAPPING_WINDOW).count() >= FLAPPING_RESTARTS
    }

    pub(super) fn exited(&self) {
        self.running.store(false, Relaxed);
        self.pid.store(0, Relaxed);
    }

    pub(super) fn restarted(&self, pid: Option<u32>) {
        self.running.store(true, Relaxed);
        self.pid.store(pid.unwrap_or(0), Relaxed);
        self.restarts.fetch_add(1, Relaxed);
        let mut recent = self.recent.lock().expect("status lock");
        recent.retain(|at| at.elapsed() < FLAPPING_WINDOW);
        recent.push_back(Instant::now());
    }
}

/// What answered at the embedded server's URL.
pub(super) enum Answer {
    /// This run's own server, serving JetStream.
    Ours,
    /// A server with another name: not ours.
    Foreign(String),
    /// Nothing yet, or not JetStream yet.
    Nothing,
}

/// Who should answer at the embedded server's URL, and how to reach it.
pub(super) struct Expected<'a> {
    pub server_name: &'a str,
    pub password: &'a Secret,
    /// With `nats.tls`: the client port speaks TLS only, checked against this CA.
    pub ca_file: Option<&'a Path>,
}

pub(super) async fn probe(url: &str, expected: &Expected<'_>) -> Answer {
    let Expected { server_name, password, ca_file } = *expected;
    let probe = async {
        let mut options =
            async_nats::ConnectOptions::with_user_and_password(SERVICE_USER.into(), password.expose().into())
                .connection_timeout(Duration::from_millis(500));
        if let Some(ca) = ca_file {
            options = options.require_tls(true).add_root_certificates(ca.to_path_buf());
        }
        let client = options.connect(url).await.ok()?;
        let name = client.server_info().server_name;
        let answer = if name != server_name {
            Answer::Foreign(name)
        } else if async_nats::jetstream::new(client.clone()).query_account().await.is_ok() {
            Answer::Ours
        } else {
            Answer::Nothing
        };
        let _ = client.drain().await;
        Some(answer)
    };
    tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten().unwrap_or(Answer::Nothing)
}
