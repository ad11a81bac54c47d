//! Identifiers of simulated things: nodes and tasks.
//!
//! Both are small integers handed out in creation order, so they are the
//! same in every run of a seed and can be hashed into the trace fingerprint.

use std::fmt;

/// A simulated node (one process: a supervisor, an agent, a client), in the
/// order nodes were added to the [`Sim`](crate::Sim). Stable across kill and
/// restart: a restarted node keeps its id and gets a new incarnation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    /// The node's position in the order nodes were added (0 for the first).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A task, numbered from 1 in spawn order over the whole run. The number is
/// never reused, not even across node restarts. Ordered by number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TaskId {
    number: u64,
    /// Where the executor keeps the task while it lives; reused after it
    /// ends (the number tells incarnations of a slot apart).
    slot: u32,
}

impl TaskId {
    pub(crate) const fn new(number: u64, slot: u32) -> TaskId {
        TaskId { number, slot }
    }

    /// The task's number (1 for the first task spawned in the run).
    pub fn as_u64(self) -> u64 {
        self.number
    }

    pub(crate) fn slot(self) -> usize {
        self.slot as usize
    }

    pub(crate) fn slot_u32(self) -> u32 {
        self.slot
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.number)
    }
}
