//! Tasks: futures spawned on a node, run by the executor through
//! async-task.
//!
//! Every future is wrapped in [`Supervised`], which records how it ended in
//! a shared [`TaskCell`]: completed, aborted (dropped before completing:
//! through its handle or with its node) or panicked (the panic is caught at
//! the poll so that it never unwinds through the executor). The live task
//! table keeps each task's async-task handle; dropping that handle is how a
//! task is aborted.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use faultline_core::runtime::{BoxFuture, TaskControl, TaskHandle, TaskOutcome};

use crate::ids::{NodeId, TaskId};
use crate::world::Shared;

/// What the executor knows of a runnable without looking it up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TaskMeta {
    pub id: TaskId,
    pub node: NodeId,
    pub incarnation: u32,
}

/// The async-task metadata of every task: what the executor needs without
/// a table lookup, including where the task's outcome will be recorded.
pub(crate) struct TaskTag {
    pub meta: TaskMeta,
    pub cell: Arc<TaskCell>,
}

const RUNNING: u8 = 0;
const COMPLETED: u8 = 1;
const ABORTED: u8 = 2;
const PANICKED: u8 = 3;

/// How a task ended, shared by the task, its handles and the executor.
pub(crate) struct TaskCell {
    /// `RUNNING` until the task ends; then set once, never changed.
    outcome: AtomicU8,
    detail: Mutex<CellDetail>,
}

#[derive(Default)]
struct CellDetail {
    panic_message: Option<String>,
    joiners: Vec<Waker>,
}

impl TaskCell {
    fn new() -> TaskCell {
        TaskCell {
            outcome: AtomicU8::new(RUNNING),
            detail: Mutex::new(CellDetail::default()),
        }
    }

    fn detail(&self) -> std::sync::MutexGuard<'_, CellDetail> {
        self.detail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record the end of the task unless already recorded; wake joiners.
    fn finish(&self, outcome: TaskOutcome, panic_message: Option<String>) {
        let code = match outcome {
            TaskOutcome::Completed => COMPLETED,
            TaskOutcome::Aborted => ABORTED,
            TaskOutcome::Panicked => PANICKED,
        };
        if self
            .outcome
            .compare_exchange(RUNNING, code, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let joiners = {
            let mut detail = self.detail();
            detail.panic_message = panic_message;
            std::mem::take(&mut detail.joiners)
        };
        for joiner in joiners {
            joiner.wake();
        }
    }

    /// How the task ended, if it has.
    pub fn outcome(&self) -> Option<TaskOutcome> {
        match self.outcome.load(Ordering::Acquire) {
            RUNNING => None,
            COMPLETED => Some(TaskOutcome::Completed),
            ABORTED => Some(TaskOutcome::Aborted),
            PANICKED => Some(TaskOutcome::Panicked),
            other => unreachable!("task outcome code {other} is never stored"),
        }
    }

    /// The panic's message, if the task panicked.
    pub fn panic_message(&self) -> Option<String> {
        self.detail().panic_message.clone()
    }

    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<TaskOutcome> {
        if let Some(outcome) = self.outcome() {
            return Poll::Ready(outcome);
        }
        let mut detail = self.detail();
        // Checked again under the lock: `finish` takes the joiners under it.
        if let Some(outcome) = self.outcome() {
            return Poll::Ready(outcome);
        }
        if !detail
            .joiners
            .iter()
            .any(|joiner| joiner.will_wake(cx.waker()))
        {
            detail.joiners.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The future async-task runs: the task's own future, supervised.
struct Supervised {
    inner: BoxFuture<'static, ()>,
    cell: Arc<TaskCell>,
}

impl Future for Supervised {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                this.cell.finish(TaskOutcome::Completed, None);
                Poll::Ready(())
            }
            Err(payload) => {
                this.cell
                    .finish(TaskOutcome::Panicked, Some(panic_text(payload.as_ref())));
                Poll::Ready(())
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Dropped before completing: aborted or killed. No-op otherwise.
        self.cell.finish(TaskOutcome::Aborted, None);
        // A future's destructor may panic once the run has failed (a lock
        // poisoned by the panic that failed it). async-task aborts the
        // process on a panic in a drop, so the future is dropped here, where
        // the panic is caught: the run's failure is already recorded.
        let inner = std::mem::replace(&mut self.inner, Box::pin(std::future::ready(())));
        if catch_unwind(AssertUnwindSafe(move || drop(inner))).is_err() {
            self.cell.finish(
                TaskOutcome::Panicked,
                Some("panic while dropped".to_owned()),
            );
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// A task that has not ended (or whose end the executor has not seen yet).
pub(crate) struct LiveTask {
    pub name: Arc<str>,
    pub meta: TaskMeta,
    /// The async-task handle; `None` once aborted (dropping it aborts).
    pub task: Option<async_task::Task<(), TaskTag>>,
}

/// Every live task, by id.
pub(crate) struct TaskTable {
    pub live: BTreeMap<TaskId, LiveTask>,
    /// Next task number. Invariant: larger than every number handed out.
    number_next: u64,
    /// Slots of ended tasks, reused last-freed first.
    slots_free: Vec<u32>,
    /// Next never-used slot.
    slot_next: u32,
}

impl Default for TaskTable {
    fn default() -> TaskTable {
        TaskTable {
            live: BTreeMap::new(),
            number_next: 1,
            slots_free: Vec::new(),
            slot_next: 0,
        }
    }
}

impl TaskTable {
    /// A fresh id: the next number, and a free slot.
    fn allocate(&mut self) -> TaskId {
        let slot = self.slots_free.pop().unwrap_or_else(|| {
            let slot = self.slot_next;
            self.slot_next = slot.checked_add(1).expect("fewer than 2^32 live tasks");
            slot
        });
        let id = TaskId::new(self.number_next, slot);
        self.number_next += 1;
        id
    }

    /// The task ended or was killed: forget it and free its slot.
    pub fn remove(&mut self, id: TaskId) -> Option<LiveTask> {
        let live = self.live.remove(&id)?;
        self.slots_free.push(id.slot_u32());
        Some(live)
    }
}

/// Start `future` as a task of `node` in `incarnation`. If that incarnation
/// is over, the future is dropped unpolled and the handle reports
/// `Aborted`.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    node: NodeId,
    incarnation: u32,
    name: &str,
    future: BoxFuture<'static, ()>,
) -> TaskHandle {
    let cell = Arc::new(TaskCell::new());
    let mut world = shared.world();
    if !world.is_current(node, incarnation) {
        drop(world);
        drop(future);
        cell.finish(TaskOutcome::Aborted, None);
        return TaskHandle::new(SimTaskControl {
            shared: Arc::clone(shared),
            id: None,
            cell,
        });
    }
    let id = world.tasks.allocate();
    let meta = TaskMeta {
        id,
        node,
        incarnation,
    };
    let waker_target = Arc::clone(shared);
    let supervised = Supervised {
        inner: future,
        cell: Arc::clone(&cell),
    };
    let tag = TaskTag {
        meta,
        cell: Arc::clone(&cell),
    };
    let (runnable, task) = async_task::Builder::new().metadata(tag).spawn(
        move |_| supervised,
        move |runnable| waker_target.push_ready(runnable),
    );
    let name: Arc<str> = Arc::from(name);
    world.trace.name_task(id, &name);
    world.tasks.live.insert(
        id,
        LiveTask {
            name,
            meta,
            task: Some(task),
        },
    );
    drop(world);
    runnable.schedule();
    TaskHandle::new(SimTaskControl {
        shared: Arc::clone(shared),
        id: Some(id),
        cell,
    })
}

/// The simulator's side of a [`TaskHandle`].
struct SimTaskControl {
    shared: Arc<Shared>,
    /// `None` for a task that was never started (its node was down).
    id: Option<TaskId>,
    cell: Arc<TaskCell>,
}

impl TaskControl for SimTaskControl {
    fn abort(&self) {
        let Some(id) = self.id else { return };
        let task = {
            let mut world = self.shared.world();
            world
                .tasks
                .live
                .get_mut(&id)
                .and_then(|live| live.task.take())
        };
        // Dropped outside the lock: async-task schedules the task one last
        // time so that the executor drops its future without polling it.
        drop(task);
    }

    fn is_finished(&self) -> bool {
        self.cell.outcome().is_some()
    }

    fn join(&self) -> BoxFuture<'static, TaskOutcome> {
        let cell = Arc::clone(&self.cell);
        Box::pin(std::future::poll_fn(move |cx| cell.poll_join(cx)))
    }
}
