//! The circuit breaker in front of NATS: after `failures` consecutive failed calls it opens, and
//! calls fail at once (503) instead of each waiting for a timeout. After `cooldown` one call is
//! let through as a probe; its success closes the breaker, its failure opens it again.
//! Lock-free: two atomics, read on every guarded call.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    epoch: Instant,
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which calls are refused; 0 when closed.
    open_until: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    /// Milliseconds since `epoch`, plus one: never 0, which `open_until` reserves for "closed".
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn reopen_at(&self) -> u64 {
        self.now_ms() + self.cooldown.as_millis() as u64
    }

    /// May a call go to NATS now? While open, no; once the cooldown passed, exactly one caller
    /// gets `true` (the probe) and pushes the next probe a cooldown further.
    pub(crate) fn allow(&self) -> bool {
        let until = self.open_until.load(Relaxed);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until && self.open_until.compare_exchange(until, self.reopen_at(), Relaxed, Relaxed).is_ok()
    }

    pub(crate) fn record_success(&self) {
        self.failures.store(0, Relaxed);
        if self.open_until.swap(0, Relaxed) != 0 {
            tracing::info!("NATS answers again: circuit breaker closed");
        }
    }

    pub(crate) fn record_failure(&self) {
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if failures >= self.threshold {
            let was = self.open_until.swap(self.reopen_at(), Relaxed);
            if was == 0 {
                tracing::warn!(failures, cooldown = ?self.cooldown, "NATS calls keep failing: circuit breaker open");
            }
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_once_after_the_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(0));
        b.record_failure();
        assert!(!b.is_open());
        b.record_failure();
        assert!(b.is_open());
        assert!(b.allow(), "the probe goes through once the cooldown passed");
        b.record_success();
        assert!(!b.is_open() && b.allow());
    }

    #[test]
    fn refuses_while_open() {
        let b = Breaker::new(1, Duration::from_secs(60));
        b.record_failure();
        assert!(!b.allow());
    }
}
