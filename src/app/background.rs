//! The node's background tasks, stopped together.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Background tasks: stopped together by [`Background::shutdown`], or cancelled and aborted when
/// dropped (a failed start-up, a panic), so that none outlives its node.
pub(crate) struct Background {
    pub stop: CancellationToken,
    pub tasks: JoinSet<()>,
}

impl Background {
    pub(super) fn new() -> Self {
        Self { stop: CancellationToken::new(), tasks: JoinSet::new() }
    }

    /// Tells every task to stop and waits for them, at most `grace`.
    pub(super) async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("background tasks still running after the shutdown timeout; aborting them");
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
