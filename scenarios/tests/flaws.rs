//! The measure of the harness: every known flaw is found by fuzzing the
//! shipped catalogue as it is (every scenario, seeds in order, no scenario
//! written for one flaw), within a fixed seed budget, and the correct
//! supervisor passes every run that was needed to find it.

#![cfg(feature = "flaws")]

use faultline_core::flaws::{Flaw, FlawSet};
use faultline_scenarios::{catalogue_dir, load_catalogue, run, RunOptions, Scenario};

/// Seeds tried per scenario before a flaw counts as not found.
const SEED_BUDGET: u64 = 200;

fn catalogue() -> Vec<Scenario> {
    load_catalogue(&catalogue_dir())
        .expect("the shipped catalogue loads")
        .into_iter()
        .map(|(_, scenario)| scenario)
        .collect()
}

/// Fuzz the catalogue with `flaw` on: seeds in order, every scenario for
/// each seed; the runs made up to the first failure, and that failure.
fn hunt(flaw: Flaw) {
    let catalogue = catalogue();
    let flaws = FlawSet::of(&[flaw]);
    let mut tried: Vec<(&Scenario, u64)> = Vec::new();
    let mut found = None;
    'seeds: for seed in 0..SEED_BUDGET {
        for scenario in &catalogue {
            tried.push((scenario, seed));
            let options = RunOptions {
                flaws,
                ..RunOptions::new(seed)
            };
            if let Some(failure) = run(scenario, &options).failure() {
                found = Some((scenario.name.clone(), seed, failure.signature()));
                break 'seeds;
            }
        }
    }
    let (name, seed, signature) = found.unwrap_or_else(|| {
        panic!("flaw {flaw} not found in {SEED_BUDGET} seeds of every catalogue scenario")
    });
    eprintln!("{flaw}: found by {name} seed {seed} as {signature}");
    for (scenario, seed) in tried {
        let report = run(scenario, &RunOptions::new(seed));
        if let Some(failure) = report.failure() {
            panic!(
                "the correct supervisor fails {} seed {seed}, a run that found {flaw}: {failure}",
                scenario.name
            );
        }
    }
}

macro_rules! flaw_tests {
    ($($test:ident => $flaw:expr,)*) => {
        $(
            #[test]
            fn $test() {
                hunt($flaw);
            }
        )*
    };
}

flaw_tests! {
    slot_leak_on_cancel_is_found => Flaw::SlotLeakOnCancel,
    use_after_destroy_is_found => Flaw::UseAfterDestroy,
    timeout_overwrites_terminal_is_found => Flaw::TimeoutOverwritesTerminal,
    stale_connection_accepted_is_found => Flaw::StaleConnectionAccepted,
    no_heartbeat_grace_is_found => Flaw::NoHeartbeatGrace,
    drop_unsafe_submit_is_found => Flaw::DropUnsafeSubmit,
    cancel_hits_later_run_is_found => Flaw::CancelHitsLaterRun,
    lost_agent_job_stays_running_is_found => Flaw::LostAgentJobStaysRunning,
    double_free_on_duplicate_finish_is_found => Flaw::DoubleFreeOnDuplicateFinish,
    ack_before_commit_is_found => Flaw::AckBeforeCommit,
    restart_requeues_running_is_found => Flaw::RestartRequeuesRunning,
}

#[test]
fn every_flaw_has_a_test_here() {
    assert_eq!(Flaw::ALL.len(), 11, "add a hunt above for each new flaw");
}
