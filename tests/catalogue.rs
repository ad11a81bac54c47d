//! Every catalogue scenario over the environment's seeds (`FAULTLINE_SEEDS`,
//! `FAULTLINE_SEED_START`, `FAULTLINE_SEED`; see
//! `faultline_scenarios::testing`), a snapshot of one fixed run's trace
//! summary, and generated scenarios within bounds × seeds (proptest; its
//! regressions are kept in `tests/proptest-regressions/`).

use std::time::Duration;

use faultline_core::protocol::JobKind;
use faultline_scenarios::testing::assert_seeds_pass;
use faultline_scenarios::{catalogue_dir, find_scenario, run, RunOptions, Scenario};
use proptest::prelude::*;

macro_rules! catalogue_seeds {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                assert_seeds_pass(&catalogue_dir().join($file));
            }
        )*
    };
}

catalogue_seeds! {
    smoke_passes_its_seeds => "smoke.toml",
    cancel_storm_passes_its_seeds => "cancel-storm.toml",
    slot_pressure_passes_its_seeds => "slot-pressure.toml",
    agent_churn_passes_its_seeds => "agent-churn.toml",
    partitions_pass_their_seeds => "partitions.toml",
    stalls_pass_their_seeds => "stalls.toml",
    timeout_races_pass_their_seeds => "timeout-races.toml",
    client_disconnects_pass_their_seeds => "client-disconnects.toml",
    chaos_passes_its_seeds => "chaos.toml",
    supervisor_restart_passes_its_seeds => "supervisor-restart.toml",
}

#[test]
fn trace_summary_of_a_fixed_run_is_stable() {
    let (_, scenario) = find_scenario(&catalogue_dir(), "cancel-storm")
        .expect("the catalogue loads")
        .expect("cancel-storm is in the catalogue");
    let report = run(&scenario, &RunOptions::new(42));
    let reached: Vec<String> = report
        .probes
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(probe, count)| format!("{probe}={count}"))
        .collect();
    let summary = format!(
        "scenario={} seed={:#x} scheduler={}\nhash={} events={} steps={} sim_time={:.3}s\noutcome={}\nfaults={} actions={} swarm_off=[{}]\nprobes: {}\n",
        report.scenario,
        report.seed,
        report.scheduler,
        report.hash,
        report.events,
        report.steps,
        report.sim_time.as_secs_f64(),
        report.failure().map_or("pass".to_string(), |failure| failure.to_string()),
        report.plan.events.len(),
        report.workload.actions.len(),
        report.swarm_off.join(", "),
        reached.join(" ")
    );
    insta::assert_snapshot!("cancel_storm_seed_42_summary", summary);
}

/// A scenario drawn within bounds: topology, capacities and workload.
fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        (1u32..=3, 1u32..=3, 1u32..=2, 1u32..=2, 1u32..=4),
        (
            1u32..=12,
            0.0f64..=1.0,
            0.0f64..=0.2,
            0.0f64..=0.4,
            0.0f64..=0.3,
        ),
    )
        .prop_map(
            |(
                (agents, slots, clients, sequential, parallel),
                (jobs, parallel_fraction, failure, cancel, overrun),
            )| {
                let mut scenario =
                    Scenario::parse("generated.toml".as_ref(), "name = \"generated\"\n")
                        .expect("a name alone is a valid scenario");
                scenario.topology.agents = agents;
                scenario.topology.agent_slots = slots;
                scenario.topology.clients = clients;
                scenario
                    .topology
                    .pools
                    .insert(JobKind::Sequential, sequential);
                scenario.topology.pools.insert(JobKind::Parallel, parallel);
                scenario.workload.jobs = jobs;
                scenario.workload.parallel_fraction = parallel_fraction;
                scenario.workload.failure_probability = failure;
                scenario.workload.cancel_probability = cancel;
                scenario.workload.overrun_probability = overrun;
                scenario.workload.duration_max = Duration::from_secs(20);
                scenario
                    .validate()
                    .expect("generated scenarios stay within bounds");
                scenario
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn generated_scenarios_pass(scenario in scenario_strategy(), seed in any::<u64>()) {
        let report = run(&scenario, &RunOptions::new(seed));
        prop_assert!(
            report.outcome.is_pass(),
            "{:?} seed {seed:#x}: {:?}",
            scenario.topology,
            report.failure()
        );
    }
}
