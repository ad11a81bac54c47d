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

/// The core agent on the real runtime and launcher, against a supervisor
/// played by the test over the in-memory network of the testkit.
#[cfg(test)]
mod agent_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use faultline_core::agent::{run_agent, AgentConfig, AgentDeps, AgentError};
    use faultline_core::protocol::{
        AgentId, AgentMessage, JobId, JobKind, RunningJob, SupervisorMessage,
    };
    use faultline_core::testkit::{FakeNet, FakePeer};

    use super::TokioRuntime;
    use crate::real::launcher::ProcessLauncher;

    /// Poll every 10 ms, for at most 30 s, until `peer` has sent a message
    /// matching `wanted`; return every message received meanwhile.
    async fn receive_until(
        peer: &FakePeer,
        wanted: impl Fn(&AgentMessage) -> bool,
    ) -> Vec<AgentMessage> {
        let mut received = Vec::new();
        for _ in 0..3_000 {
            received.extend(peer.received::<AgentMessage>());
            if received.iter().any(&wanted) {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no matching message within 30 s; received {received:?}");
    }

    async fn accept(net: &FakeNet) -> FakePeer {
        for _ in 0..3_000 {
            if let Some(peer) = net.take_peer() {
                return peer;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the agent did not connect within 30 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_agent_runs_real_processes_kills_them_and_reports() {
        let net = FakeNet::new();
        let mut config =
            AgentConfig::new(AgentId("a-1".into()), "secret".into(), "sup:7070".into());
        config.slots = 2;
        let deps = AgentDeps {
            runtime: Arc::new(TokioRuntime::new()),
            net: Arc::new(net.clone()),
            launcher: Arc::new(ProcessLauncher::with_kill_grace(Duration::from_secs(5))),
        };
        let agent = tokio::spawn(run_agent(config, deps));
        let peer = accept(&net).await;
        let hello = receive_until(&peer, |message| {
            matches!(message, AgentMessage::Hello { .. })
        })
        .await;
        assert!(matches!(&hello[0], AgentMessage::Hello { running, .. } if running.is_empty()));
        let welcome = SupervisorMessage::Welcome {
            session: 1,
            heartbeat_ms: 100,
            kill: Vec::<RunningJob>::new(),
        };
        peer.send(&welcome).expect("send");
        let run = |job: &str, script: &str| SupervisorMessage::Run {
            job: JobId(job.into()),
            run: 1,
            kind: JobKind::Parallel,
            command: vec!["sh".into(), "-c".into(), script.into()],
        };
        peer.send(&run("j-1", "echo hello; exit 2")).expect("send");
        peer.send(&run("j-2", "sleep 100")).expect("send");

        let finished_j1 = |message: &AgentMessage| matches!(message, AgentMessage::Finished { job, .. } if job.0 == "j-1");
        let received = receive_until(&peer, finished_j1).await;
        let report = received
            .iter()
            .find(|message| finished_j1(message))
            .expect("found");
        let AgentMessage::Finished { exit, killed, .. } = report else {
            unreachable!("matched as finished");
        };
        assert_eq!(
            (exit.code, exit.output_tail.as_str(), *killed),
            (Some(2), "hello\n", false)
        );

        peer.send(&SupervisorMessage::Kill {
            job: JobId("j-2".into()),
            run: 1,
        })
        .expect("send");
        let finished_j2 = |message: &AgentMessage| matches!(message, AgentMessage::Finished { job, .. } if job.0 == "j-2");
        let received = receive_until(&peer, finished_j2).await;
        let report = received
            .iter()
            .find(|message| finished_j2(message))
            .expect("found");
        assert!(
            matches!(report, AgentMessage::Finished { killed: true, exit, .. } if exit.signal == Some(libc::SIGTERM)),
            "{report:?}"
        );

        peer.send(&SupervisorMessage::Rejected {
            reason: "bye".into(),
        })
        .expect("send");
        let ended = tokio::time::timeout(Duration::from_secs(30), agent)
            .await
            .expect("run_agent ends within 30 s")
            .expect("run_agent does not panic");
        assert!(matches!(ended, Err(AgentError::Rejected { reason, .. }) if reason == "bye"));
    }
}
