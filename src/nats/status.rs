//! How the embedded server is doing: whether it runs and how often it was restarted (for
//! `/health`), and whose server answers at its URL (this run's own, or a foreign one).

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
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
    restarts: AtomicU64,
    recent: Mutex<VecDeque<Instant>>,
}

impl ServerStatus {
    /// The state of a server that just started and serves.
    pub(super) fn started() -> Self {
        let status = Self::default();
        status.running.store(true, Relaxed);
        status
    }

    pub(crate) fn running(&self) -> bool {
        self.running.load(Relaxed)
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
    }

    pub(super) fn restarted(&self) {
        self.running.store(true, Relaxed);
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

pub(super) async fn probe(url: &str, server_name: &str, password: &Secret) -> Answer {
    let probe = async {
        let client =
            async_nats::ConnectOptions::with_user_and_password(SERVICE_USER.into(), password.expose().into())
                .connection_timeout(Duration::from_millis(500))
                .connect(url)
                .await
                .ok()?;
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
