//! Sessions: presence that follows connections (docs/sessions.md, "Sessions"; docs/architecture.md,
//! "Sessions").
//!
//! A client holds a session over the WebSocket (`hello` → `welcome`): one device of one user.
//! This node keeps a table of the sessions it holds, keyed by user and device, with what the
//! record should say of each (kind, idle or active). The record itself is the user's one KV
//! record, whose `devices` every node reads: a session is known everywhere as soon as its
//! record's change arrives, and the cache, the live feed and the events need nothing else.
//!
//! The table changes at once and in memory; the record follows it. A change marks the user
//! dirty, and a writer brings the user's record in line with the table ([`desired`]: a
//! compare-and-set on the record the cache holds). That is idempotent and order-free: a burst of
//! transitions costs at most one write after the first, a write that failed is simply tried
//! again, and a leaf cut off from its center catches up by syncing every user it holds.
//!
//! Writes happen only on transitions: a connect, a device going idle or active again, a session
//! ending (a close frame at once, an abrupt drop after `sessions.grace`). A connected, steady
//! user costs nothing. A device that reconnects within its grace, here or at another node,
//! shows nobody a change: here it is no write at all, elsewhere only the device's node changes,
//! which the live feed does not announce.
//!
//! No ghosts: the node that is lowest by id among those up ends the sessions of a node not heard
//! from for `sessions.node_timeout` plus the grace ([`crate::topology::Holdings`] says which
//! users it held), and each next node by id a step later if they still stand: a node that only
//! claims to be up cannot keep ghosts online. A node that restarts ends, after the grace, the sessions its records still
//! name but it no longer holds.

mod rooms;
mod table;
mod tasks;

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(crate) use table::JoinError;
use table::Table;

use crate::{
    config::SessionsConfig,
    directory::Directory,
    model::{DeviceKind, UserId, is_valid_token},
    rooms::Rooms,
    telemetry::Metrics,
    topology::{Holdings, Registry},
};

/// How often the table's timers (grace, idle) and the link are looked at.
const TICK: Duration = Duration::from_millis(250);
/// Dirty users synced concurrently.
const CONCURRENCY: usize = 64;
/// How much later than the node ranked before it each node ends a dead node's sessions.
const REAPER_STEP: Duration = Duration::from_secs(2);

/// Why a `hello` was refused (after its token was accepted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HelloError {
    #[error("device must be 1 to 128 characters of A-Z a-z 0-9 _ -")]
    Device,
    #[error("kind must be one of web, mobile, desktop, other")]
    Kind,
    #[error("too many devices: at most {0} per user")]
    TooManyDevices(usize),
}

/// The sessions this node holds, and the tasks that keep the records in line with them.
pub(crate) struct Sessions {
    table: Mutex<Table>,
    /// Something was marked dirty.
    wake: Notify,
    directory: Directory,
    holdings: Arc<Holdings>,
    registry: Arc<Registry>,
    /// Told of every change to a user's sessions here (their rooms are in them).
    rooms: Arc<Rooms>,
    settings: SessionsConfig,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Numbers each connection that holds a session.
    connections: AtomicU64,
}

/// One connection's session: ends (abruptly, unless [`Session::close`] says otherwise) when
/// dropped.
pub(crate) struct Session {
    sessions: Arc<Sessions>,
    user: Arc<str>,
    device: Arc<str>,
    /// This connection, among the device's.
    conn: u64,
    closed: bool,
    ended: CancellationToken,
}

impl Session {
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn device(&self) -> &str {
        &self.device
    }

    /// Cancelled when the user is erased: the session is over, and its connection closes.
    pub(crate) fn erasure(&self) -> CancellationToken {
        self.ended.clone()
    }

    /// The person is active on this device.
    pub(crate) fn activity(&self) {
        let mut table = self.sessions.lock();
        if table.activity(&self.user, &self.device, Instant::now()) {
            self.sessions.mark(&mut table, self.user.clone());
        }
    }

    /// The client closed the connection properly: the session ends at once.
    pub(crate) fn close(mut self) {
        self.closed = true;
        self.sessions.end(&self.user, &self.device, self.conn, true);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.closed {
            self.sessions.end(&self.user, &self.device, self.conn, false);
        }
    }
}

impl Sessions {
    pub(crate) fn new(
        directory: Directory,
        (holdings, registry, rooms): (Arc<Holdings>, Arc<Registry>, Arc<Rooms>),
        settings: SessionsConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(Table::starting()),
            wake: Notify::new(),
            directory,
            holdings,
            registry,
            rooms,
            settings,
            metrics,
            started: Instant::now(),
            connections: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().expect("sessions lock")
    }

    /// `user`'s sessions here changed: their record must follow, and the rooms know at once.
    fn mark(&self, table: &mut Table, user: Arc<str>) {
        self.rooms.local(&user, table.held(&user));
        if table.dirty.insert(user) {
            self.wake.notify_one();
        }
    }

    /// A `hello` from `user` (its token accepted) for `device` of `kind`: the session starts,
    /// or continues if the device is in its grace (then nobody sees a change).
    pub(crate) async fn connect(
        self: &Arc<Self>,
        user: &UserId,
        device: &str,
        kind: &str,
    ) -> Result<Session, HelloError> {
        if !is_valid_token(device) {
            return Err(HelloError::Device);
        }
        let kind: DeviceKind = kind.parse().map_err(|()| HelloError::Kind)?;
        // Devices held at other nodes count too, as far as this node knows of them; and this
        // device's rooms, if it comes from another node within its grace (kept for it to join
        // them again).
        let record = self.directory.peek(user).await;
        let mine = self.directory.node_id();
        let others = record.as_ref().and_then(|r| r.presence.as_ref()).map_or(&[][..], |p| p.devices());
        let others: Vec<_> = others.iter().filter(|d| &*d.node != mine).collect();
        let elsewhere: Vec<Box<str>> = others.iter().map(|d| d.id.clone()).collect();
        let rooms = others.iter().find(|d| *d.id == *device).map_or(&[][..], |d| &d.rooms[..]);
        let user: Arc<str> = Arc::from(user.as_str());
        let device: Arc<str> = Arc::from(device);
        let mut table = self.lock();
        let count = table.devices_besides(&user, &device, &elsewhere);
        if count >= self.settings.max_devices {
            return Err(HelloError::TooManyDevices(self.settings.max_devices));
        }
        let now = Instant::now();
        let ended = table.connect(&user, &device, kind, now);
        table.adopt_rooms(&user, &device, rooms, now + self.settings.grace);
        self.mark(&mut table, user.clone());
        let conn = self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Session { sessions: self.clone(), user, device, conn, closed: false, ended })
    }

    fn end(&self, user: &Arc<str>, device: &str, conn: u64, clean: bool) {
        let mut table = self.lock();
        let until = (!clean).then(|| Instant::now() + self.settings.grace);
        if table.disconnect(user, device, conn, until) {
            self.mark(&mut table, user.clone());
        }
    }

    /// Marks every one of `users` dirty.
    fn mark_all(&self, users: impl IntoIterator<Item = Arc<str>>) {
        let mut table = self.lock();
        for user in users {
            self.mark(&mut table, user);
        }
    }

    /// The sessions' tasks, until `stop`: the timers and the reaper, the writer.
    pub(crate) fn spawn(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>, stop: &CancellationToken) {
        let touched = self.holdings.listen(self.directory.node_id());
        tasks.spawn(self.clone().tick(stop.clone()));
        tasks.spawn(self.clone().write(stop.clone()));
        if let Some(touched) = touched {
            tasks.spawn(self.clone().follow(touched, stop.clone()));
        }
    }
}
