//! Every request the service makes to NATS goes through a [`Caller`]: bounded by
//! `nats.request_timeout` (an unreachable server becomes an error, never a hung request), timed
//! into `presence_nats_request_duration_seconds` by operation, and, for the calls that serve
//! clients, counted by a circuit breaker ([`super::breaker::Breaker`]), which refuses them at
//! once while NATS keeps failing. Reads and writes have a breaker each: a flood of reads that
//! time out (anyone can send reads) must not shut the door on writes. Errors keep their source,
//! so that a log line shows the cause.

use std::{
    future::{Future, IntoFuture},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{
    FutureExt,
    future::{self, Either},
};

use super::breaker::Breaker;
use crate::telemetry::Metrics;

/// Any error of the NATS client, kept as the source of a [`CallError`].
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("NATS {op}: refused while the circuit breaker is open")]
    Refused { op: &'static str },
    /// A leaf that started while its center was away has not reached the center's streams yet.
    #[error("NATS {op}: the center has not answered since this node started")]
    Unbound { op: &'static str },
    #[error("NATS {op}: no answer within {limit:?}")]
    Timeout { op: &'static str, limit: Duration },
    #[error("NATS {op} failed")]
    Failed {
        op: &'static str,
        #[source]
        source: BoxError,
    },
}

impl CallError {
    /// The call was not made: the breaker refused it, or the center was never reached (nothing
    /// new to log).
    pub(crate) fn refused(&self) -> bool {
        matches!(self, CallError::Refused { .. } | CallError::Unbound { .. })
    }

    /// A publish that no stream took: the server answered at once that nobody listens on the
    /// subject (a stream without a leader, during a failover). Nothing was stored.
    pub(crate) fn reached_no_stream(&self) -> bool {
        use async_nats::jetstream::context::{PublishError, PublishErrorKind};
        let CallError::Failed { source, .. } = self else { return false };
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
        while let Some(error) = next {
            if error
                .downcast_ref::<PublishError>()
                .is_some_and(|e| e.kind() == PublishErrorKind::StreamNotFound)
            {
                return true;
            }
            next = error.source();
        }
        false
    }
}

/// Tries `attempt` again after waits that double from 100 ms (at most 2 s), until it succeeds or
/// `limit` has passed: for work that must get done in the background once NATS answers again.
/// `None` when it never succeeded.
pub(crate) async fn retry_for<T, E, F>(limit: Duration, mut attempt: impl FnMut() -> F) -> Option<T>
where
    F: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut wait = Duration::from_millis(100);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
        if let Ok(value) = attempt().await {
            return Some(value);
        }
    }
    None
}

/// The timeout, the latency metric and the breakers that NATS calls share: a cheap `Clone`.
#[derive(Clone)]
pub(crate) struct Caller {
    timeout: Duration,
    breaker: Arc<Breaker>,
    read_breaker: Arc<Breaker>,
    metrics: Arc<Metrics>,
}

impl Caller {
    /// `breaker` guards writes (and everything that changes state), `read_breaker` reads.
    pub(crate) fn new(
        timeout: Duration,
        breaker: Arc<Breaker>,
        read_breaker: Arc<Breaker>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { timeout, breaker, read_breaker, metrics }
    }

    pub(crate) fn read_breaker(&self) -> &Breaker {
        &self.read_breaker
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    // Not async fns: an async fn keeps its argument beside the future it awaits, so each of
    // these layers doubled the future it wraps (a compare-and-set's grew to 12 KB, copied again
    // at every await above it; measured with `-Zprint-type-sizes` and callgrind). Every caller
    // awaits the call at once, so the breaker and the clock are read when it starts.

    /// A call on behalf of a client that changes state (a write, an expiry, an erasure): refused
    /// at once while the write breaker is open; its outcome opens or closes it. An answer that
    /// the caller expects (a revision mismatch, say) must come back as `Ok`, not as an error.
    pub(crate) fn call<T, E>(
        &self,
        op: &'static str,
        fut: impl IntoFuture<Output = Result<T, E>>,
    ) -> impl Future<Output = Result<T, CallError>>
    where
        E: Into<BoxError>,
    {
        guarded(&self.breaker, op, self.bounded(op, fut))
    }

    /// The same for a read on behalf of a client, under the read breaker.
    pub(crate) fn call_read<T, E>(
        &self,
        op: &'static str,
        fut: impl IntoFuture<Output = Result<T, E>>,
    ) -> impl Future<Output = Result<T, CallError>>
    where
        E: Into<BoxError>,
    {
        guarded(&self.read_breaker, op, self.bounded(op, fut))
    }

    /// A call that the breaker neither guards nor counts: set-up, health probes, publishing.
    pub(crate) fn bounded<T, E>(
        &self,
        op: &'static str,
        fut: impl IntoFuture<Output = Result<T, E>>,
    ) -> impl Future<Output = Result<T, CallError>>
    where
        E: Into<BoxError>,
    {
        let (started, limit, metrics) = (Instant::now(), self.timeout, &self.metrics);
        tokio::time::timeout(limit, fut).map(move |outcome| {
            metrics.observe_nats(op, started.elapsed());
            match outcome {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(CallError::Failed { op, source: e.into() }),
                Err(_) => Err(CallError::Timeout { op, limit }),
            }
        })
    }
}

/// `call` unless `breaker` is open; its outcome is counted.
fn guarded<T>(
    breaker: &Breaker,
    op: &'static str,
    call: impl Future<Output = Result<T, CallError>>,
) -> impl Future<Output = Result<T, CallError>> {
    if !breaker.allow() {
        return Either::Left(future::ready(Err(CallError::Refused { op })));
    }
    Either::Right(call.inspect(move |outcome| match outcome {
        Ok(_) => breaker.record_success(),
        Err(_) => breaker.record_failure(),
    }))
}

/// Whether a publish with an expectation (a compare-and-set, an event that expects no erasure
/// marker) was refused because it did not hold: JetStream's error 10071 ("wrong last sequence:
/// N"), or 10164 (the same without the number), which a clustered stream's leader answers and
/// async-nats 0.51 does not map to `WrongLastRevision` or `WrongLastSequence` as it does 10071.
pub(crate) fn wrong_last_sequence(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::{self, ErrorCode};
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<jetstream::Error>().is_some_and(|j| {
            let code = j.error_code();
            code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
                || code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE
        }) {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(threshold: u32) -> Caller {
        let breaker = || Arc::new(Breaker::new(threshold, Duration::from_secs(60)));
        Caller::new(Duration::from_millis(50), breaker(), breaker(), Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn failures_open_the_breaker_and_keep_their_source() {
        let c = caller(2);
        let io = || async { Err::<(), _>(std::io::Error::other("connection reset")) };
        let e = c.call("get", io()).await.unwrap_err();
        assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "connection reset");
        let hang = std::future::pending::<Result<(), std::io::Error>>();
        assert!(matches!(c.call("get", hang).await, Err(CallError::Timeout { op: "get", .. })));
        assert!(matches!(c.call("get", io()).await, Err(CallError::Refused { op: "get" })));
        assert!(c.bounded("info", async { Ok::<_, std::io::Error>(1) }).await.is_ok(), "unguarded");
    }

    #[tokio::test]
    async fn failing_reads_do_not_shut_out_writes() {
        let c = caller(2);
        for _ in 0..5 {
            let _ = c.call_read("get", async { Err::<(), _>(std::io::Error::other("slow")) }).await;
        }
        assert!(c.read_breaker().is_open());
        assert!(!c.breaker().is_open());
        assert!(c.call("put", async { Ok::<_, std::io::Error>(1) }).await.is_ok(), "writes still go");
    }
}
