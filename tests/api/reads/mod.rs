//! The read path: cache hits and misses, single flight, coherence through the KV watcher,
//! degradation while NATS is away, rate limits, health and metrics.

mod cache;
mod fast;
mod limits;
mod snapshot;

use std::time::{Duration, Instant};

use futures::StreamExt;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    NatsServer, TestApp, assert_error, bucket, eventually, external_app, json_of, stored_value,
};

async fn cache_stats(app: &TestApp) -> Value {
    app.cache_health().await
}

async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .unwrap_or(0.0)
}

fn nats_url(app: &TestApp) -> String {
    app.nats_url()
}

/// Checks each sample line of the Prometheus text format: a metric name, optional well-formed
/// labels, and a number.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let name_ok =
        |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels =
                        labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) =
                            pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair}: {line}"));
                        assert!(name_ok(k) && !v.contains('\n'), "bad label: {line}");
                    }
                    name
                }
                None => series,
            };
            assert!(name_ok(name), "bad name: {line}");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            (series.to_string(), value)
        })
        .collect()
}
