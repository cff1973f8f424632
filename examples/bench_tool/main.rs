//! Helpers for `bench/run`: the storage ceilings it compares Presence against (the HTTP ceiling
//! is `examples/http_ceiling.rs`), a fixed-rate load generator, and bulk loading of the bucket.
//! Not part of the service.
//!
//! - `kv --url U --op put|get|put-event|put-event-guarded --concurrency C --seconds S`: raw
//!   async-nats KV puts or gets of 200-byte values with C in flight: the storage ceiling.
//!   `put-event` also publishes a 500-byte event into a stream per put, as a presence write does
//!   for its audit log. `put-event-guarded` does so with the NATS work of the service's
//!   guarantees: a compare-and-set write to a bucket with per-key TTL markers, the event with its
//!   id and erasure condition into a stream that keeps 1,000 per subject, and a watcher of the
//!   bucket in the same process, as every node has; `--without watch,cas,id,condition` leaves
//!   some of them out. `--connections N` spreads the C over N connections (one by default, as a
//!   node has one).
//! - `fixed-rate --url U --rate R --seconds S [--body FILE]`: open-loop requests at R per second
//!   (GETs, or POSTs of FILE as JSON), spread evenly over each millisecond; latency is measured
//!   from each request's dispatch, and the run fails if the generator could not keep the rate.
//! - `preload --url U --count N --prefix P [--expire-at-ms T]`: puts N presences straight into
//!   the bucket, live for 7 days or until the Unix time T (milliseconds), all at once.
//! - `tokens --config FILE --count N --prefix P`: prints N `user token` lines for PUT load.
//! - `propagation --write URL --read URL --user U --token T --count N [--name NAME]`: N times,
//!   writes a new message for U at one node while polling the other until it serves it (with no
//!   stale mark). Prints three results: NAME (from the write's acknowledgement to the first read
//!   that shows it; 0 when it showed before), NAME_from_sent (from the moment the write was
//!   sent) and NAME_write (the write itself).
//! - `proxy --target PORT --ms D`: a TCP proxy on loopback to PORT that delays each direction by
//!   D milliseconds (a distant link); prints its port, then runs until killed. SIGUSR1 cuts it
//!   (open connections dropped, new ones refused), SIGUSR2 heals it.
//! - `outage --proxy-pid PID --center URL --tokens FILE --leaf URL --center-nats URL --leaf-nats URL
//!   --seconds S --rate R`: cuts the proxy between a leaf and its center, writes at R per second
//!   to users of FILE at the center for S seconds, heals the proxy, and measures how long the
//!   leaf takes to serve the last of those writes with no stale mark, and its copy of the bucket
//!   to hold the center's last revision.
//!
//! - `live --url URL --tokens FILE --pid PID [--subscribers N --watch W --rate R --seconds S]`:
//!   N event-stream subscribers, each watching W users drawn from those in FILE, then writes
//!   at R per second to random users of FILE: RSS per idle subscriber (of process PID), the
//!   delivery latency from each write's 200 to its receipt (p50, p99), the node's CPU per
//!   subscriber, and the deliveries per second at saturation (writes as fast as they go). With
//!   `--poll`, the same users are polled instead (`?users=` every second per subscriber) while the
//!   same writes go on: the node's CPU per subscriber of the alternative.
//!   With `--ws`, the subscribers use the WebSocket instead.
//! - `live-propagation --write URL --read URL --user U --token T --count N [--every MS]`: N
//!   times, one every MS (20) milliseconds, writes a new message at one node and waits for it on
//!   an event stream at the other; the latency runs from the write's 200 to the receipt (with
//!   `--from-sent yes`, a second result from the moment the write was sent).
//! - `sessions-hold --url URL --tokens FILE --count N [--activity-every S] [--bind IP]`: opens N
//!   device sessions (WebSocket, `hello`, wait for `welcome`) for the first N users of FILE, 256
//!   being opened at once, from the loopback address IP if given; prints the rate of connect +
//!   hello, then holds them (each says `activity` every S seconds, 20 by default, spread) until
//!   killed.
//! - `sessions-churn --url URL --watch-url URL --tokens FILE --users M --rate R --seconds S`:
//!   with the last M users of FILE, half of them connected at first, R connects and R clean
//!   disconnects per second at URL for S seconds, while subscribers at WATCH-URL (another node)
//!   watch all M: the delay from each `hello` (or close frame) sent until the other node shows
//!   the user online (offline), p50 and p99.
//! - `rooms-enter --url URL --tokens FILE --members N --spread-ms MS`: N members enter one room
//!   within MS and leave within MS, each watching it: the room messages sent, against the
//!   2 × N × (N + 1) of sending each change to each member alone, and the delivery delay.
//! - `rooms-churn --url A --other-url B --tokens FILE --members N --rate R --seconds S`: one
//!   room of N members, half at each node, R joins and R leaves per second: the delay until the
//!   other node's watcher sees each.
//! - `rooms-typing --url A --other-url B --tokens FILE --count N`: typing signals at A, the delay
//!   until a member at B sees each.
//! - `webhooks --url URL --receiver-port P --tokens FILE --count N [--concurrency C]`: a receiver
//!   at 127.0.0.1:P/hook, and N writes that each change a status: events delivered per second,
//!   and the delay from each write's 200 to its delivery.
//!
//! Results are printed as one JSON object on stdout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream;
use hdrhistogram::Histogram;
use serde_json::json;

mod ceilings;
mod links;
mod live;
mod rooms;
mod sessions;
mod setup;
mod streams;
mod typing;
mod webhooks;

use ceilings::*;
use links::*;
use live::*;
use rooms::*;
use sessions::*;
use setup::*;
use streams::*;
use typing::*;
use webhooks::*;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("kv") => kv(&args).await,
        Some("fixed-rate") => fixed_rate(&args).await,
        Some("preload") => preload(&args).await,
        Some("tokens") => tokens(&args),
        Some("propagation") => propagation(&args).await,
        Some("live") => live(&args).await,
        Some("live-propagation") => live_propagation(&args).await,
        Some("proxy") => proxy(&args).await,
        Some("outage") => outage(&args).await,
        Some("sessions-hold") => sessions_hold(&args).await,
        Some("sessions-churn") => sessions_churn(&args).await,
        Some("rooms-enter") => rooms_enter(&args).await,
        Some("rooms-churn") => rooms_churn(&args).await,
        Some("rooms-typing") => rooms_typing(&args).await,
        Some("webhooks") => webhooks(&args).await,
        _ => eprintln!("usage: bench_tool kv|fixed-rate|preload|tokens ..."),
    }
}
