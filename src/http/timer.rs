//! hyper's timer for one HTTP/1.1 connection. hyper asks for a new deadline for every request head
//! and drops it once the head is read: with tokio's sleep as it comes, each request allocated a
//! timer entry, put it into the runtime's timer wheel on the first poll and took it out again on
//! drop, a twentieth of a cached GET's instructions (BENCHMARKS.md, "Ninth round"). This timer
//! keeps the connection's one tokio sleep between requests and moves its deadline instead; a later
//! deadline is an atomic store (tokio moves the entry only when the old deadline comes round).
//! The deadline is enforced exactly as before.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::rt::{Sleep, Timer};

type Spare = Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>;

/// A connection's timer (one per connection: the spare sleep is the connection's).
#[derive(Clone, Default)]
pub(super) struct ConnectionTimer {
    spare: Spare,
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let spare = self.spare.lock().expect("timer lock").take();
        let sleep = match spare {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline.into());
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline.into())),
        };
        Box::pin(Recycled { sleep: Some(sleep), spare: self.spare.clone() })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Recycled>() {
            Some(recycled) => recycled.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A deadline whose tokio sleep goes back to its connection's timer when hyper drops it.
struct Recycled {
    /// Always `Some` until dropped.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    spare: Spare,
}

impl Recycled {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        if let Some(sleep) = self.get_mut().sleep.as_mut() {
            sleep.as_mut().reset(deadline.into());
        }
    }
}

impl Future for Recycled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut().sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Sleep for Recycled {}

impl Drop for Recycled {
    fn drop(&mut self) {
        if let Some(sleep) = self.sleep.take()
            && let Ok(mut spare) = self.spare.lock()
        {
            *spare = Some(sleep);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant as Clock;

    use super::*;

    /// A deadline on tokio's clock (paused in these tests), as hyper's `Instant`.
    fn at(from: Clock, secs: u64) -> Instant {
        (from + Duration::from_secs(secs)).into_std()
    }

    /// Within tokio's millisecond ticks of `secs`.
    fn near(waited: Duration, secs: u64) {
        let want = Duration::from_secs(secs);
        assert!(waited >= want && waited < want + Duration::from_millis(5), "{waited:?}, not {want:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_fires_at_its_time_after_its_sleep_was_reused() {
        let timer = ConnectionTimer::default();
        let start = Clock::now();
        // hyper's pattern: a deadline per request head, dropped once the head is read.
        for _ in 0..3 {
            let mut early = timer.sleep_until(at(start, 10));
            assert!(futures::poll!(early.as_mut()).is_pending());
        }
        assert!(timer.spare.lock().unwrap().is_some(), "the sleep was kept");
        timer.sleep_until(at(start, 30)).await;
        near(Clock::now() - start, 30);

        // Moved earlier through hyper's reset: the new deadline holds.
        let from = Clock::now();
        let mut sleep = timer.sleep_until(at(from, 60));
        assert!(futures::poll!(sleep.as_mut()).is_pending());
        timer.reset(&mut sleep, at(from, 5));
        sleep.await;
        near(Clock::now() - from, 5);
    }
}
