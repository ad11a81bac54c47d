//! Tasks: futures spawned on a node, run by the executor through
//! async-task.
//!
//! Every future is wrapped in [`Supervised`], which records how it ended in
//! a shared [`TaskCell`]: completed, aborted (dropped before completing:
//! through its handle or with its node) or panicked (the panic is caught at
//! the poll so that it never unwinds through the executor). The cell lives
//! in the task's [`TaskState`], one allocation shared with the task's
//! handle; a panic's message goes to the executor through [`PollEnd`]. The
//! live task table keeps each task's async-task handle; dropping that handle
//! is how a task is aborted.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
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
/// a table lookup.
pub(crate) struct TaskTag {
    pub meta: TaskMeta,
}

const RUNNING: u8 = 0;
const COMPLETED: u8 = 1;
const ABORTED: u8 = 2;
const PANICKED: u8 = 3;

/// How a task ended, shared by the task, its handles and the executor.
pub(crate) struct TaskCell {
    /// `RUNNING` until the task ends; then set once, never changed.
    outcome: AtomicU8,
    /// Wakers of the join futures waiting for the end.
    joiners: Mutex<Vec<Waker>>,
}

impl TaskCell {
    fn new() -> TaskCell {
        TaskCell {
            outcome: AtomicU8::new(RUNNING),
            joiners: Mutex::new(Vec::new()),
        }
    }

    fn joiners(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        self.joiners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record the end of the task unless already recorded; wake joiners.
    /// Returns whether this call recorded it.
    fn finish(&self, outcome: TaskOutcome) -> bool {
        if self
            .outcome
            .compare_exchange(
                RUNNING,
                outcome_code(outcome),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return false;
        }
        let joiners = std::mem::take(&mut *self.joiners());
        for joiner in joiners {
            joiner.wake();
        }
        true
    }

    /// How the task ended, if it has.
    pub fn outcome(&self) -> Option<TaskOutcome> {
        outcome_of(self.outcome.load(Ordering::Acquire))
    }

    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<TaskOutcome> {
        if let Some(outcome) = self.outcome() {
            return Poll::Ready(outcome);
        }
        let mut joiners = self.joiners();
        // Checked again under the lock: `finish` takes the joiners under it.
        if let Some(outcome) = self.outcome() {
            return Poll::Ready(outcome);
        }
        if !joiners.iter().any(|joiner| joiner.will_wake(cx.waker())) {
            joiners.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

fn outcome_code(outcome: TaskOutcome) -> u8 {
    match outcome {
        TaskOutcome::Completed => COMPLETED,
        TaskOutcome::Aborted => ABORTED,
        TaskOutcome::Panicked => PANICKED,
    }
}

fn outcome_of(code: u8) -> Option<TaskOutcome> {
    match code {
        RUNNING => None,
        COMPLETED => Some(TaskOutcome::Completed),
        ABORTED => Some(TaskOutcome::Aborted),
        PANICKED => Some(TaskOutcome::Panicked),
        other => unreachable!("task outcome code {other} is never stored"),
    }
}

/// How the task being polled ended, if it ended during the poll: the
/// executor learns it without touching the task's cell at every poll.
///
/// A future is dropped only when its runnable is run or dropped, so the
/// only task that can end while the executor runs one is that task; a
/// runnable dropped outside a poll leaves a stale value, which the
/// executor clears before the next poll.
///
/// A panic's message travels beside it, set only when a task panics: the
/// executor takes it after a poll that ended in a panic (which overwrote
/// any message left by a runnable dropped outside a poll).
pub(crate) struct PollEnd {
    outcome: AtomicU8,
    panic_message: Mutex<Option<String>>,
}

impl PollEnd {
    pub fn new() -> PollEnd {
        PollEnd {
            outcome: AtomicU8::new(RUNNING),
            panic_message: Mutex::new(None),
        }
    }

    /// A poll starts: no task has ended in it yet.
    pub fn clear(&self) {
        self.outcome.store(RUNNING, Ordering::Relaxed);
    }

    fn record(&self, outcome: TaskOutcome, panic_message: Option<String>) {
        if panic_message.is_some() {
            *self.message_slot() = panic_message;
        }
        self.outcome.store(outcome_code(outcome), Ordering::Relaxed);
    }

    fn message_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.panic_message
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How the polled task ended, if it did since `clear`.
    pub fn outcome(&self) -> Option<TaskOutcome> {
        outcome_of(self.outcome.load(Ordering::Relaxed))
    }

    /// The message of the last recorded panic (taken: asked once).
    pub fn take_panic_message(&self) -> Option<String> {
        self.message_slot().take()
    }
}

/// The future async-task runs: the task's own future, supervised.
struct Supervised {
    inner: BoxFuture<'static, ()>,
    /// Shared with the task's handle.
    state: Arc<TaskState>,
}

impl Supervised {
    /// Record how the task ended, once, in its cell and for the executor.
    fn finish(&self, outcome: TaskOutcome, panic_message: Option<String>) {
        if self.state.cell.finish(outcome) {
            self.state.shared.poll_end.record(outcome, panic_message);
        }
    }
}

impl Future for Supervised {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                this.finish(TaskOutcome::Completed, None);
                Poll::Ready(())
            }
            Err(payload) => {
                this.finish(TaskOutcome::Panicked, Some(panic_text(payload.as_ref())));
                Poll::Ready(())
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Dropped before completing: aborted or killed. No-op otherwise.
        self.finish(TaskOutcome::Aborted, None);
        // A future's destructor may panic once the run has failed (a lock
        // poisoned by the panic that failed it). async-task aborts the
        // process on a panic in a drop, so the future is dropped here, where
        // the panic is caught: the run's failure is already recorded.
        let inner = std::mem::replace(&mut self.inner, Box::pin(std::future::ready(())));
        if catch_unwind(AssertUnwindSafe(move || drop(inner))).is_err() {
            self.finish(
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

/// Every live task, by slot (the slot is part of the task's id).
pub(crate) struct TaskTable {
    /// Invariant: `slots[id.slot()]` holds the live task `id`, and a slot
    /// is free (`None`, and in `slots_free`) while no live task has it.
    slots: Vec<Option<LiveTask>>,
    /// How many slots hold a task.
    live_count: usize,
    /// Next task number. Invariant: larger than every number handed out.
    number_next: u64,
    /// Slots of ended tasks, reused last-freed first.
    slots_free: Vec<u32>,
    /// Next never-used slot.
    slot_next: u32,
    /// The name of the last task spawned, shared with the next task of
    /// the same name instead of allocating it again.
    name_last: Option<Arc<str>>,
}

impl Default for TaskTable {
    fn default() -> TaskTable {
        TaskTable {
            slots: Vec::new(),
            live_count: 0,
            number_next: 1,
            slots_free: Vec::new(),
            slot_next: 0,
            name_last: None,
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

    /// `name` as a shared string (the previous task's, if the same).
    fn intern(&mut self, name: &str) -> Arc<str> {
        match &self.name_last {
            Some(last) if **last == *name => Arc::clone(last),
            _ => {
                let name: Arc<str> = Arc::from(name);
                self.name_last = Some(Arc::clone(&name));
                name
            }
        }
    }

    /// Keep `live` in the slot of its id (allocated by `allocate`).
    fn insert(&mut self, live: LiveTask) {
        let slot = live.meta.id.slot();
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        let previous = self.slots[slot].replace(live);
        assert!(previous.is_none(), "a slot serves one live task");
        self.live_count += 1;
    }

    /// The live task `id`.
    pub fn get_mut(&mut self, id: TaskId) -> Option<&mut LiveTask> {
        self.slots
            .get_mut(id.slot())?
            .as_mut()
            .filter(|live| live.meta.id == id)
    }

    /// The task ended or was killed: forget it and free its slot.
    pub fn remove(&mut self, id: TaskId) -> Option<LiveTask> {
        let slot = self.slots.get_mut(id.slot())?;
        if slot.as_ref().is_none_or(|live| live.meta.id != id) {
            return None;
        }
        let live = slot.take().expect("checked above");
        self.live_count -= 1;
        self.slots_free.push(id.slot_u32());
        Some(live)
    }

    /// How many tasks are live.
    pub fn len(&self) -> usize {
        self.live_count
    }

    /// Every live task, in id order.
    pub fn in_order(&self) -> Vec<&LiveTask> {
        let mut live: Vec<&LiveTask> = self.slots.iter().flatten().collect();
        live.sort_unstable_by_key(|live| live.meta.id);
        live
    }

    /// The ids of `node`'s live tasks, in id order.
    pub fn ids_of(&self, node: NodeId) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .slots
            .iter()
            .flatten()
            .filter(|live| live.meta.node == node)
            .map(|live| live.meta.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Take every live task out, in id order (for teardown).
    pub fn take_all(&mut self) -> Vec<LiveTask> {
        let mut live: Vec<LiveTask> = std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .collect();
        live.sort_unstable_by_key(|live| live.meta.id);
        self.live_count = 0;
        live
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
    let mut world = shared.world();
    if !world.is_current(node, incarnation) {
        drop(world);
        drop(future);
        let state = TaskState::new(shared, None);
        state.cell.finish(TaskOutcome::Aborted);
        return TaskHandle::from_shared(state);
    }
    let id = world.tasks.allocate();
    let meta = TaskMeta {
        id,
        node,
        incarnation,
    };
    let state = TaskState::new(shared, Some(id));
    let waker_target = Arc::clone(shared);
    let supervised = Supervised {
        inner: future,
        state: Arc::clone(&state),
    };
    let tag = TaskTag { meta };
    let (runnable, task) = async_task::Builder::new().metadata(tag).spawn(
        move |_| supervised,
        move |runnable| waker_target.push_ready(runnable),
    );
    let name = world.tasks.intern(name);
    world.trace.name_task(id, &name);
    world.tasks.insert(LiveTask {
        name,
        meta,
        task: Some(task),
    });
    drop(world);
    runnable.schedule();
    TaskHandle::from_shared(state)
}

/// A task's outcome cell together with what its handle needs: one
/// allocation shared by the running task and its handle.
struct TaskState {
    cell: TaskCell,
    shared: Arc<Shared>,
    /// `None` for a task that was never started (its node was down).
    id: Option<TaskId>,
    /// This state itself, for the join futures (which outlive a borrow).
    this: Weak<TaskState>,
}

impl TaskState {
    fn new(shared: &Arc<Shared>, id: Option<TaskId>) -> Arc<TaskState> {
        Arc::new_cyclic(|this| TaskState {
            cell: TaskCell::new(),
            shared: Arc::clone(shared),
            id,
            this: this.clone(),
        })
    }
}

/// The simulator's side of a [`TaskHandle`].
impl TaskControl for TaskState {
    fn abort(&self) {
        let Some(id) = self.id else { return };
        let task = {
            let mut world = self.shared.world();
            world.tasks.get_mut(id).and_then(|live| live.task.take())
        };
        // Dropped outside the lock: async-task schedules the task one last
        // time so that the executor drops its future without polling it.
        drop(task);
    }

    fn is_finished(&self) -> bool {
        self.cell.outcome().is_some()
    }

    fn join(&self) -> BoxFuture<'static, TaskOutcome> {
        let state = self
            .this
            .upgrade()
            .expect("join is called through a handle, which keeps the state alive");
        Box::pin(std::future::poll_fn(move |cx| state.cell.poll_join(cx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(table: &mut TaskTable, node: u32, name: &str) -> TaskId {
        let id = table.allocate();
        let name = table.intern(name);
        table.insert(LiveTask {
            name,
            meta: TaskMeta {
                id,
                node: NodeId(node),
                incarnation: 0,
            },
            task: None,
        });
        id
    }

    #[test]
    fn a_freed_slot_serves_a_new_task_and_the_old_id_no_longer_finds_it() {
        let mut table = TaskTable::default();
        let first = live(&mut table, 0, "a");
        let second = live(&mut table, 0, "b");
        assert!(table.remove(first).is_some());
        assert!(table.remove(first).is_none(), "removed once");
        let third = live(&mut table, 1, "c");
        assert_eq!(third.slot(), first.slot(), "the freed slot is reused");
        assert!(table.get_mut(first).is_none(), "a stale id misses");
        assert!(table.remove(first).is_none(), "a stale id removes nothing");
        assert_eq!(table.len(), 2);
        let order: Vec<TaskId> = table.in_order().iter().map(|live| live.meta.id).collect();
        assert_eq!(order, vec![second, third], "id order, not slot order");
        assert_eq!(table.ids_of(NodeId(1)), vec![third]);
    }

    #[test]
    fn a_cell_records_only_the_first_end_and_the_poll_end_follows_it() {
        let cell = TaskCell::new();
        let end = PollEnd::new();
        assert!(cell.finish(TaskOutcome::Completed));
        end.record(TaskOutcome::Completed, None);
        assert!(!cell.finish(TaskOutcome::Aborted), "already ended");
        assert_eq!(cell.outcome(), Some(TaskOutcome::Completed));
        assert_eq!(end.outcome(), Some(TaskOutcome::Completed));
        end.clear();
        assert_eq!(end.outcome(), None);
    }

    #[test]
    fn a_panic_message_is_taken_once_and_a_later_panic_replaces_a_stale_one() {
        let end = PollEnd::new();
        end.record(
            TaskOutcome::Panicked,
            Some("dropped outside a poll".to_owned()),
        );
        end.clear();
        end.record(TaskOutcome::Completed, None);
        end.clear();
        end.record(TaskOutcome::Panicked, Some("boom".to_owned()));
        assert_eq!(end.outcome(), Some(TaskOutcome::Panicked));
        assert_eq!(end.take_panic_message().as_deref(), Some("boom"));
        assert_eq!(end.take_panic_message(), None, "taken once");
    }

    #[test]
    fn consecutive_tasks_of_one_name_share_it() {
        let mut table = TaskTable::default();
        let first = table.intern("worker");
        let second = table.intern("worker");
        let other = table.intern("reader");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(&*other, "reader");
    }
}
