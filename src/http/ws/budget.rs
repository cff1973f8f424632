//! A WebSocket connection's message budget: `stream.messages_per_second` on average, bursts of
//! `stream.message_burst` (governor, GCRA). A message beyond it is answered with an `error` and
//! otherwise ignored; a client refused a whole burst in a row is flooding and is closed (1008).

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::StreamConfig;

pub(super) struct Budget {
    limiter: DefaultDirectRateLimiter,
    burst: usize,
    refused_in_a_row: usize,
    per_second: usize,
}

/// What to do with one message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Take,
    /// Over the budget: answer an error, change nothing.
    Refuse,
    /// Refused a whole burst in a row: close the connection.
    Close,
}

impl Budget {
    pub(super) fn new(settings: &StreamConfig) -> Self {
        let nz = |n: usize| NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX).max(1)).expect("at least 1");
        let quota =
            Quota::per_second(nz(settings.messages_per_second)).allow_burst(nz(settings.message_burst));
        Self {
            limiter: RateLimiter::direct(quota),
            burst: settings.message_burst.max(1),
            refused_in_a_row: 0,
            per_second: settings.messages_per_second,
        }
    }

    /// Spends one message.
    pub(super) fn spend(&mut self) -> Verdict {
        if self.limiter.check().is_ok() {
            self.refused_in_a_row = 0;
            return Verdict::Take;
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row >= self.burst { Verdict::Close } else { Verdict::Refuse }
    }

    /// What a refused message is told.
    pub(super) fn refusal(&self) -> String {
        format!(
            "too many messages: at most {} per second (stream.messages_per_second); this one was ignored",
            self.per_second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_taken_then_refused_then_closed() {
        let settings = StreamConfig { messages_per_second: 1, message_burst: 3, ..StreamConfig::default() };
        let mut budget = Budget::new(&settings);
        for _ in 0..3 {
            assert_eq!(budget.spend(), Verdict::Take);
        }
        assert_eq!(budget.spend(), Verdict::Refuse);
        assert_eq!(budget.spend(), Verdict::Refuse);
        assert_eq!(budget.spend(), Verdict::Close, "a whole burst refused in a row");
        assert!(budget.refusal().contains("at most 1 per second"));
    }
}
