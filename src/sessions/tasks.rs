//! The sessions' background tasks: the ticker (graces, idleness, failed syncs, the sessions of
//! dead nodes, a re-sync when the link comes back), the writer that brings each dirty user's
//! record in line with the table, and the follower of records that name this node.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use tokio::{
    sync::{Semaphore, mpsc::UnboundedReceiver},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{
    CONCURRENCY, REAPER_STEP, Sessions, TICK,
    table::{Table, desired},
};
use crate::{
    model::{Held, UserId},
    telemetry::{chain, metrics::OutcomeLabels},
};

impl Sessions {
    /// Every [`TICK`]: graces that ran out and devices gone idle; once a second, failed syncs
    /// again, the sessions of dead nodes, and (when the link came back) every user held here.
    pub(super) async fn tick(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reachable_since: Option<Instant> = None;
        let mut own_cleaned = false;
        let mut last_second = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let now = Instant::now();
            {
                let mut table = self.lock();
                let changed = table.timers(now, self.settings.idle_after);
                for user in changed {
                    self.mark(&mut table, user);
                }
                self.metrics.sessions_held.set(table.len() as i64);
            }
            let reachable = self.directory.reachable();
            match (reachable, reachable_since) {
                (true, None) => {
                    reachable_since = Some(now);
                    // Back (or up for the first time): whatever failed or was missed meanwhile.
                    let users: Vec<Arc<str>> = self.lock().users().collect();
                    self.mark_all(users);
                }
                (false, Some(_)) => reachable_since = None,
                _ => {}
            }
            if now.duration_since(last_second) < Duration::from_secs(1) {
                continue;
            }
            last_second = now;
            let interval = self.settings.write_interval;
            self.lock().written.retain(|_, at| now.duration_since(*at) < interval);
            let failed: Vec<Arc<str>> = self.lock().failed.drain().collect();
            self.mark_all(failed);
            let Some(since) = reachable_since else { continue };
            if !own_cleaned && self.started.elapsed() >= self.settings.grace {
                own_cleaned = true;
                self.lock().seen = None;
                self.mark_held_at(|node| node == self.directory.node_id());
            }
            // Only a node that has heard heartbeats for a while can tell who is silent.
            if since.elapsed() >= self.settings.node_timeout {
                let wait = REAPER_STEP * self.reaper_rank();
                self.mark_held_at(|node| self.dead_for(node, wait));
            }
        }
    }

    /// Marks dirty every user with a device held at a node for which `at` is true.
    fn mark_held_at(&self, at: impl Fn(&str) -> bool) {
        self.mark_all(self.holdings.held_at(at).into_iter().map(|(user, _)| user));
    }

    /// Whether `node` has not been heard from for `sessions.node_timeout` plus the grace (never,
    /// since this node started, counts from the start).
    fn dead(&self, node: &str) -> bool {
        self.dead_for(node, Duration::ZERO)
    }

    /// The same, `wait` longer.
    fn dead_for(&self, node: &str, wait: Duration) -> bool {
        if node == self.directory.node_id() {
            return false;
        }
        let silent = self.registry.last_heard(node).unwrap_or(self.started).elapsed();
        silent >= self.settings.node_timeout + self.settings.grace + wait
    }

    /// Where this node stands among those that end dead nodes' sessions: the number of nodes up
    /// with a lower id. The lowest ends them first; each next one [`REAPER_STEP`] later, if the
    /// records still name the dead node. So a node that only claims to be up (forged heartbeats,
    /// a node that hears but cannot write) delays the end of a dead node's sessions by a step,
    /// and never stops it. (Each write is a compare-and-set: two at once are harmless.)
    fn reaper_rank(&self) -> u32 {
        let me = self.directory.node_id();
        let nodes = self.registry.nodes(0);
        let lower = nodes.iter().filter(|n| n.up && *n.node_id < *me && !self.dead(&n.node_id));
        u32::try_from(lower.count()).unwrap_or(u32::MAX)
    }

    /// Brings the records of dirty users in line with the table, [`CONCURRENCY`] at a time.
    /// A user is synced by one task at a time; one marked dirty meanwhile is synced again after,
    /// and no sooner than `sessions.write_interval` after the last write: however fast a user's
    /// devices come and go, their sessions cost at most one record write (and one event) per
    /// interval at this node, and the next write says where the transitions ended.
    pub(super) async fn write(self: Arc<Self>, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let mut running = JoinSet::new();
        let interval = self.settings.write_interval;
        loop {
            let now = Instant::now();
            let (ready, next) = {
                let mut table = self.lock();
                let Table { dirty, syncing, written, .. } = &mut *table;
                let mut next: Option<Instant> = None;
                let mut ready = Vec::new();
                for user in dirty.iter().filter(|u| !syncing.contains(*u)) {
                    match written.get(user).map(|at| *at + interval) {
                        Some(due) if due > now => next = Some(next.map_or(due, |n| n.min(due))),
                        _ => ready.push(user.clone()),
                    }
                }
                for user in &ready {
                    dirty.remove(user);
                    syncing.insert(user.clone());
                }
                (ready, next)
            };
            for user in ready {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let this = self.clone();
                running.spawn(async move {
                    let wrote = this.sync(user.clone()).await;
                    drop(slot);
                    let mut table = this.lock();
                    if wrote {
                        table.written.insert(user.clone(), Instant::now());
                    }
                    table.syncing.remove(&user);
                    if table.dirty.contains(&user) {
                        this.wake.notify_one();
                    }
                });
                while running.try_join_next().is_some() {}
            }
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = due => {}
            }
        }
    }

    /// Users whose record changed and named this node before or after: if the record no longer
    /// says what the table does (another node's write, the reaper after an outage), sync it.
    /// An erased user's sessions here end instead, and their connections close: nothing writes
    /// the user back.
    pub(super) async fn follow(
        self: Arc<Self>,
        mut touched: UnboundedReceiver<(Arc<str>, bool)>,
        stop: CancellationToken,
    ) {
        loop {
            let (user, erased) = tokio::select! {
                () = stop.cancelled() => return,
                user = touched.recv() => match user {
                    Some(user) => user,
                    None => return,
                },
            };
            let mut table = self.lock();
            if !erased {
                self.mark(&mut table, user);
                continue;
            }
            let ended = table.erase(&user);
            self.rooms.local(&user, Vec::new());
            if ended > 0 {
                tracing::info!(user = %user, sessions = ended, "an erased user's sessions ended");
            }
        }
    }

    /// Makes `user`'s record say what the table says of the devices held here (and drops the
    /// devices of dead nodes). True if it wrote.
    async fn sync(&self, user: Arc<str>) -> bool {
        let Ok(id) = UserId::parse(&user) else { return false };
        let node = self.directory.node_id();
        let first_grace = self.started + self.settings.grace;
        let result = self
            .directory
            .modify(&id, &user, |previous| {
                let held: Vec<Held> = {
                    let mut table = self.lock();
                    if let Some(record) = previous {
                        table.adopt(&user, record, node, first_grace);
                    }
                    let held = table.held(&user);
                    self.rooms.local(&user, held.clone());
                    held
                };
                desired(&user, previous, &held, node, &|n: &str| self.dead(n), Utc::now())
            })
            .await;
        let outcome = match result {
            Ok(true) => "written",
            Ok(false) => "unchanged",
            Err(e) => {
                tracing::debug!(user = %user, error = %chain(&e), "session sync failed; retrying");
                let mut table = self.lock();
                table.failed.insert(user);
                "failed"
            }
        };
        self.metrics.session_writes.get_or_create(&OutcomeLabels { outcome }).inc();
        outcome == "written"
    }
}
