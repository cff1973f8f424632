//! The shared streams kept under watch: every [`WATCH_EVERY`] a node checks that the presence
//! bucket and the audit log exist and, on a center, that their settings are still those its
//! configuration wants (replicas, retention, messages per subject). Anything else makes
//! `/health` say `degraded` and names what is wrong: a stream deleted, or its `max_age` lowered
//! to a minute (which would delete every presence not written within it), is not silent.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, NodeType};

use super::{
    Caller,
    settings::{self, SharedStream},
};

pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(5);

/// What the last check found wrong with the shared streams (nothing: all is well).
#[derive(Default)]
pub(crate) struct StreamWatch {
    problems: Mutex<Vec<String>>,
}

/// A shared stream by name, with the settings this node speaks for (a center's configuration;
/// `None` on a leaf, which only checks that the stream is there).
pub(crate) type Watched = (String, Option<SharedStream>);

impl StreamWatch {
    /// The streams a node with `config` watches: on a center with the settings it configures.
    pub(crate) fn watched(config: &Config) -> Vec<Watched> {
        let center = config.service.node_type == NodeType::Center;
        let (kv, events) = (&config.nats.kv, &config.events);
        let bucket = SharedStream { replicas: kv.replicas, retention: kv.retention, per_subject: 1 };
        let log = SharedStream {
            replicas: kv.replicas,
            retention: events.retention,
            per_subject: i64::from(events.max_per_user),
        };
        vec![
            (format!("KV_{}", kv.bucket), center.then_some(bucket)),
            (events.stream.clone(), center.then_some(log)),
        ]
    }

    pub(crate) fn problems(&self) -> Vec<String> {
        self.problems.lock().expect("stream watch lock").clone()
    }

    /// Checks `streams` now and every [`WATCH_EVERY`] until `stop`. A stream that cannot be
    /// asked about (NATS away) keeps what was last found: unreachability is reported elsewhere.
    pub(crate) async fn run(
        self: Arc<Self>,
        (js, caller): (jetstream::Context, Caller),
        streams: Vec<Watched>,
        stop: CancellationToken,
    ) {
        let mut found: Vec<Option<String>> = vec![None; streams.len()];
        let mut every = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            for ((name, wanted), found) in streams.iter().zip(found.iter_mut()) {
                match settings::current(&js, &caller, name).await {
                    Ok(None) => *found = Some(format!("the stream `{name}` is missing")),
                    Ok(Some(existing)) => {
                        let differences =
                            wanted.map(|w| settings::differences(existing, w)).unwrap_or_default();
                        *found = (!differences.is_empty())
                            .then(|| format!("the stream `{name}` has {}", differences.join(", ")));
                    }
                    Err(_) => {}
                }
            }
            let problems: Vec<String> = found.iter().flatten().cloned().collect();
            if !problems.is_empty() && *self.problems.lock().expect("stream watch lock") != problems {
                tracing::error!(problems = %problems.join("; "), "the shared streams are not as configured");
            }
            *self.problems.lock().expect("stream watch lock") = problems;
        }
    }
}
