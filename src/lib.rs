//! Presence: who is online, away, busy or offline, with a status message and a last-seen time.
//!
//! # A tour
//!
//! - [`cli`]: the `presence` command line (`serve`, `token`); `main.rs` only calls it.
//! - [`config`]: the YAML configuration of the design document, with defaults, `${VAR}`
//!   interpolation, `PRESENCE_...` overrides and validation that names the key.
//! - [`app`]: start-up and shutdown. `Application::build` starts NATS, opens the bucket and binds
//!   the listener; tests go through the same path on port 0.
//! - [`nats`]: the embedded `nats-server` (found, version-checked, configured, supervised and
//!   restarted as a child process) and the service's client connection.
//! - [`store`]: the JetStream KV bucket `presence`, the authoritative copy of every presence, and
//!   the circuit breaker in front of it.
//! - [`cache`]: the in-memory moka cache of presences and the KV watcher that keeps it coherent.
//! - [`directory`]: the read and write paths: cache first, KV behind, degradation without NATS.
//! - [`lifecycle`]: expiry transitions (exactly one `offline` write and expire event per
//!   expiry), the update and expire events, and the audit-log stream with history and erasure.
//! - [`model`]: user ids, statuses, and a presence as stored and as shown (expiry is applied at
//!   read time here).
//! - [`auth`]: HS256 JWT verification as an axum extractor, token minting, the secret's source.
//! - [`http`]: the axum router, its handlers, the JSON error envelope, `/health` and the OpenAPI
//!   document.
//! - [`telemetry`]: logging setup and Prometheus metrics.
//! - [`topology`]: hub and spoke: node heartbeats on `presence.sync.{node_id}` and the registry
//!   of nodes. (A leaf's embedded server and its path to the center's JetStream domain are set up
//!   in [`nats`] and [`app`].)
//!
//! A read (`GET /api/v2/presence/{user_id}`) goes router → `http::presence` → `directory` →
//! `cache` (or, on a miss, one KV get shared by concurrent readers) → `CompactPresence::view`,
//! which turns an expired presence into `offline`. A write (`PUT`) passes the `auth::Owner`
//! extractor (a valid token whose `sub` is the path's user) and the rate limit, is validated into
//! a `model::PresenceUpdate`, and answers 200 only after JetStream acknowledged the KV put, this
//! node's cache and expiry schedule hold the new value, and its update event is on its way.

// The public face: what the binary, the integration tests and the benchmark tool use.
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod nats;
pub mod telemetry;

// Everything else is the crate's own.
pub(crate) mod cache;
pub(crate) mod coherence;
pub(crate) mod directory;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod lifecycle;
pub(crate) mod link;
pub(crate) mod model;
pub(crate) mod store;
pub(crate) mod topology;
