//! Nodes: simulated processes with their own tasks, clock, listeners and
//! connections.
//!
//! A node is added with an *init* closure that the simulator runs as the
//! node's first task, and runs again each time the node is restarted after
//! a kill. The closure receives a [`NodeContext`]: the node's `Runtime` and
//! `Net` handles for that incarnation.

use std::fmt;
use std::sync::Arc;

use faultline_core::runtime::{BoxFuture, Instant, Net, Runtime};

use crate::clock::NodeClock;
use crate::disk::SimDisk;
use crate::ids::NodeId;
use crate::net::SimNet;
use crate::runtime::SimRuntime;
use crate::world::Shared;

/// The code a node runs when it starts and each time it restarts.
pub type NodeInit = Arc<dyn Fn(NodeContext) -> BoxFuture<'static, ()> + Send + Sync + 'static>;

/// Whether a node's process is running.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Life {
    /// Running (possibly stalled).
    Alive,
    /// Killed: no tasks, no listeners, no connections, until restarted.
    Killed,
}

/// One node's state.
pub(crate) struct NodeState {
    pub name: Arc<str>,
    pub init: NodeInit,
    /// Counts kills: handles carry the incarnation they were made for, and
    /// those of an earlier incarnation are refused.
    pub incarnation: u32,
    pub life: Life,
    /// While set and in the future, the node's tasks are not polled.
    pub stalled_until: Option<Instant>,
    pub clock: NodeClock,
}

impl NodeState {
    pub fn new(name: Arc<str>, init: NodeInit) -> NodeState {
        NodeState {
            name,
            init,
            incarnation: 0,
            life: Life::Alive,
            stalled_until: None,
            clock: NodeClock::default(),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.life == Life::Alive
    }
}

/// What a node's code gets: its identity and its handles for one
/// incarnation. Cheap to clone.
#[derive(Clone)]
pub struct NodeContext {
    id: NodeId,
    name: Arc<str>,
    incarnation: u32,
    runtime: Arc<dyn Runtime>,
    net: Arc<dyn Net>,
    shared: Arc<Shared>,
}

impl NodeContext {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        id: NodeId,
        name: Arc<str>,
        incarnation: u32,
    ) -> NodeContext {
        NodeContext {
            id,
            name,
            incarnation,
            runtime: Arc::new(SimRuntime::new(Arc::clone(shared), id, incarnation)),
            net: Arc::new(SimNet::new(Arc::clone(shared), id, incarnation)),
            shared: Arc::clone(shared),
        }
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's name (also the host part of its addresses, `name:port`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many times the node was killed before this incarnation started.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// Time, timers, tasks, randomness and buggify for this node.
    pub fn runtime(&self) -> Arc<dyn Runtime> {
        Arc::clone(&self.runtime)
    }

    /// This node's network.
    pub fn net(&self) -> Arc<dyn Net> {
        Arc::clone(&self.net)
    }

    /// This node's disk (see [`crate::disk`]).
    pub fn disk(&self) -> SimDisk {
        SimDisk::new(self, Arc::clone(&self.shared))
    }
}

impl fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeContext")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

/// A node as reported by [`Sim::nodes`](crate::Sim::nodes).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NodeInfo {
    /// Its id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Running or killed.
    pub life: Life,
    /// Kills so far.
    pub incarnation: u32,
    /// Until when it is stalled, if it is.
    pub stalled_until: Option<Instant>,
    /// Its clock's offset from the global virtual clock, in nanoseconds.
    pub clock_offset_nanos: i64,
}
