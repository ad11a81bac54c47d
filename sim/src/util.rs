//! Small futures for programs under simulation.
//!
//! * [`yield_now`]: give the scheduler a chance to run another task;
//! * [`CancelAfterPolls`] / [`cancel_at_random_await`]: drop a future at a
//!   seeded await point, as a client that disconnects mid-request does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use rand::Rng;

use crate::choices::SimRng;

/// Returns `Pending` once (waking itself first), then `Ready`.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[derive(Debug)]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls the inner future at most `polls_max` times; if it has not
/// completed by then, drops it (at whatever `.await` it is suspended) and
/// completes with `None`. With `polls_max = 0` the inner future is never
/// polled.
#[derive(Debug)]
pub struct CancelAfterPolls<F> {
    inner: Option<Pin<Box<F>>>,
    polls_left: u32,
}

impl<F: Future> CancelAfterPolls<F> {
    /// Wrap `future`, dropping it after `polls_max` polls.
    pub fn new(future: F, polls_max: u32) -> CancelAfterPolls<F> {
        CancelAfterPolls {
            inner: Some(Box::pin(future)),
            polls_left: polls_max,
        }
    }

    /// Whether the inner future was dropped before completing.
    pub fn was_cancelled(&self) -> bool {
        self.inner.is_none() && self.polls_left == 0
    }
}

impl<F: Future> Future for CancelAfterPolls<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.polls_left == 0 {
            this.inner = None;
            return Poll::Ready(None);
        }
        this.polls_left -= 1;
        match inner.as_mut().poll(cx) {
            Poll::Ready(output) => {
                this.inner = None;
                this.polls_left = u32::MAX;
                Poll::Ready(Some(output))
            }
            Poll::Pending if this.polls_left == 0 => {
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Wrap `future` so that it is dropped after a number of polls drawn
/// uniformly from `1..=polls_max` (from `rng`, e.g. the workload stream):
/// the simulated client disconnects at a random `.await` of the request.
/// Completes with `None` if it was dropped, `Some(output)` if it finished
/// first.
pub fn cancel_at_random_await<F: Future>(
    future: F,
    rng: &mut SimRng,
    polls_max: u32,
) -> CancelAfterPolls<F> {
    let polls = rng.gen_range(1..=polls_max.max(1));
    CancelAfterPolls::new(future, polls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::task::Waker;

    /// Counts its polls and its drop; pending forever.
    struct Probe {
        polls: Arc<AtomicU32>,
        dropped: Arc<AtomicU32>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            Poll::Pending
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_dropped_after_its_last_poll() {
        let polls = Arc::new(AtomicU32::new(0));
        let dropped = Arc::new(AtomicU32::new(0));
        let probe = Probe {
            polls: Arc::clone(&polls),
            dropped: Arc::clone(&dropped),
        };
        let mut wrapped = Box::pin(CancelAfterPolls::new(probe, 3));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(wrapped.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(wrapped.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        assert_eq!(wrapped.as_mut().poll(&mut cx), Poll::Ready(None));
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert!(wrapped.was_cancelled());
    }

    #[test]
    fn a_future_that_finishes_in_time_keeps_its_output() {
        let mut wrapped = Box::pin(CancelAfterPolls::new(async { 7 }, 1));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(wrapped.as_mut().poll(&mut cx), Poll::Ready(Some(7)));
        assert!(!wrapped.was_cancelled());
    }

    #[test]
    fn yield_now_is_pending_once_and_wakes_itself() {
        let mut future = yield_now();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(Pin::new(&mut future).poll(&mut cx), Poll::Pending);
        assert_eq!(Pin::new(&mut future).poll(&mut cx), Poll::Ready(()));
    }
}
