//! Determinism and variety of the multi-node program in
//! `faultline_sim::workloads::chatter` (four nodes exchanging messages with
//! timers under loss, duplication, reordering, a partition and a node
//! restart).

use std::collections::BTreeSet;

use faultline_sim::workloads::chatter;
use faultline_sim::{RunEnd, SchedulerKind, TraceCapture};

fn hash(seed: u64, scheduler: SchedulerKind) -> u64 {
    let (sim, end) = chatter::run(seed, scheduler, TraceCapture::HashOnly);
    assert_eq!(end, Ok(RunEnd::Reached), "seed {seed} runs to its deadline");
    sim.trace().hash()
}

const PCT: SchedulerKind = SchedulerKind::Pct {
    depth: 3,
    steps_estimate: 200,
};

#[test]
fn a_thousand_seeds_replay_to_the_same_hash() {
    for seed in 0..1_000 {
        let first = hash(seed, SchedulerKind::Random);
        let second = hash(seed, SchedulerKind::Random);
        assert_eq!(first, second, "seed {seed} replayed differently");
    }
}

#[test]
fn pct_and_fifo_runs_replay_to_the_same_hash() {
    for seed in 0..200 {
        for scheduler in [PCT, SchedulerKind::Fifo] {
            assert_eq!(
                hash(seed, scheduler),
                hash(seed, scheduler),
                "seed {seed} with {scheduler:?}"
            );
        }
    }
}

#[test]
fn the_program_exercises_every_fault_it_claims() {
    let mut totals = faultline_sim::NetStats::default();
    for seed in 0..50 {
        let (sim, _) = chatter::run(seed, SchedulerKind::Random, TraceCapture::Events);
        let stats = sim.net_stats();
        totals.frames_lost += stats.frames_lost;
        totals.frames_duplicated += stats.frames_duplicated;
        totals.frames_cut += stats.frames_cut;
        totals.frames_delivered += stats.frames_delivered;
        let text = sim.trace().text();
        for fault in [
            "partition {n0,n1} | {n2,n3}",
            "kill n3",
            "heal {n0,n1} | {n2,n3}",
            "restart n3",
        ] {
            assert!(
                text.contains(fault),
                "seed {seed}: no {fault:?} in the trace"
            );
        }
        assert!(
            text.contains("incarnation=1"),
            "seed {seed}: the restarted n3 logs"
        );
    }
    assert!(
        totals.frames_lost > 0 && totals.frames_duplicated > 0 && totals.frames_cut > 0,
        "{totals:?}"
    );
    assert!(totals.frames_delivered > 1_000, "{totals:?}");
}

fn distinct_share(scheduler: SchedulerKind) -> f64 {
    let hashes: BTreeSet<u64> = (0..200).map(|seed| hash(seed, scheduler)).collect();
    hashes.len() as f64 / 200.0
}

#[test]
fn two_hundred_seeds_give_distinct_runs_with_random_scheduling() {
    let share = distinct_share(SchedulerKind::Random);
    assert!(share >= 0.95, "only {:.1}% distinct", share * 100.0);
}

#[test]
fn two_hundred_seeds_give_distinct_runs_with_pct_scheduling() {
    let share = distinct_share(PCT);
    assert!(share >= 0.95, "only {:.1}% distinct", share * 100.0);
}

#[test]
fn a_fresh_sim_for_the_same_seed_replays_after_other_runs() {
    let first = hash(77, SchedulerKind::Random);
    for seed in 0..20 {
        hash(seed, PCT);
    }
    assert_eq!(
        first,
        hash(77, SchedulerKind::Random),
        "no state leaks from run to run"
    );
}
