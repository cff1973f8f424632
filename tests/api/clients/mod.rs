//! The client libraries (docs/clients.md) against real nodes: the Rust client (`clients/rust`) and the TypeScript
//! client (`clients/typescript`, in Node 20).

mod rust;
mod typescript;
