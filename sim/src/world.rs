//! The state shared between the [`Sim`](crate::Sim) (which advances it) and
//! the per-node handles (which ask it for time, timers, tasks and frames).
//!
//! # Locks
//!
//! [`Shared`] holds two locks, taken in this order and never the other way:
//! 1. `world`: the [`World`] (clock, events, nodes, live tasks, network);
//! 2. `inbox`: runnables woken since the executor last looked.
//!
//! The trace sink has its own lock, taken after either. Invariants that keep
//! this free of deadlocks on one thread:
//! * no task is polled and no future is dropped while `world` is held (a
//!   dropped future's handles lock `world` themselves);
//! * the world stores only plain data and wakers, never a future, a
//!   connection handle or an async-task `Runnable`; waking or dropping a
//!   waker only ever takes the `inbox` lock;
//! * code under `inbox` calls nothing.

use std::sync::{Arc, Mutex, MutexGuard};

use async_task::Runnable;
use faultline_core::runtime::Instant;

use crate::buggify::Buggify;
use crate::choices::SimRng;
use crate::clock::{EventQueue, Timeline, Timers};
use crate::disk::Disks;
use crate::ids::NodeId;
use crate::net::NetState;
use crate::node::NodeState;
use crate::task::{PollEnd, TaskTable, TaskTag};
use crate::trace::TraceSink;

/// What the simulator and every handle of one run share.
pub(crate) struct Shared {
    world: Mutex<World>,
    inbox: Mutex<Vec<Runnable<TaskTag>>>,
    /// How the task being polled ended, if it did (no lock: the run is on
    /// one thread at a time).
    pub poll_end: PollEnd,
}

impl Shared {
    pub fn new(world: World) -> Shared {
        Shared {
            world: Mutex::new(world),
            inbox: Mutex::new(Vec::new()),
            poll_end: PollEnd::new(),
        }
    }

    /// Lock the world. A poisoned lock means a simulator bug panicked while
    /// holding it; the state is still read so that teardown can finish.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A task was woken (the async-task schedule function).
    pub fn push_ready(&self, runnable: Runnable<TaskTag>) {
        self.inbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(runnable);
    }

    /// The tasks woken and not yet taken by the executor.
    pub fn woken_tasks(&self) -> Vec<crate::ids::TaskId> {
        self.inbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|runnable| runnable.metadata().meta.id)
            .collect()
    }

    /// Move every woken runnable into `into` (which must be empty), in the
    /// order they were woken.
    pub fn take_ready(&self, into: &mut Vec<Runnable<TaskTag>>) {
        debug_assert!(into.is_empty(), "take_ready appends to an empty buffer");
        let mut inbox = self
            .inbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::swap(&mut *inbox, into);
    }
}

/// The simulated world: everything handles may ask about.
pub(crate) struct World {
    /// The global virtual clock (read with [`World::now`]) and the next
    /// event's time. Only the executor moves the clock, and only forwards.
    pub timeline: Arc<Timeline>,
    pub events: EventQueue,
    pub timers: Timers,
    /// Every node, by [`NodeId`] index.
    pub nodes: Vec<NodeState>,
    pub tasks: TaskTable,
    pub net: NetState,
    /// The [`Purpose::Ids`](crate::Purpose::Ids) stream behind
    /// `Runtime::random_u64`.
    pub ids_rng: SimRng,
    pub buggify: Buggify,
    pub trace: Arc<TraceSink>,
    /// Every node's disk (they outlive the nodes' incarnations).
    pub disks: Disks,
}

impl World {
    /// The global virtual time, as the executor last published it.
    pub fn now(&self) -> Instant {
        self.timeline.now()
    }

    /// The node, which must exist.
    pub fn node(&self, node: NodeId) -> &NodeState {
        &self.nodes[node.index()]
    }

    /// Whether `node` is alive in `incarnation` (a handle of an earlier
    /// incarnation is stale: its node was killed since).
    pub fn is_current(&self, node: NodeId, incarnation: u32) -> bool {
        let state = self.node(node);
        state.is_alive() && state.incarnation == incarnation
    }

    /// The id of the node named `name`.
    pub fn node_named(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|node| &*node.name == name)
            .map(|index| NodeId(u32::try_from(index).expect("node count fits in u32")))
    }

    /// The node's current clock reading.
    pub fn local_now(&self, node: NodeId) -> Instant {
        self.node(node).clock.local(self.now())
    }
}
