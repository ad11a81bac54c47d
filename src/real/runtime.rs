//! [`TokioRuntime`]: the [`Runtime`] trait on tokio, for production.
//!
//! Time is wall-clock time, kept monotone: the UNIX-epoch time read once at
//! creation plus the elapsed time of tokio's monotonic clock (which also
//! makes `now()` follow tokio's paused clock in tests). Tasks are tokio
//! tasks wrapped in a tracing span named after the task; a panic ends only
//! its task and is logged. Randomness comes from the operating system's
//! keyed hasher. `buggify` is always false.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_core::runtime::{BoxFuture, Instant, Runtime, TaskControl, TaskHandle, TaskOutcome};
use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::Instrument;

/// The production runtime. Must be created and used inside a tokio runtime
/// (`spawn` and `sleep` need one).
pub struct TokioRuntime {
    /// Nanoseconds from the UNIX epoch to `origin`.
    epoch_nanos: u64,
    /// The monotonic instant matching `epoch_nanos`.
    origin: tokio::time::Instant,
    /// Keyed with random keys from the operating system at creation.
    hasher: RandomState,
    /// Hashed by `hasher` to draw each random number.
    draws: AtomicU64,
}

impl TokioRuntime {
    /// A runtime whose clock starts at the current wall-clock time.
    pub fn new() -> TokioRuntime {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        TokioRuntime {
            epoch_nanos: u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX),
            origin: tokio::time::Instant::now(),
            hasher: RandomState::new(),
            draws: AtomicU64::new(0),
        }
    }
}

impl Default for TokioRuntime {
    fn default() -> TokioRuntime {
        TokioRuntime::new()
    }
}

impl Runtime for TokioRuntime {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch_nanos) + self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn spawn(&self, name: &str, future: BoxFuture<'static, ()>) -> TaskHandle {
        let (outcome, outcome_receiver) = watch::channel(None);
        let span = tracing::info_span!("task", name = %name);
        let name = name.to_owned();
        let task = async move {
            let recorder = OutcomeRecorder(outcome);
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(()) => recorder.record(TaskOutcome::Completed),
                Err(payload) => {
                    let message = panic_message(payload.as_ref());
                    tracing::error!(task = %name, panic = %message, "task panicked");
                    recorder.record(TaskOutcome::Panicked);
                }
            }
        };
        let handle = tokio::spawn(task.instrument(span));
        TaskHandle::new(TokioTask {
            abort: handle.abort_handle(),
            outcome: outcome_receiver,
        })
    }

    fn random_u64(&self) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write_u64(self.draws.fetch_add(1, Ordering::Relaxed));
        hasher.finish()
    }

    fn buggify(&self, _site: &'static str) -> bool {
        false
    }
}

/// Records how a task ended. Dropped without a recorded outcome means the
/// task's future was dropped: aborted, or its runtime shut down.
struct OutcomeRecorder(watch::Sender<Option<TaskOutcome>>);

impl OutcomeRecorder {
    fn record(&self, ended: TaskOutcome) {
        self.0.send_if_modified(|outcome| {
            let first = outcome.is_none();
            if first {
                *outcome = Some(ended);
            }
            first
        });
    }
}

impl Drop for OutcomeRecorder {
    fn drop(&mut self) {
        self.record(TaskOutcome::Aborted);
    }
}

struct TokioTask {
    abort: AbortHandle,
    outcome: watch::Receiver<Option<TaskOutcome>>,
}

impl TaskControl for TokioTask {
    fn abort(&self) {
        self.abort.abort();
    }

    fn is_finished(&self) -> bool {
        self.outcome.borrow().is_some()
    }

    fn join(&self) -> BoxFuture<'static, TaskOutcome> {
        let mut outcome = self.outcome.clone();
        Box::pin(async move {
            if let Ok(ended) = outcome.wait_for(Option::is_some).await {
                return ended.expect("wait_for returns a value that is Some");
            }
            // The recorder is gone, which records an outcome first.
            let ended = *outcome.borrow();
            ended.unwrap_or(TaskOutcome::Aborted)
        })
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn now_starts_at_wall_clock_time_and_follows_sleep() {
        let runtime = TokioRuntime::new();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970");
        let start = runtime.now();
        let skew = Duration::from_nanos(start.as_nanos()).abs_diff(wall);
        assert!(skew < Duration::from_secs(60), "now() is wall-clock time");
        runtime.sleep(Duration::from_secs(90)).await;
        let after = runtime.now();
        assert!(after - start >= Duration::from_secs(90));
        assert!(after - start < Duration::from_secs(91));
    }

    #[tokio::test(start_paused = true)]
    async fn now_never_goes_backwards() {
        let runtime = TokioRuntime::new();
        let mut previous = runtime.now();
        for step in 0..100u64 {
            tokio::time::advance(Duration::from_micros(step)).await;
            let now = runtime.now();
            assert!(now >= previous);
            previous = now;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn join_reports_completed_aborted_and_panicked() {
        let runtime = Arc::new(TokioRuntime::new());
        let done = runtime.spawn("done", Box::pin(async {}));
        assert_eq!(done.join().await, TaskOutcome::Completed);
        assert_eq!(done.join().await, TaskOutcome::Completed, "join again");
        assert!(done.is_finished());

        let clock = Arc::clone(&runtime);
        let forever = runtime.spawn(
            "forever",
            Box::pin(async move { clock.sleep(Duration::from_secs(3_600)).await }),
        );
        tokio::task::yield_now().await;
        assert!(!forever.is_finished());
        forever.abort();
        assert_eq!(forever.join().await, TaskOutcome::Aborted);

        let bomb = runtime.spawn("bomb", Box::pin(async { panic!("boom") }));
        assert_eq!(bomb.join().await, TaskOutcome::Panicked);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_detaches_the_task() {
        let runtime = TokioRuntime::new();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        drop(runtime.spawn(
            "detached",
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                sender.send(()).expect("receiver waits");
            }),
        ));
        receiver.await.expect("the detached task ran to completion");
    }

    #[test]
    fn random_numbers_differ_between_draws_and_runtimes() {
        let runtime = TokioRuntime::new();
        let draws: std::collections::BTreeSet<u64> =
            (0..64).map(|_| runtime.random_u64()).collect();
        assert_eq!(draws.len(), 64);
        assert_ne!(
            TokioRuntime::new().random_u64(),
            TokioRuntime::new().random_u64()
        );
        assert!(!runtime.buggify("any site"));
    }
}
