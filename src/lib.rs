//! Presence: who is online, away, busy or offline, with a status message and a last-seen time.
//!
//! # A tour
//!
//! From the bottom layer up; a module imports only modules listed before it.
//! `docs/architecture.md` tells the same story with the reasons.
//!
//! - `model`: user ids, statuses, a presence as stored, held and shown (expiry is applied at
//!   read time here), and a `Record` (a presence at a KV revision).
//! - `planted`: bugs planted on purpose for the history checker, in a `planted-bugs` build only.
//! - `link`: the node's view of its NATS link: reachable, cache possibly stale, watcher position.
//! - `config`: the YAML configuration, with defaults, `${VAR}` interpolation, `PRESENCE_...`
//!   overrides and validation that names the key.
//! - `telemetry`: logging, Prometheus metrics, error chains for logs.
//! - `auth`: HS256 tokens: verification, minting, where the secret comes from.
//! - `tls`: the rustls provider (ring only), the reloadable HTTPS certificate, and the
//!   development certificates of `presence certs`.
//! - `nats`: the embedded `nats-server` (found, version-checked, configured, supervised), the
//!   client connection, the `Caller` (deadline, latency metric, circuit breaker) that every
//!   NATS request goes through, and the `Binding` of handles a leaf reaches only once its center
//!   answers.
//! - `cache`: the in-memory cache of records (quick_cache).
//! - `store`: the one door to the JetStream KV bucket: get, put, compare-and-set, purge, watch;
//!   and on a leaf, the region's copy of it (a mirror on the leaf's disk).
//! - `topology`: hub and spoke: heartbeats on `presence.sync.{node_id}`, the node registry.
//! - `lifecycle`: the expiry schedule and job (one `offline` write and one expire event per
//!   expiry across all nodes), the update and expire events, the audit log, history, erasure,
//!   the audit log's repair (a center stores the events a crash left out), and the notices for
//!   webhooks stored beside it.
//! - `live`: the live feed: every change the node learns of, numbered, kept for resuming
//!   clients and handed to the subscribers that watch its user; expiries announced as they
//!   happen, the link's stale and fresh, slow clients dropped.
//! - `rooms`: who is in each room, on which devices, with what meta, and who is typing: a
//!   membership rides in its device's session (and so in the user's record); each node's index
//!   is fed by the records that land and by its own sessions, and sends each room's changes to
//!   its watchers in batches; typing crosses nodes as NATS core messages. On a center whose
//!   webhooks hear rooms, `rooms::Occupancy` keeps who is in which room as the records alone say.
//! - `coherence`: where a record lands on this node (`Landing`: the expiry schedule, the cache
//!   and the live feed, in that order, under one revision rule, for the watcher and the write
//!   path alike; a write on its way follows its user's landings, `Follow`), the watcher (the
//!   bucket's changes, landed) and the monitor (link checks, watcher lag, rebuild of a replaced
//!   bucket); a leaf's copy of the bucket is replayed through the watcher at start-up, and a
//!   center lands the cache's snapshot it wrote at its last stop or while it ran
//!   (`coherence::snapshot`, `coherence::keeper`).
//! - `directory`: the read and write paths: cache first, store behind, degradation without NATS;
//!   a leaf's writes carried out by the center (`directory::forward`).
//! - `sessions`: presence that follows connections: the device sessions this node holds
//!   (hello, activity, idle, the grace after an abrupt drop), kept in the user's record by
//!   transitions only, and the sessions of a dead node ended.
//! - `webhooks`: the application's endpoints: Standard Webhooks signatures, the addresses an
//!   endpoint may reach, one signed request, and the delivery of events from the audit log and
//!   the notices stream (erasures, rooms) on center nodes (a durable consumer per endpoint and
//!   stream, retries, batches, a disabled state kept in JetStream, what waits for `/health`).
//! - `health`: what a node knows about itself, for the health endpoints and metrics.
//! - `http`: the serving loop (hyper HTTP/1.1 with header, body and idle timeouts and connection
//!   caps), the axum router (and the one hot read served before it, `http::fast`), handlers,
//!   extractors (JSON, path, auth, rate limit), the access log, the JSON error envelope, the
//!   OpenAPI document; live streams (`sse`, `ws`, over what they
//!   share in `subscribe`), where a WebSocket connection may hold a device's session.
//! - `app`: start-up in named steps and shutdown; tests go through the same path on port 0.
//! - `allocator`: the global allocator (mimalloc, by its plain calls where they suffice); the
//!   binary and the benchmark's HTTP ceiling use it.
//! - `cli`: the `presence` command line (`serve`, `token`, `certs`, `watch`, the last a tail of
//!   users' changes over the node's event stream, `cli::tail`); `main.rs` only calls it.
//!
//! A read (`GET /api/v2/presence/{user_id}`) goes router → `http::presence` → `directory` →
//! `cache` (or, on a miss, one `store` get shared by concurrent readers) →
//! `CompactPresence::view`, which turns an expired presence into `offline`. A write (`PUT`) passes
//! the `http::Owner` extractor (a valid token whose `sub` is the path's user) and the rate limit,
//! is validated into a `model::PresenceUpdate`, and answers 200 only after JetStream acknowledged
//! the `store` put, the record landed on this node (`coherence::Landing`: expiry schedule, cache,
//! live feed), and its update event is stored. An expiry goes `lifecycle::expiry` →
//! `store::live_at` (is that revision still the latest?) → `store::compare_and_set` (`offline`)
//! → one expire event.

// The public face: what the binary, the integration tests and the benchmark tool use.
pub mod allocator;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod nats;
pub mod telemetry;
pub mod tls;

// Everything else is the crate's own.
pub(crate) mod cache;
pub(crate) mod coherence;
pub(crate) mod directory;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod lifecycle;
pub(crate) mod link;
pub(crate) mod live;
pub(crate) mod model;
pub(crate) mod planted;
pub(crate) mod rooms;
pub(crate) mod sessions;
pub(crate) mod store;
pub(crate) mod topology;
pub(crate) mod webhooks;
