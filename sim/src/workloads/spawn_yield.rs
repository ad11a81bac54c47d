//! `spawn-yield`: many tasks, each yielding a number of times (returning
//! `Pending` after waking itself), so every poll is a scheduling decision.

use crate::sim::Sim;
use crate::util::yield_now;

use super::{bench_config, finish, WorkloadError, WorkloadRun};

/// Run `tasks` tasks yielding `yields` times each (`yields + 1` polls per
/// task).
pub fn run(seed: u64, tasks: u32, yields: u32) -> Result<WorkloadRun, WorkloadError> {
    let mut sim = Sim::new(bench_config(seed)).expect("the bench configuration is valid");
    let node = sim
        .add_node("yielders", |_| Box::pin(async {}))
        .expect("a fresh node name");
    for _ in 0..tasks {
        sim.spawn(
            node,
            "yielder",
            Box::pin(async move {
                for _ in 0..yields {
                    yield_now().await;
                }
            }),
        );
    }
    finish("spawn-yield", sim)
}
