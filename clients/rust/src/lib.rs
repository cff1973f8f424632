//! A client for [Presence](https://github.com/): who is online, away, busy or offline, live.
//!
//! ```no_run
//! # async fn example() -> Result<(), presence_client::Error> {
//! use futures::StreamExt;
//! let client = presence_client::Client::builder()
//!     .urls(["https://eu.presence.example.com", "https://us.presence.example.com"])
//!     .token_provider(|| async { Ok::<_, String>(std::env::var("PRESENCE_TOKEN").unwrap_or_default()) })
//!     .device("laptop")
//!     .build()?;
//! let mut watch = client.watch(["alice", "bob"]);
//! while let Some(change) = watch.next().await {
//!     println!("{} is {:?}", change.user_id, change.presence.status);
//! }
//! # Ok(()) }
//! ```
//!
//! One WebSocket per client carries the device's session and every watch; it reconnects by
//! itself (docs/clients.md in the repository: the state machine, what is retried). `transport`
//! opens connections (TCP, rustls), `rest` makes the REST calls, `view` keeps what the client
//! knows of its watched users by the revision rules, `room` what it knows of a joined room,
//! `shared` what the API and the task share, `connection` is the task that holds the WebSocket,
//! and `client` is the API.

mod client;
mod connection;
mod error;
mod model;
mod rest;
mod room;
mod shared;
mod transport;
mod view;

pub use client::{Client, ClientBuilder, Room, Watch};
pub use error::Error;
pub use model::{Change, ChangeKind, ConnectionState, Event, Presence, Status, StatusOptions};
pub use room::{Member, Members, RoomChange};
pub use shared::TokenProvider;
