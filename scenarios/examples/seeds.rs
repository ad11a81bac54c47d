//! Run catalogue scenarios over a range of seeds and print what happened:
//! outcomes, failure signatures, probe counts, and the wall-clock rate
//! (seeds per second on one thread) and time compression.
//!
//! ```text
//! cargo run --release -p faultline-scenarios --example seeds -- smoke 0 200
//! cargo run --release -p faultline-scenarios --features flaws --example seeds -- all 0 50 slot-leak-on-cancel
//! ```
//!
//! Arguments: scenario name (or `all`), first seed, seed count, then flaw
//! names to switch on (with the `flaws` feature). `-v` anywhere prints each
//! failure's trace tail and hang report; `-t` prints every run's whole trace;
//! `-f` stops each scenario at its first failure.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_core::flaws::{Flaw, FlawSet};
use faultline_scenarios::{catalogue_dir, load_catalogue, run, RunOptions, TraceMode};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|arg| arg == "-v");
    let full_trace = args.iter().any(|arg| arg == "-t");
    let stop_at_first = args.iter().any(|arg| arg == "-f");
    args.retain(|arg| arg != "-v" && arg != "-t" && arg != "-f");
    let name = args.first().cloned().unwrap_or_else(|| "smoke".to_owned());
    let first: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let count: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let flaws: Vec<Flaw> = args
        .iter()
        .skip(3)
        .map(|name| name.parse().expect("a known flaw name"))
        .collect();
    let catalogue = load_catalogue(&catalogue_dir()).expect("the catalogue loads");
    for (_, scenario) in catalogue
        .iter()
        .filter(|(_, scenario)| name == "all" || scenario.name == name)
    {
        let mut probes: BTreeMap<String, u64> = BTreeMap::new();
        let mut failures: BTreeMap<String, (u64, usize)> = BTreeMap::new();
        let mut virtual_time = Duration::ZERO;
        let mut steps = 0;
        let started = wall_clock();
        let mut ran = 0;
        for seed in first..first + count {
            if stop_at_first && !failures.is_empty() {
                break;
            }
            ran += 1;
            let mut options = RunOptions::new(seed);
            options.flaws = FlawSet::of(&flaws);
            if full_trace {
                options.trace = TraceMode::Full;
            }
            let report = run(scenario, &options);
            if let Some(text) = &report.trace_text {
                print!("{text}");
            }
            virtual_time += report.sim_time;
            steps += report.steps;
            for (probe, hits) in &report.probes {
                *probes.entry(probe.clone()).or_insert(0) += u64::from(*hits > 0);
            }
            if let Some(failure) = report.failure() {
                let entry = failures.entry(failure.signature()).or_insert((seed, 0));
                entry.1 += 1;
                if entry.1 == 1 {
                    println!("  seed {seed}: {failure}");
                    if verbose {
                        for line in &report.trace_tail {
                            println!("    | {line}");
                        }
                        if let Some(hang) = &failure.hang_report {
                            println!("{hang}");
                        }
                    }
                }
            }
        }
        let wall = started.elapsed();
        println!(
            "{}: {ran} seeds in {:.2}s ({:.1} seeds/s), {:.0}x time compression, {} steps/seed",
            scenario.name,
            wall.as_secs_f64(),
            ran as f64 / wall.as_secs_f64(),
            virtual_time.as_secs_f64() / wall.as_secs_f64(),
            steps / ran.max(1)
        );
        for (signature, (seed, hits)) in &failures {
            println!("  FAIL {signature}: {hits} seed(s), first {seed}");
        }
        let reached: Vec<String> = probes
            .iter()
            .map(|(probe, seeds)| format!("{probe}={seeds}"))
            .collect();
        println!("  probes (seeds reaching): {}", reached.join(" "));
    }
}

/// The wall clock, read only here: this example measures how fast runs go.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}
