//! This node's clock offset from the NATS server's, estimated from the server's timestamps on
//! watched changes written while the node watched (never replayed history, whose timestamps are
//! as old as the writes). Each sample is (local time at receipt - server time at storage), which
//! latency only inflates, so the estimate is the smallest recent sample.

use std::{collections::VecDeque, time::Duration};

use chrono::{DateTime, Utc};

/// Clock offsets beyond this are reported as a problem (expiry times would be off by as much).
pub(crate) const CLOCK_TOLERANCE: Duration = Duration::from_secs(1);
/// Samples the estimate is the minimum of.
const SAMPLES: usize = 32;

#[derive(Debug, Default)]
pub(super) struct ClockEstimate {
    samples: VecDeque<i64>,
}

impl ClockEstimate {
    /// Adds the sample of a change the server stored at `stored_at` and this node received at
    /// `received`; returns the new estimate in milliseconds.
    pub(super) fn sample(&mut self, stored_at: DateTime<Utc>, received: DateTime<Utc>) -> i64 {
        let sample = (received - stored_at).num_milliseconds();
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        self.samples.iter().copied().min().unwrap_or(sample)
    }
}

/// True when `offset_ms` is beyond [`CLOCK_TOLERANCE`].
pub(super) fn off(offset_ms: i64) -> bool {
    offset_ms.unsigned_abs() > CLOCK_TOLERANCE.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_smallest_recent_sample() {
        let mut clock = ClockEstimate::default();
        let t = Utc::now();
        assert_eq!(clock.sample(t, t + chrono::Duration::milliseconds(40)), 40);
        assert_eq!(clock.sample(t, t + chrono::Duration::milliseconds(5)), 5);
        assert_eq!(clock.sample(t, t + chrono::Duration::milliseconds(90)), 5);
        for _ in 0..SAMPLES {
            clock.sample(t, t + chrono::Duration::milliseconds(70));
        }
        assert_eq!(clock.sample(t, t + chrono::Duration::milliseconds(80)), 70, "old samples age out");
        assert!(off(-1500) && !off(999));
    }
}
