//! The shipped catalogue on the correct supervisor: every scenario passes
//! its first seeds, runs are deterministic, explicit plans and workloads
//! replay the generated run, runs on many threads give the hashes they give
//! alone.

use std::collections::BTreeSet;

use faultline_scenarios::{
    catalogue_dir, check_plan, load_catalogue, run, RunOptions, RunReport, Scenario, TraceMode,
    Workload, PROBES,
};
use faultline_sim::FaultPlan;

fn catalogue() -> Vec<Scenario> {
    load_catalogue(&catalogue_dir())
        .expect("the shipped catalogue loads")
        .into_iter()
        .map(|(_, scenario)| scenario)
        .collect()
}

fn scenario(name: &str) -> Scenario {
    catalogue()
        .into_iter()
        .find(|scenario| scenario.name == name)
        .unwrap_or_else(|| panic!("the catalogue has {name}"))
}

fn expect_pass(report: &RunReport) {
    if let Some(failure) = report.failure() {
        panic!(
            "{} seed {} failed: {failure}\n{}\n{}",
            report.scenario,
            report.seed,
            failure.hang_report.as_deref().unwrap_or(""),
            report.trace_tail.join("\n")
        );
    }
}

#[test]
fn the_catalogue_has_every_required_scenario_with_a_description() {
    let scenarios = catalogue();
    let names: BTreeSet<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    for required in [
        "smoke",
        "cancel-storm",
        "slot-pressure",
        "agent-churn",
        "partitions",
        "stalls",
        "timeout-races",
        "client-disconnects",
        "chaos",
        "supervisor-restart",
    ] {
        assert!(names.contains(required), "missing {required}: {names:?}");
    }
    assert!(scenarios.iter().all(|s| !s.description.is_empty()));
}

#[test]
fn every_catalogue_scenario_passes_its_first_seeds() {
    for scenario in catalogue() {
        for seed in 0..3 {
            let report = run(&scenario, &RunOptions::new(seed));
            expect_pass(&report);
            assert!(
                report.steps > 100,
                "{} seed {seed} did something",
                scenario.name
            );
            assert!(
                report.sim_time >= scenario.heal,
                "{} ran past its heal time",
                scenario.name
            );
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_hash_and_other_seeds_do_not() {
    for name in ["smoke", "chaos"] {
        let scenario = scenario(name);
        let first = run(&scenario, &RunOptions::new(7));
        let second = run(&scenario, &RunOptions::new(7));
        assert_eq!(first.hash, second.hash, "{name}");
        assert_eq!(first.events, second.events, "{name}");
        assert_eq!(first.steps, second.steps, "{name}");
        let other = run(&scenario, &RunOptions::new(8));
        assert_ne!(first.hash, other.hash, "{name}: seeds 7 and 8");
    }
}

#[test]
fn an_explicit_plan_and_workload_replay_the_generated_run_through_toml() {
    let scenario = scenario("chaos");
    let generated = run(&scenario, &RunOptions::new(3));
    assert!(!generated.plan.is_empty(), "chaos seed 3 has faults");
    let plan = FaultPlan::from_toml(&generated.plan.to_toml(), "plan.toml").expect("reads back");
    check_plan(&scenario, &plan).expect("a generated plan fits its scenario");
    let workload =
        Workload::from_toml(&generated.workload.to_toml(), "workload.toml").expect("reads back");
    let options = RunOptions {
        plan: Some(plan),
        workload: Some(workload),
        ..RunOptions::new(3)
    };
    let replayed = run(&scenario, &options);
    assert_eq!(replayed.hash, generated.hash);
    assert!(
        replayed.swarm_off.is_empty(),
        "an explicit plan has no swarm"
    );
}

#[test]
fn removing_every_fault_changes_the_run_but_not_the_workload() {
    let scenario = scenario("partitions");
    let generated = run(&scenario, &RunOptions::new(2));
    let calm = run(
        &scenario,
        &RunOptions {
            plan: Some(FaultPlan::empty()),
            ..RunOptions::new(2)
        },
    );
    expect_pass(&calm);
    assert_eq!(calm.workload, generated.workload);
    assert_ne!(calm.hash, generated.hash);
}

#[test]
fn runs_on_many_threads_give_the_hashes_they_give_alone() {
    let scenario = scenario("cancel-storm");
    let alone: Vec<String> = (0..4)
        .map(|seed| run(&scenario, &RunOptions::new(seed)).hash)
        .collect();
    let threads: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|seed| {
                let scenario = &scenario;
                scope.spawn(move || run(scenario, &RunOptions::new(seed)).hash)
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a run does not panic"))
            .collect()
    });
    assert_eq!(alone, threads);
}

#[test]
fn a_full_trace_keeps_text_and_chrome_json_and_the_same_hash() {
    let scenario = scenario("smoke");
    let hashed = run(&scenario, &RunOptions::new(1));
    let full = run(
        &scenario,
        &RunOptions {
            trace: TraceMode::Full,
            ..RunOptions::new(1)
        },
    );
    assert_eq!(full.hash, hashed.hash);
    assert!(hashed.trace_text.is_none() && hashed.chrome_trace.is_none());
    let text = full.trace_text.expect("a full trace keeps its text");
    assert!(text.contains("job submitted"), "the trace tells the story");
    assert!(text.lines().count() as u64 >= full.events);
    let chrome = full.chrome_trace.expect("and its chrome export");
    let chrome: serde_json::Value = serde_json::from_str(&chrome).expect("valid JSON");
    assert!(
        chrome.to_string().contains("\"ph\""),
        "trace events with phases"
    );
    assert!(!hashed.trace_tail.is_empty() && hashed.trace_tail.len() <= 300);
}

#[test]
fn every_probe_is_reported_and_the_catalogue_reaches_most_of_them() {
    let mut reached = BTreeSet::new();
    for name in [
        "chaos",
        "cancel-storm",
        "client-disconnects",
        "timeout-races",
    ] {
        let scenario = scenario(name);
        for seed in 0..3 {
            let report = run(&scenario, &RunOptions::new(seed));
            expect_pass(&report);
            for probe in PROBES {
                assert!(report.probes.contains_key(*probe), "{probe} is reported");
            }
            reached.extend(
                report
                    .probes
                    .iter()
                    .filter(|(_, count)| **count > 0)
                    .map(|(probe, _)| probe.clone()),
            );
        }
    }
    for probe in [
        "cancel-during-slot-wait",
        "cancel-of-running-job",
        "reply-after-op-destroyed",
        "reconnect-with-jobs-to-reconcile",
        "submit-dropped-mid-await",
        "agent-declared-lost",
        "idempotent-resubmit",
    ] {
        assert!(reached.contains(probe), "{probe} not reached: {reached:?}");
    }
}
