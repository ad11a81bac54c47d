//! [`ManualRuntime`]: a single-threaded executor with a virtual clock that
//! only moves when the test says so.
//!
//! Invariants:
//! * `Inner::now` never decreases; it changes only in [`ManualRuntime::advance`]
//!   and [`ManualRuntime::advance_to`].
//! * A task's future is either in its `TaskSlot::future` (parked) or owned by
//!   the poll loop (being polled); never both. The poll loop never holds the
//!   `Inner` lock while it polls or drops a future, so futures may call back
//!   into the runtime (sleep, spawn, wake) from anywhere.
//! * `timers` holds one entry per pending [`Sleep`] that has been polled;
//!   entries are ordered by deadline, then by creation, which is the firing
//!   order the runtime contract asks for.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::sync::watch;

use crate::runtime::{BoxFuture, Instant, Runtime, TaskControl, TaskHandle, TaskOutcome};

/// How many polls one [`ManualRuntime::run_until_idle`] may make before it
/// declares a livelock (tasks that keep waking each other without time
/// passing).
pub const POLLS_PER_IDLE_MAX: usize = 100_000;

/// How many timers one [`ManualRuntime::advance_to`] may fire.
pub const TIMERS_PER_ADVANCE_MAX: usize = 100_000;

/// A [`Runtime`] for unit tests: tasks run only inside
/// [`run_until_idle`](ManualRuntime::run_until_idle) and the advance methods,
/// on the calling thread, in a deterministic order; `sleep` completes when the
/// test advances the virtual clock past its deadline; `random_u64` is a
/// seeded generator; `buggify` is always `false`.
///
/// A panic inside a task is re-raised by the call that polled it, naming the
/// task, so the test fails where the bug is. Cloning gives another handle on
/// the same runtime.
#[derive(Clone)]
pub struct ManualRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
}

struct Inner {
    now: Instant,
    rng_state: u64,
    tasks: BTreeMap<u64, Arc<TaskSlot>>,
    ready: VecDeque<u64>,
    queued: BTreeSet<u64>,
    timers: BTreeMap<(Instant, u64), Waker>,
    task_id_next: u64,
    timer_id_next: u64,
}

struct TaskSlot {
    name: String,
    future: Mutex<Option<BoxFuture<'static, ()>>>,
    aborted: AtomicBool,
    outcome: watch::Sender<Option<TaskOutcome>>,
}

impl ManualRuntime {
    /// A runtime whose clock starts at `Instant::ZERO` and whose random
    /// numbers derive from `seed`.
    pub fn new(seed: u64) -> ManualRuntime {
        let inner = Inner {
            now: Instant::ZERO,
            rng_state: seed,
            tasks: BTreeMap::new(),
            ready: VecDeque::new(),
            queued: BTreeSet::new(),
            timers: BTreeMap::new(),
            task_id_next: 0,
            timer_id_next: 0,
        };
        ManualRuntime {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
            }),
        }
    }

    /// Spawn `future` and keep its output: the returned [`TaskResult`] holds
    /// it once the task completes.
    pub fn start<T, F>(&self, name: &str, future: F) -> TaskResult<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let output = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&output);
        let handle = self.spawn(
            name,
            Box::pin(async move {
                let value = future.await;
                *lock(&slot) = Some(value);
            }),
        );
        TaskResult { output, handle }
    }

    /// Poll every ready task until none is ready. Time does not move.
    ///
    /// Panics if a task panicked, or after [`POLLS_PER_IDLE_MAX`] polls.
    pub fn run_until_idle(&self) {
        for _ in 0..POLLS_PER_IDLE_MAX {
            let Some(task) = self.next_ready() else {
                return;
            };
            self.poll_task(task);
        }
        panic!("livelock: tasks still ready after {POLLS_PER_IDLE_MAX} polls without time passing");
    }

    /// Run until idle, then move the clock forward by `duration`, firing due
    /// timers in order and running until idle after each.
    pub fn advance(&self, duration: Duration) {
        let target = self.now() + duration;
        self.advance_to(target);
    }

    /// Like [`advance`](ManualRuntime::advance), up to the instant `target`.
    /// Does nothing to the clock if `target` is in the past.
    pub fn advance_to(&self, target: Instant) {
        self.run_until_idle();
        for _ in 0..TIMERS_PER_ADVANCE_MAX {
            let due = {
                let mut inner = self.lock_inner();
                match inner.timers.first_key_value() {
                    Some((&(deadline, _), _)) if deadline <= target => {
                        let (_, waker) = inner.timers.pop_first().expect("a first timer exists");
                        inner.now = inner.now.max(deadline);
                        Some(waker)
                    }
                    _ => None,
                }
            };
            match due {
                Some(waker) => {
                    waker.wake();
                    self.run_until_idle();
                }
                None => {
                    let mut inner = self.lock_inner();
                    inner.now = inner.now.max(target);
                    drop(inner);
                    self.run_until_idle();
                    return;
                }
            }
        }
        panic!("more than {TIMERS_PER_ADVANCE_MAX} timers fired in one advance");
    }

    /// The names of the tasks that have not ended, in spawn order.
    pub fn live_tasks(&self) -> Vec<String> {
        let inner = self.lock_inner();
        inner.tasks.values().map(|task| task.name.clone()).collect()
    }

    /// The deadline of the earliest pending timer, if any.
    pub fn next_timer(&self) -> Option<Instant> {
        let inner = self.lock_inner();
        inner.timers.keys().next().map(|&(deadline, _)| deadline)
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared.inner)
    }

    fn next_ready(&self) -> Option<(u64, Arc<TaskSlot>)> {
        let mut inner = self.lock_inner();
        while let Some(id) = inner.ready.pop_front() {
            inner.queued.remove(&id);
            if let Some(task) = inner.tasks.get(&id) {
                return Some((id, Arc::clone(task)));
            }
        }
        None
    }

    fn poll_task(&self, (id, task): (u64, Arc<TaskSlot>)) {
        let Some(mut future) = lock(&task.future).take() else {
            return;
        };
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            shared: Arc::downgrade(&self.shared),
        }));
        let mut context = Context::from_waker(&waker);
        let polled = panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut context)));
        match polled {
            Ok(Poll::Pending) if !task.aborted.load(Ordering::SeqCst) => {
                *lock(&task.future) = Some(future);
            }
            Ok(Poll::Pending) => {
                drop(future);
                self.end_task(id, &task, TaskOutcome::Aborted);
            }
            Ok(Poll::Ready(())) => {
                drop(future);
                self.end_task(id, &task, TaskOutcome::Completed);
            }
            Err(payload) => {
                self.end_task(id, &task, TaskOutcome::Panicked);
                eprintln!("task `{}` panicked", task.name);
                panic::resume_unwind(payload);
            }
        }
    }

    fn end_task(&self, id: u64, task: &TaskSlot, outcome: TaskOutcome) {
        self.lock_inner().tasks.remove(&id);
        task.outcome.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(outcome);
            }
            first
        });
    }
}

impl Runtime for ManualRuntime {
    fn now(&self) -> Instant {
        self.lock_inner().now
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let mut inner = self.lock_inner();
        let deadline = inner.now + duration;
        let id = inner.timer_id_next;
        inner.timer_id_next += 1;
        Box::pin(Sleep {
            shared: Arc::downgrade(&self.shared),
            key: (deadline, id),
        })
    }

    fn spawn(&self, name: &str, future: BoxFuture<'static, ()>) -> TaskHandle {
        let (outcome, outcome_receiver) = watch::channel(None);
        let task = Arc::new(TaskSlot {
            name: name.to_owned(),
            future: Mutex::new(Some(future)),
            aborted: AtomicBool::new(false),
            outcome,
        });
        let mut inner = self.lock_inner();
        let id = inner.task_id_next;
        inner.task_id_next += 1;
        inner.tasks.insert(id, Arc::clone(&task));
        inner.ready.push_back(id);
        inner.queued.insert(id);
        TaskHandle::new(ManualTask {
            id,
            task,
            outcome: outcome_receiver,
            shared: Arc::downgrade(&self.shared),
        })
    }

    fn random_u64(&self) -> u64 {
        let mut inner = self.lock_inner();
        inner.rng_state = inner.rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = inner.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn buggify(&self, _site: &'static str) -> bool {
        false
    }
}

/// The output of a task started with [`ManualRuntime::start`].
pub struct TaskResult<T> {
    output: Arc<Mutex<Option<T>>>,
    handle: TaskHandle,
}

impl<T> TaskResult<T> {
    /// The output, once (later calls return `None`).
    pub fn take(&self) -> Option<T> {
        lock(&self.output).take()
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Abort the task (drops its future at its current `.await`).
    pub fn abort(&self) {
        self.handle.abort();
    }
}

struct TaskWaker {
    id: u64,
    shared: Weak<Shared>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut inner = lock(&shared.inner);
        if inner.tasks.contains_key(&self.id) && inner.queued.insert(self.id) {
            inner.ready.push_back(self.id);
        }
    }
}

struct ManualTask {
    id: u64,
    task: Arc<TaskSlot>,
    outcome: watch::Receiver<Option<TaskOutcome>>,
    shared: Weak<Shared>,
}

impl TaskControl for ManualTask {
    fn abort(&self) {
        self.task.aborted.store(true, Ordering::SeqCst);
        // Taken out under the slot lock, dropped after it: dropping a future
        // may call back into the runtime.
        let parked = lock(&self.task.future).take();
        let Some(future) = parked else {
            // Being polled right now (the poll loop drops it afterwards) or
            // already ended.
            return;
        };
        drop(future);
        if let Some(shared) = self.shared.upgrade() {
            lock(&shared.inner).tasks.remove(&self.id);
        }
        self.task.outcome.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(TaskOutcome::Aborted);
            }
            first
        });
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
            let ended = *outcome.borrow();
            ended.unwrap_or(TaskOutcome::Aborted)
        })
    }
}

struct Sleep {
    shared: Weak<Shared>,
    key: (Instant, u64),
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let Some(shared) = self.shared.upgrade() else {
            return Poll::Pending;
        };
        let mut inner = lock(&shared.inner);
        if inner.now >= self.key.0 {
            inner.timers.remove(&self.key);
            return Poll::Ready(());
        }
        inner.timers.insert(self.key, context.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            lock(&shared.inner).timers.remove(&self.key);
        }
    }
}

/// Lock a testkit mutex. A poisoned lock means a task panicked while holding
/// it, and that panic has already failed the test.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_completes_only_when_the_clock_passes_its_deadline() {
        let runtime = ManualRuntime::new(1);
        let clock = runtime.clone();
        let woke = runtime.start("sleeper", async move {
            clock.sleep(Duration::from_secs(2)).await;
            clock.now()
        });
        runtime.advance(Duration::from_millis(1_999));
        assert!(woke.take().is_none());
        runtime.advance(Duration::from_millis(1));
        assert_eq!(woke.take(), Some(Instant::from_millis(2_000)));
    }

    #[test]
    fn timers_with_the_same_deadline_fire_in_creation_order() {
        let runtime = ManualRuntime::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        for name in ["first", "second", "third"] {
            let sleep = runtime.sleep(Duration::from_secs(1));
            let order = Arc::clone(&order);
            runtime.spawn(
                name,
                Box::pin(async move {
                    sleep.await;
                    lock(&order).push(name);
                }),
            );
        }
        runtime.advance(Duration::from_secs(1));
        assert_eq!(*lock(&order), ["first", "second", "third"]);
    }

    #[test]
    fn abort_drops_the_task_and_join_reports_it() {
        let runtime = ManualRuntime::new(1);
        let clock = runtime.clone();
        let handle = runtime.spawn(
            "forever",
            Box::pin(async move { clock.sleep(Duration::from_secs(3_600)).await }),
        );
        runtime.run_until_idle();
        assert_eq!(runtime.live_tasks(), ["forever"]);
        assert!(runtime.next_timer().is_some());
        handle.abort();
        assert!(handle.is_finished());
        assert!(runtime.live_tasks().is_empty());
        assert_eq!(
            runtime.next_timer(),
            None,
            "the dropped sleep left no timer"
        );
        let joined = runtime.start("joiner", handle.join());
        runtime.run_until_idle();
        assert_eq!(joined.take(), Some(TaskOutcome::Aborted));
    }

    #[test]
    fn random_numbers_repeat_for_the_same_seed() {
        let draw = |seed| {
            let runtime = ManualRuntime::new(seed);
            [runtime.random_u64(), runtime.random_u64()]
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_ne!(draw(7)[0], draw(7)[1]);
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn a_panicking_task_fails_the_test_that_polls_it() {
        let runtime = ManualRuntime::new(1);
        runtime.spawn("bomb", Box::pin(async { panic!("boom") }));
        runtime.run_until_idle();
    }
}
