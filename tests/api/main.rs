//! Integration tests: real nats-server, real HTTP on loopback, one binary for fast linking.

mod at_rest;
mod auth;
mod browser;
mod clients;
mod config;
#[path = "../consistency/mod.rs"]
mod consistency;
mod errors;
mod helpers;
mod history;
mod hostile;
mod https;
mod layout;
mod lifecycle;
mod live;
mod openapi;
mod operations;
mod presence;
mod process;
mod races;
mod reads;
mod region;
mod rooms;
mod security;
mod sessions;
mod store;
mod topology;
mod webhooks;
