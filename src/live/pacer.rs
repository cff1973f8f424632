//! How often one connection sends: at most [`BURST`] messages per `stream.batch_window`. A change
//! that finds the connection idle goes out at once; changes that come faster than that wait for
//! the window to pass and go out together (the newest per user), so that a burst of writes costs
//! a few messages, not one per write, and a lone change waits for nothing.

use std::time::Duration;

use tokio::time::Instant;

/// Messages a connection may send within one window before changes wait.
pub(crate) const BURST: usize = 3;

#[derive(Debug)]
pub(crate) struct Pacer {
    window: Duration,
    /// When the last [`BURST`] messages went out, oldest first.
    sent: [Option<Instant>; BURST],
}

impl Pacer {
    pub(crate) fn new(window: Duration) -> Self {
        Self { window, sent: [None; BURST] }
    }

    /// When the next message may go out: `None` for now.
    pub(crate) fn wait_until(&self, now: Instant) -> Option<Instant> {
        let oldest = self.sent[0]?;
        let free = oldest + self.window;
        (free > now).then_some(free)
    }

    /// A message went out at `at`.
    pub(crate) fn sent(&mut self, at: Instant) {
        self.sent.rotate_left(1);
        self.sent[BURST - 1] = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_messages_go_at_once_then_the_rest_waits_for_the_window() {
        let window = Duration::from_millis(50);
        let mut pacer = Pacer::new(window);
        let start = Instant::now();
        for i in 0..BURST {
            let at = start + Duration::from_millis(i as u64);
            assert_eq!(pacer.wait_until(at), None, "message {i} of a burst goes at once");
            pacer.sent(at);
        }
        let now = start + Duration::from_millis(10);
        assert_eq!(pacer.wait_until(now), Some(start + window), "the next waits for the window");
        assert_eq!(pacer.wait_until(start + window), None, "and goes when it passed");
        pacer.sent(start + window);
        // The window slides: one more may go once the second message's window passed.
        let after = start + Duration::from_millis(51);
        assert_eq!(pacer.wait_until(after), None);
        assert_eq!(Pacer::new(Duration::ZERO).wait_until(start), None);
    }
}
