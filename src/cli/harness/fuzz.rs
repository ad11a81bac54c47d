//! `faultline sim fuzz`: seeds over scenarios on every core.
//!
//! Unit `k` runs scenario `k mod S` with the `(k div S)`-th seed of the
//! shard, so every scenario advances through its seeds together. Failures
//! are deduplicated by signature (oracle + site); for each signature the
//! failing run with the lowest unit number is kept (so the report does not
//! depend on thread timing), shrunk, and written to `--out` as Markdown and
//! JSON. Every `--determinism-every`-th unit is run twice and the hashes
//! compared: a difference is nondeterminism, the most serious failure of all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::Args;
use faultline_core::duration::parse_duration;
use faultline_scenarios::{
    catalogue_dir, load_catalogue, parse_scheduler, run, RunOptions, RunReport, SchedulerChoice,
    TraceMode, PROBES,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::bug_report::write_report;
use super::shrinking::shrink_failure;
use super::{exit, parse_flaws, resolve_scenario, Resolved, RunTarget};
use crate::cli::pool::{default_jobs, run_units, Budget, Shard};
use crate::cli::sim::parse_seed;

/// Seeds per scenario when neither `--seeds` nor `--time` is given.
pub const DEFAULT_SEEDS: u64 = 200;

/// Arguments of `faultline sim fuzz`.
#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// Scenarios (catalogue names or `.toml` files) and directories of them;
    /// none means the whole shipped catalogue.
    targets: Vec<String>,
    /// Seeds per scenario (default 200 unless --time is given).
    #[arg(long, conflicts_with = "time")]
    seeds: Option<u64>,
    /// Fuzz for this long on the wall clock instead (`90s`, `10m`, `8h`).
    #[arg(long, value_parser = parse_duration)]
    time: Option<Duration>,
    /// The first seed (decimal or 0x-hex).
    #[arg(long, default_value = "0", value_parser = parse_seed)]
    start: u64,
    /// Worker threads (default: every core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only seeds of shard I of N (`--shard 3/8`): N machines with
    /// shards 0..N cover the seed range exactly once.
    #[arg(long, default_value = "0/1")]
    shard: Shard,
    /// Where failure reports go.
    #[arg(long, default_value = "fuzz-out", value_name = "DIR")]
    out: PathBuf,
    /// Switch on a known flaw (needs `--features flaws`); repeatable.
    #[arg(long = "flaw", value_name = "NAME")]
    flaws: Vec<String>,
    /// Override every scenario's scheduler: `random`, `pct:D` or `fifo`.
    #[arg(long, value_parser = parse_scheduler)]
    scheduler: Option<SchedulerChoice>,
    /// Candidate runs spent shrinking each distinct failure (0: no shrinking).
    #[arg(long, default_value_t = 300)]
    shrink_budget: usize,
    /// Re-run every N-th seed and compare trace hashes (0: never).
    #[arg(long, default_value_t = 50)]
    determinism_every: u64,
    /// Stop after the first failing run.
    #[arg(long)]
    stop_at_first: bool,
}

/// What a worker sends back for one unit.
struct UnitResult {
    scenario: usize,
    /// Present only for failures (reports are large).
    failed: Option<RunReport>,
    safety: bool,
    probes: BTreeMap<String, u64>,
    /// `(first hash, second hash)` when the unit was run twice and they differ.
    divergence: Option<(String, String)>,
}

fn resolve_targets(targets: &[String]) -> anyhow::Result<Vec<Resolved>> {
    let mut resolved = Vec::new();
    let load_dir = |dir: &std::path::Path, into: &mut Vec<Resolved>| -> anyhow::Result<()> {
        let scenarios = load_catalogue(dir).map_err(|error| exit::usage(error.to_string()))?;
        if scenarios.is_empty() {
            return Err(exit::usage(format!(
                "no scenario files (*.toml) in {}",
                dir.display()
            )));
        }
        into.extend(
            scenarios
                .into_iter()
                .map(|(path, scenario)| Resolved { path, scenario }),
        );
        Ok(())
    };
    if targets.is_empty() {
        load_dir(&catalogue_dir(), &mut resolved)?;
    }
    for target in targets {
        let path = std::path::Path::new(target);
        if path.is_dir() {
            load_dir(path, &mut resolved)?;
        } else {
            resolved.push(resolve_scenario(target)?);
        }
    }
    Ok(resolved)
}

/// Aggregates results on the calling thread.
#[derive(Default)]
struct Tally {
    runs: u64,
    failures: u64,
    per_scenario: BTreeMap<usize, (u64, u64)>,
    probe_hits: BTreeMap<String, u64>,
    probe_runs: BTreeMap<String, u64>,
    /// signature → (unit, report): the lowest unit per signature.
    first_failures: BTreeMap<String, (u64, RunReport)>,
    any_safety: bool,
    divergences: Vec<(String, u64, String, String)>,
}

impl Tally {
    fn absorb(&mut self, unit: u64, result: UnitResult, names: &[String]) {
        self.runs += 1;
        let entry = self.per_scenario.entry(result.scenario).or_default();
        entry.0 += 1;
        for (probe, hits) in result.probes {
            *self.probe_hits.entry(probe.clone()).or_default() += hits;
            if hits > 0 {
                *self.probe_runs.entry(probe).or_default() += 1;
            }
        }
        if let Some((first, second)) = result.divergence {
            self.divergences
                .push((names[result.scenario].clone(), unit, first, second));
        }
        if let Some(report) = result.failed {
            self.failures += 1;
            entry.1 += 1;
            self.any_safety |= result.safety;
            let signature = report
                .failure()
                .map(|failure| failure.signature())
                .unwrap_or_default();
            let keep = self
                .first_failures
                .get(&signature)
                .is_none_or(|(kept, _)| unit < *kept);
            if keep {
                self.first_failures.insert(signature, (unit, report));
            }
        }
    }
}

/// `faultline sim fuzz`.
pub fn fuzz_command(args: FuzzArgs) -> anyhow::Result<()> {
    let scenarios = resolve_targets(&args.targets)?;
    let flaws = parse_flaws(&args.flaws)?;
    let names: Vec<String> = scenarios
        .iter()
        .map(|resolved| resolved.scenario.name.clone())
        .collect();
    let count = scenarios.len() as u64;
    let budget = match (args.seeds, args.time) {
        (_, Some(time)) => Budget::Time(time),
        (seeds, None) => Budget::Units(seeds.unwrap_or(DEFAULT_SEEDS).saturating_mul(count)),
    };
    let jobs = args.jobs.unwrap_or_else(default_jobs).max(1);
    eprintln!(
        "fuzz: {} scenario(s) [{}], seeds from {:#x}, shard {}/{}, {} thread(s){}",
        count,
        names.join(", "),
        args.start,
        args.shard.index,
        args.shard.count,
        jobs,
        if flaws.any_on() {
            format!(", flaws: {}", args.flaws.join(", "))
        } else {
            String::new()
        }
    );
    let seed_of = |unit: u64| args.shard.seed(args.start, unit / count);
    let options_of = |unit: u64| RunOptions {
        seed: seed_of(unit),
        scheduler: args.scheduler,
        flaws,
        ..RunOptions::default()
    };
    let work = |unit: u64| -> UnitResult {
        let scenario = (unit % count) as usize;
        let report = run(&scenarios[scenario].scenario, &options_of(unit));
        let divergence = (args.determinism_every > 0
            && unit.is_multiple_of(args.determinism_every))
        .then(|| run(&scenarios[scenario].scenario, &options_of(unit)).hash)
        .filter(|again| *again != report.hash)
        .map(|again| (report.hash.clone(), again));
        let safety = report
            .failure()
            .is_some_and(|failure| failure.kind.is_safety());
        UnitResult {
            scenario,
            probes: report.probes.clone(),
            safety,
            failed: (!report.outcome.is_pass()).then_some(report),
            divergence,
        }
    };
    let progress = progress_bar(budget);
    let stop = AtomicBool::new(false);
    let mut tally = Tally::default();
    let started = Instant::now();
    run_units(jobs, budget, &stop, work, |unit, result| {
        let failed_now = result.failed.is_some();
        tally.absorb(unit, result, &names);
        progress.inc(1);
        progress.set_message(format!(
            "failures={} distinct={}",
            tally.failures,
            tally.first_failures.len()
        ));
        if failed_now && args.stop_at_first {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let pool_wall = started.elapsed();
    progress.finish_and_clear();
    report_failures(&args, &scenarios, &tally, flaws)?;
    print_summary(&names, &tally);
    let rate = tally.runs as f64 / pool_wall.as_secs_f64().max(1e-9);
    println!(
        "fuzz: runs={} failures={} seeds_per_sec={rate:.1}",
        tally.runs, tally.failures
    );
    if !tally.divergences.is_empty() {
        Err(exit::silent(exit::NONDETERMINISM))
    } else if tally.failures == 0 {
        Ok(())
    } else if tally.any_safety {
        Err(exit::silent(exit::SAFETY))
    } else {
        Err(exit::silent(exit::LIVENESS))
    }
}

fn progress_bar(budget: Budget) -> ProgressBar {
    match budget {
        Budget::Units(total) => {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{bar:40} {pos}/{len} seeds  {per_sec}  eta {eta}  {msg}",
            )
            .expect("the progress template is valid");
            bar.set_style(style);
            bar
        }
        Budget::Time(_) => {
            let bar = ProgressBar::new_spinner();
            let style =
                ProgressStyle::with_template("{spinner} {pos} seeds  {per_sec}  {elapsed}  {msg}")
                    .expect("the progress template is valid");
            bar.set_style(style);
            bar
        }
    }
}

fn report_failures(
    args: &FuzzArgs,
    scenarios: &[Resolved],
    tally: &Tally,
    flaws: faultline_core::flaws::FlawSet,
) -> anyhow::Result<()> {
    for (scenario, unit, first, second) in &tally.divergences {
        println!(
            "NONDETERMINISM {scenario} unit={unit}: hash {first} then {second} for the same seed"
        );
    }
    let mut by_unit: Vec<&(u64, RunReport)> = tally.first_failures.values().collect();
    by_unit.sort_by_key(|(unit, _)| *unit);
    for (unit, report) in by_unit {
        let failure = report.failure().expect("only failed runs are kept");
        let resolved = &scenarios[(*unit % scenarios.len() as u64) as usize];
        println!(
            "FAIL {} seed={:#x}: {}: {}",
            report.scenario,
            report.seed,
            failure.signature(),
            failure.message
        );
        let target = RunTarget {
            scenario: resolved.path.display().to_string(),
            seed: report.seed,
            scheduler: args.scheduler,
            plan: None,
            workload: None,
            flaws: args.flaws.clone(),
        };
        let options = RunOptions {
            seed: report.seed,
            scheduler: args.scheduler,
            flaws,
            trace: TraceMode::Hash,
            ..RunOptions::default()
        };
        let shrunk = (args.shrink_budget > 0)
            .then(|| shrink_failure(&resolved.scenario, &options, report, args.shrink_budget))
            .flatten();
        let path = write_report(&args.out, &resolved.path, &target, report, shrunk.as_ref())?;
        println!(
            "  replay: {}",
            super::bug_report::replay_command(&resolved.path, &target, report, None)?
        );
        if let Some(shrunk) = &shrunk {
            println!(
                "  shrunk plan ({} of {} faults, {} of {} actions):",
                shrunk.plan.events.len(),
                shrunk.original_sizes.0,
                shrunk.workload.actions.len(),
                shrunk.original_sizes.1
            );
            for event in &shrunk.plan.events {
                println!("    {event}");
            }
            println!(
                "  shrunk in {} runs, {:.2}s",
                shrunk.runs,
                shrunk.wall.as_secs_f64()
            );
        }
        println!("  report: {}", path.display());
    }
    Ok(())
}

fn print_summary(names: &[String], tally: &Tally) {
    println!("{:<22} {:>8} {:>9}", "scenario", "runs", "failures");
    for (index, (runs, failures)) in &tally.per_scenario {
        println!("{:<22} {:>8} {:>9}", names[*index], runs, failures);
    }
    println!("sometimes-probes (runs that reached it / times reached):");
    for probe in PROBES {
        let runs = tally.probe_runs.get(*probe).copied().unwrap_or(0);
        let hits = tally.probe_hits.get(*probe).copied().unwrap_or(0);
        let flag = if runs == 0 { "  NEVER REACHED" } else { "" };
        println!("  {probe:<36} {runs:>8} / {hits:<8}{flag}");
    }
    if !tally.first_failures.is_empty() {
        println!("distinct failures: {}", tally.first_failures.len());
    }
}
