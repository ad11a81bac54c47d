//! A tiny deterministic executor with a manual virtual clock, and an
//! in-memory network, for the supervisor's async unit tests.
//!
//! Tasks run one at a time in FIFO order of their wake-ups; time moves only
//! when the test calls [`TestRuntime::advance`], which fires timers in
//! deadline order (ties by creation) and runs everything they wake. No
//! threads, no wall clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::runtime::{
    BoxFuture, Connection, FrameReceiver, FrameSender, Instant, Listener, Net, NetError,
    RecvFrames, Runtime, SendFrames, TaskControl, TaskHandle, TaskOutcome,
};

/// Steps one `run_until_idle` may take before the test fails as runaway.
const STEPS_MAX: usize = 100_000;

struct Task {
    name: String,
    future: Option<BoxFuture<'static, ()>>,
    outcome: Option<TaskOutcome>,
    joiners: Vec<Waker>,
}

#[derive(Default)]
struct Scheduler {
    now_nanos: u64,
    ready: VecDeque<u64>,
    queued: BTreeSet<u64>,
    tasks: BTreeMap<u64, Task>,
    timers: BTreeMap<(u64, u64), Waker>,
    next_id: u64,
}

/// The test runtime. Clones share one scheduler.
#[derive(Clone, Default)]
pub(crate) struct TestRuntime {
    scheduler: Arc<Mutex<Scheduler>>,
}

struct TaskWaker {
    id: u64,
    scheduler: Arc<Mutex<Scheduler>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let mut scheduler = self.scheduler.lock().expect("scheduler lock");
        if scheduler.tasks.contains_key(&self.id) && scheduler.queued.insert(self.id) {
            scheduler.ready.push_back(self.id);
        }
    }
}

impl TestRuntime {
    pub(crate) fn new() -> TestRuntime {
        TestRuntime::default()
    }

    fn lock(&self) -> MutexGuard<'_, Scheduler> {
        self.scheduler.lock().expect("scheduler lock")
    }

    /// Run every ready task until none is ready.
    pub(crate) fn run_until_idle(&self) {
        for _ in 0..STEPS_MAX {
            if !self.run_one() {
                return;
            }
        }
        panic!("test executor: more than {STEPS_MAX} steps without going idle");
    }

    /// Poll the first ready task once. Returns false if none was ready.
    pub(crate) fn run_one(&self) -> bool {
        let next = {
            let mut scheduler = self.lock();
            let Some(id) = scheduler.ready.pop_front() else {
                return false;
            };
            scheduler.queued.remove(&id);
            let future = scheduler
                .tasks
                .get_mut(&id)
                .and_then(|task| task.future.take());
            future.map(|future| (id, future))
        };
        let Some((id, mut future)) = next else {
            return true;
        };
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            scheduler: self.scheduler.clone(),
        }));
        let poll = future.as_mut().poll(&mut Context::from_waker(&waker));
        let mut scheduler = self.lock();
        let Some(task) = scheduler.tasks.get_mut(&id) else {
            return true;
        };
        match poll {
            Poll::Ready(()) => {
                task.outcome = Some(TaskOutcome::Completed);
                task.joiners.drain(..).for_each(Waker::wake);
            }
            Poll::Pending if task.outcome.is_none() => task.future = Some(future),
            Poll::Pending => {}
        }
        true
    }

    /// Names of the tasks ready to run, in order.
    // Only the flaw tests interleave by hand.
    #[cfg_attr(not(feature = "flaws"), allow(dead_code))]
    pub(crate) fn ready_tasks(&self) -> Vec<String> {
        let scheduler = self.lock();
        scheduler
            .ready
            .iter()
            .filter_map(|id| scheduler.tasks.get(id).map(|task| task.name.clone()))
            .collect()
    }

    /// Let `duration` of virtual time pass, firing timers in order.
    pub(crate) fn advance(&self, duration: Duration) {
        let target = self.lock().now_nanos + duration.as_nanos() as u64;
        loop {
            self.run_until_idle();
            let due = {
                let mut scheduler = self.lock();
                let next = scheduler.timers.keys().next().copied();
                match next {
                    Some((deadline, _)) if deadline <= target => {
                        scheduler.now_nanos = scheduler.now_nanos.max(deadline);
                        let keys: Vec<_> = scheduler
                            .timers
                            .keys()
                            .take_while(|(at, _)| *at <= deadline)
                            .copied()
                            .collect();
                        keys.into_iter()
                            .filter_map(|key| scheduler.timers.remove(&key))
                            .collect::<Vec<_>>()
                    }
                    _ => break,
                }
            };
            due.into_iter().for_each(Waker::wake);
        }
        self.lock().now_nanos = target;
        self.run_until_idle();
    }

    /// Names of tasks that have not ended.
    pub(crate) fn live_tasks(&self) -> Vec<String> {
        self.lock()
            .tasks
            .values()
            .filter(|task| task.outcome.is_none())
            .map(|task| task.name.clone())
            .collect()
    }

    /// Poll `future` to completion, running other tasks meanwhile (no time
    /// passes). Panics if it cannot complete without time passing.
    pub(crate) fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        let mut future = pin!(future);
        for _ in 0..STEPS_MAX {
            if let Poll::Ready(value) = poll_once(future.as_mut()) {
                return value;
            }
            self.run_until_idle();
        }
        panic!("block_on: the future needs time to pass");
    }
}

/// Poll a future once with a waker that does nothing.
pub(crate) fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

struct Sleep {
    scheduler: Arc<Mutex<Scheduler>>,
    deadline: u64,
    key: Option<(u64, u64)>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let scheduler_arc = self.scheduler.clone();
        let mut scheduler = scheduler_arc.lock().expect("scheduler lock");
        if scheduler.now_nanos >= self.deadline {
            if let Some(key) = self.key.take() {
                scheduler.timers.remove(&key);
            }
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                scheduler.next_id += 1;
                (self.deadline, scheduler.next_id)
            }
        };
        scheduler.timers.insert(key, cx.waker().clone());
        self.key = Some(key);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if let Ok(mut scheduler) = self.scheduler.lock() {
                scheduler.timers.remove(&key);
            }
        }
    }
}

struct Control {
    id: u64,
    scheduler: Arc<Mutex<Scheduler>>,
}

impl TaskControl for Control {
    fn abort(&self) {
        let future = {
            let mut scheduler = self.scheduler.lock().expect("scheduler lock");
            let Some(task) = scheduler.tasks.get_mut(&self.id) else {
                return;
            };
            if task.outcome.is_some() {
                return;
            }
            task.outcome = Some(TaskOutcome::Aborted);
            task.joiners.drain(..).for_each(Waker::wake);
            task.future.take()
        };
        drop(future);
    }
    fn is_finished(&self) -> bool {
        let scheduler = self.scheduler.lock().expect("scheduler lock");
        scheduler
            .tasks
            .get(&self.id)
            .is_none_or(|task| task.outcome.is_some())
    }
    fn join(&self) -> BoxFuture<'static, TaskOutcome> {
        let id = self.id;
        let scheduler = self.scheduler.clone();
        Box::pin(std::future::poll_fn(move |cx| {
            let mut scheduler = scheduler.lock().expect("scheduler lock");
            let task = scheduler.tasks.get_mut(&id).expect("joined task exists");
            match task.outcome {
                Some(outcome) => Poll::Ready(outcome),
                None => {
                    task.joiners.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        }))
    }
}

impl Runtime for TestRuntime {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.lock().now_nanos)
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let deadline = self.lock().now_nanos + duration.as_nanos() as u64;
        Box::pin(Sleep {
            scheduler: self.scheduler.clone(),
            deadline,
            key: None,
        })
    }
    fn spawn(&self, name: &str, future: BoxFuture<'static, ()>) -> TaskHandle {
        let mut scheduler = self.lock();
        scheduler.next_id += 1;
        let id = scheduler.next_id;
        scheduler.tasks.insert(
            id,
            Task {
                name: name.to_owned(),
                future: Some(future),
                outcome: None,
                joiners: Vec::new(),
            },
        );
        scheduler.queued.insert(id);
        scheduler.ready.push_back(id);
        TaskHandle::new(Control {
            id,
            scheduler: self.scheduler.clone(),
        })
    }
    fn random_u64(&self) -> u64 {
        let mut scheduler = self.lock();
        scheduler.next_id += 1;
        scheduler.next_id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn buggify(&self, _site: &'static str) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------
// In-memory network
// ---------------------------------------------------------------------------

enum Frame {
    Data(Vec<u8>),
    Close,
}

struct PipeSender {
    tx: mpsc::UnboundedSender<Frame>,
    closed: Arc<AtomicBool>,
}

impl SendFrames for PipeSender {
    fn send(&self, frame: Vec<u8>) -> Result<(), NetError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(NetError::Closed);
        }
        self.tx
            .send(Frame::Data(frame))
            .map_err(|_| NetError::Reset)
    }
    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            let _ignored = self.tx.send(Frame::Close);
        }
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

struct PipeReceiver {
    rx: mpsc::UnboundedReceiver<Frame>,
    ended: bool,
}

impl RecvFrames for PipeReceiver {
    fn recv(&mut self) -> BoxFuture<'_, Result<Vec<u8>, NetError>> {
        Box::pin(async move {
            if self.ended {
                return Err(NetError::Closed);
            }
            match self.rx.recv().await {
                Some(Frame::Data(frame)) => Ok(frame),
                Some(Frame::Close) | None => {
                    self.ended = true;
                    Err(NetError::Closed)
                }
            }
        })
    }
}

/// Two connected ends.
pub(crate) fn connection_pair(a: &str, b: &str) -> (Connection, Connection) {
    let (a_tx, b_rx) = mpsc::unbounded_channel();
    let (b_tx, a_rx) = mpsc::unbounded_channel();
    let end = |tx, rx, peer: &str| Connection {
        sender: FrameSender::new(Arc::new(PipeSender {
            tx,
            closed: Arc::new(AtomicBool::new(false)),
        })),
        receiver: FrameReceiver::new(Box::new(PipeReceiver { rx, ended: false })),
        peer: peer.to_owned(),
    };
    (end(a_tx, a_rx, b), end(b_tx, b_rx, a))
}

/// The frame waiting on `receiver`, if one is there now.
pub(crate) fn try_recv(receiver: &mut FrameReceiver) -> Option<Result<Vec<u8>, NetError>> {
    let mut future = receiver.recv();
    match poll_once(future.as_mut()) {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => None,
    }
}

/// A network of one node's listeners, by port.
#[derive(Clone, Default)]
pub(crate) struct TestNet {
    listeners: Arc<Mutex<BTreeMap<u16, mpsc::UnboundedSender<Connection>>>>,
}

struct TestListener {
    rx: mpsc::UnboundedReceiver<Connection>,
}

impl Listener for TestListener {
    fn accept(&mut self) -> BoxFuture<'_, Result<Connection, NetError>> {
        Box::pin(async move { self.rx.recv().await.ok_or(NetError::Reset) })
    }
}

impl Net for TestNet {
    fn listen(&self, port: u16) -> Result<Box<dyn Listener>, NetError> {
        let mut listeners = self.listeners.lock().expect("net lock");
        if listeners.contains_key(&port) {
            return Err(NetError::AddressInUse(port.to_string()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        listeners.insert(port, tx);
        Ok(Box::new(TestListener { rx }))
    }
    fn connect(&self, addr: &str) -> BoxFuture<'static, Result<Connection, NetError>> {
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|port| port.parse::<u16>().ok());
        let listener =
            port.and_then(|port| self.listeners.lock().expect("net lock").get(&port).cloned());
        let addr = addr.to_owned();
        Box::pin(async move {
            let listener = listener.ok_or_else(|| NetError::Refused(addr.clone()))?;
            let (ours, theirs) = connection_pair("client", &addr);
            listener.send(theirs).map_err(|_| NetError::Refused(addr))?;
            Ok(ours)
        })
    }
}
