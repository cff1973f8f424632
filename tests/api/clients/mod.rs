//! The client libraries (docs/clients.md) against real nodes: the Rust client (`clients/rust`).

mod rust;
