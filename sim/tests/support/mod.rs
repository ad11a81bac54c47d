//! Helpers shared by the simulator's integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_core::runtime::{BoxFuture, Instant, Runtime};
use faultline_sim::{
    BuggifyConfig, LinkConfig, NodeContext, NodeId, PollCost, QuiescencePolicy, SchedulerKind, Sim,
    SimConfig, TraceCapture,
};

/// A configuration whose timing is exact: polls cost nothing, every link
/// takes exactly 10 ms, tasks run first-ready first-polled, no buggify,
/// idle when nothing is pending, every event kept.
pub fn exact_config(seed: u64) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.scheduler = SchedulerKind::Fifo;
    config.poll_cost = PollCost::fixed(Duration::ZERO);
    config.link_default = LinkConfig::fixed(LATENCY);
    config.buggify = BuggifyConfig::Off;
    config.quiescence = QuiescencePolicy::Idle;
    config.trace.capture = TraceCapture::Events;
    config
}

/// The latency of [`exact_config`] links.
pub const LATENCY: Duration = Duration::from_millis(10);

/// A simulation with [`exact_config`].
pub fn exact_sim(seed: u64) -> Sim {
    Sim::new(exact_config(seed)).expect("a valid configuration")
}

/// Milliseconds since the start of the run.
pub fn ms(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

/// A shared, ordered log that tasks append to and the test reads.
#[derive(Clone, Default)]
pub struct Log<T> {
    entries: Arc<Mutex<Vec<T>>>,
}

impl<T: Clone> Log<T> {
    pub fn new() -> Log<T> {
        Log {
            entries: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn push(&self, entry: T) {
        self.entries.lock().expect("log lock").push(entry);
    }

    pub fn entries(&self) -> Vec<T> {
        self.entries.lock().expect("log lock").clone()
    }
}

/// Add a node whose init is `init`, returning its id.
pub fn node<F, Fut>(sim: &mut Sim, name: &str, init: F) -> NodeId
where
    F: Fn(NodeContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    sim.add_node(name, move |context| -> BoxFuture<'static, ()> {
        Box::pin(init(context))
    })
    .expect("a fresh node name")
}

/// Add a node that does nothing at start (tasks are spawned from outside).
pub fn idle_node(sim: &mut Sim, name: &str) -> NodeId {
    node(sim, name, |_| async {})
}

/// The node-local time in milliseconds.
pub fn now_ms(runtime: &Arc<dyn Runtime>) -> u64 {
    runtime.now().as_millis()
}
