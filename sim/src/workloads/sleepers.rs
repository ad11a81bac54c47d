//! `sleepers`: many tasks, each sleeping a duration drawn uniformly from
//! 1 s to 3600 s.

use std::time::Duration;

use rand::Rng;

use crate::sim::Sim;

use super::{bench_config, finish, WorkloadError, WorkloadRun};

/// Run `tasks` sleepers.
pub fn run(seed: u64, tasks: u32) -> Result<WorkloadRun, WorkloadError> {
    let mut sim = Sim::new(bench_config(seed)).expect("the bench configuration is valid");
    let node = sim
        .add_node("sleepers", |_| Box::pin(async {}))
        .expect("a fresh node name");
    let runtime = sim.context(node).runtime();
    for _ in 0..tasks {
        let millis = sim.workload_rng().gen_range(1_000..=3_600_000);
        let sleeper = runtime.sleep(Duration::from_millis(millis));
        sim.spawn(node, "sleeper", sleeper);
    }
    finish("sleepers", sim)
}
