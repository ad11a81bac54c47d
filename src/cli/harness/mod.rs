//! `faultline sim run | replay | shrink | list | fuzz`: the scenario harness.
//!
//! * this file: scenario resolution, shared arguments, `run`, `replay`, `list`;
//! * [`fuzz`]: seeds over the catalogue on every core, dedup, reports;
//! * [`shrinking`]: delta debugging of a failing run's plan and workload;
//! * [`bug_report`]: the Markdown + JSON failure report and the replay command.
//!
//! Exit statuses (see `cli::exit`): 0 pass, 1 safety, 2 liveness,
//! 3 nondeterminism, 4 usage or input error.

pub mod bug_report;
pub mod fuzz;
pub mod shrinking;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use faultline_core::flaws::{Flaw, FlawSet};
use faultline_scenarios::{
    catalogue_dir, check_plan, find_scenario, parse_scheduler, run, Outcome, RunOptions, RunReport,
    Scenario, SchedulerChoice, TraceMode, Workload,
};
use faultline_sim::FaultPlan;

use super::exit;
use super::sim::parse_seed;

/// The commit this binary was built from (`unknown` outside git).
pub const BUILD_COMMIT: &str = env!("FAULTLINE_BUILD_COMMIT");

/// What selects and shapes one run: shared by `run`, `replay` and `shrink`.
#[derive(Args, Debug, Clone)]
pub struct RunTarget {
    /// A scenario: a name from the catalogue (`smoke`) or a path to a `.toml` file.
    pub scenario: String,
    /// The seed (decimal or 0x-hex).
    #[arg(long, value_parser = parse_seed)]
    pub seed: u64,
    /// Override the scenario's scheduler: `random`, `pct:D` or `fifo`.
    #[arg(long, value_parser = parse_scheduler)]
    pub scheduler: Option<SchedulerChoice>,
    /// Apply this fault plan (TOML) instead of the one generated from the seed.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Play this workload (TOML) instead of the one generated from the seed.
    #[arg(long, value_name = "FILE")]
    pub workload: Option<PathBuf>,
    /// Switch on a known flaw (needs a build with `--features flaws`); repeatable.
    #[arg(long = "flaw", value_name = "NAME")]
    pub flaws: Vec<String>,
}

/// A scenario resolved from the command line.
pub struct Resolved {
    /// Its file.
    pub path: PathBuf,
    /// The parsed scenario.
    pub scenario: Scenario,
}

/// Find a scenario by path or catalogue name. Errors are usage errors (exit 4).
pub fn resolve_scenario(text: &str) -> anyhow::Result<Resolved> {
    let as_path = Path::new(text);
    if text.ends_with(".toml") || as_path.is_file() {
        let scenario = Scenario::load(as_path).map_err(|error| exit::usage(error.to_string()))?;
        return Ok(Resolved {
            path: as_path.to_path_buf(),
            scenario,
        });
    }
    let dir = catalogue_dir();
    match find_scenario(&dir, text).map_err(|error| exit::usage(error.to_string()))? {
        Some((path, scenario)) => Ok(Resolved { path, scenario }),
        None => Err(exit::usage(format!(
            "no scenario named `{text}` in {} (see `faultline sim list`), and no such file",
            dir.display()
        ))),
    }
}

/// Parse `--flaw` names into a set; refused by builds without the `flaws` feature.
pub fn parse_flaws(names: &[String]) -> anyhow::Result<FlawSet> {
    let mut set = FlawSet::none();
    if names.is_empty() {
        return Ok(set);
    }
    if !cfg!(feature = "flaws") {
        return Err(exit::usage(
            "this build has no known flaws compiled in; rebuild with `--features flaws` to use --flaw",
        ));
    }
    for name in names {
        let flaw: Flaw = name
            .parse()
            .map_err(|error| exit::usage(format!("{error}")))?;
        set.insert(flaw);
    }
    Ok(set)
}

/// Build the run options of a target, loading and checking its files.
pub fn options_for(
    target: &RunTarget,
    resolved: &Resolved,
    trace: TraceMode,
) -> anyhow::Result<RunOptions> {
    let plan = match &target.plan {
        Some(path) => {
            let plan = FaultPlan::load(path).map_err(|error| exit::usage(error.to_string()))?;
            check_plan(&resolved.scenario, &plan)
                .map_err(|error| exit::usage(format!("{}: {error}", path.display())))?;
            Some(plan)
        }
        None => None,
    };
    let workload = match &target.workload {
        Some(path) => Some(Workload::load(path).map_err(|error| exit::usage(error.to_string()))?),
        None => None,
    };
    Ok(RunOptions {
        seed: target.seed,
        scheduler: target.scheduler,
        plan,
        workload,
        flaws: parse_flaws(&target.flaws)?,
        trace,
    })
}

/// The closing line of `run` and `replay`.
pub fn summary_line(report: &RunReport, wall: Duration) -> String {
    let verdict = if report.outcome.is_pass() {
        "ok"
    } else {
        "FAIL"
    };
    format!(
        "{verdict} scenario={} seed={:#x} hash={} events={} sim_time={:.3}s wall={:.3}s",
        report.scenario,
        report.seed,
        report.hash,
        report.events,
        report.sim_time.as_secs_f64(),
        wall.as_secs_f64()
    )
}

/// The exit status a run's outcome calls for.
pub fn outcome_status(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Pass => exit::OK,
        Outcome::Fail(failure) if failure.kind.is_safety() => exit::SAFETY,
        Outcome::Fail(_) => exit::LIVENESS,
    }
}

/// A stable 64-bit FNV-1a hash of a file's bytes, as 16 hex digits: names
/// the exact scenario file a report was made from.
pub fn file_hash(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{hash:016x}"))
}

/// Run one target and time it on the wall clock.
pub fn run_timed(resolved: &Resolved, options: &RunOptions) -> (RunReport, Duration) {
    let started = Instant::now();
    let report = run(&resolved.scenario, options);
    (report, started.elapsed())
}

fn print_failure(report: &RunReport) {
    if let Outcome::Fail(failure) = &report.outcome {
        println!("failure: {failure}");
        println!("signature: {}", failure.signature());
        if let Some(hang) = &failure.hang_report {
            println!("hang report:\n{hang}");
        }
        if !report.swarm_off.is_empty() {
            println!("swarm switched off: {}", report.swarm_off.join(", "));
        }
    }
}

fn write_chrome_trace(report: &RunReport, path: &Path) -> anyhow::Result<()> {
    let json = report
        .chrome_trace
        .as_deref()
        .context("the run kept no Chrome trace (internal: TraceMode::Full expected)")?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "chrome trace written to {} (open it in Perfetto or chrome://tracing)",
        path.display()
    );
    Ok(())
}

/// Arguments of `faultline sim run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    target: RunTarget,
    /// Print the whole trace, stamped with virtual time, node and task.
    #[arg(long)]
    trace: bool,
    /// Write the trace as Chrome trace-event JSON (opens in Perfetto).
    #[arg(long, value_name = "FILE")]
    chrome_trace: Option<PathBuf>,
}

/// `faultline sim run`.
pub fn run_command(args: RunArgs) -> anyhow::Result<()> {
    let resolved = resolve_scenario(&args.target.scenario)?;
    let full = args.trace || args.chrome_trace.is_some();
    let mode = if full {
        TraceMode::Full
    } else {
        TraceMode::Hash
    };
    let options = options_for(&args.target, &resolved, mode)?;
    let (report, wall) = run_timed(&resolved, &options);
    if args.trace {
        print!("{}", report.trace_text.as_deref().unwrap_or_default());
    }
    if let Some(path) = &args.chrome_trace {
        write_chrome_trace(&report, path)?;
    }
    print_failure(&report);
    if !report.outcome.is_pass() {
        println!(
            "replay: {}",
            bug_report::replay_command(&resolved.path, &args.target, &report, None)?
        );
    }
    println!("{}", summary_line(&report, wall));
    match outcome_status(&report.outcome) {
        exit::OK => Ok(()),
        status => Err(exit::silent(status)),
    }
}

/// Arguments of `faultline sim replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    target: RunTarget,
    /// The trace hash the run must reproduce; a different hash is
    /// nondeterminism (exit status 3).
    #[arg(long, value_name = "HEX")]
    expect_hash: Option<String>,
    /// The commit the failure was found on (a mismatch is reported, not fatal).
    #[arg(long, value_name = "SHA")]
    commit: Option<String>,
    /// The hash of the scenario file the failure was found with (a mismatch
    /// is reported, not fatal).
    #[arg(long, value_name = "HEX")]
    scenario_hash: Option<String>,
    /// Print only the failure and the closing line, not the whole trace.
    #[arg(long)]
    quiet: bool,
    /// Write the trace as Chrome trace-event JSON (opens in Perfetto).
    #[arg(long, value_name = "FILE")]
    chrome_trace: Option<PathBuf>,
}

/// `faultline sim replay`: run a seed with the whole trace and check its hash.
pub fn replay_command(args: ReplayArgs) -> anyhow::Result<()> {
    let resolved = resolve_scenario(&args.target.scenario)?;
    if let Some(expected) = &args.scenario_hash {
        let actual = file_hash(&resolved.path)?;
        if &actual != expected {
            eprintln!(
                "warning: {} has changed since the report (file hash {actual}, report says {expected})",
                resolved.path.display()
            );
        }
    }
    if let Some(commit) = &args.commit {
        if commit != BUILD_COMMIT {
            eprintln!(
                "warning: this binary was built from {BUILD_COMMIT}, the report from {commit}"
            );
        }
    }
    let options = options_for(&args.target, &resolved, TraceMode::Full)?;
    let (report, wall) = run_timed(&resolved, &options);
    if !args.quiet {
        print!("{}", report.trace_text.as_deref().unwrap_or_default());
    }
    if let Some(path) = &args.chrome_trace {
        write_chrome_trace(&report, path)?;
    }
    print_failure(&report);
    println!("{}", summary_line(&report, wall));
    if let Some(expected) = &args.expect_hash {
        if !expected.eq_ignore_ascii_case(&report.hash) {
            println!(
                "NONDETERMINISM: expected hash {expected}, this run gave {}: the same inputs replayed differently",
                report.hash
            );
            return Err(exit::silent(exit::NONDETERMINISM));
        }
    }
    match outcome_status(&report.outcome) {
        exit::OK => Ok(()),
        status => Err(exit::silent(status)),
    }
}

/// Arguments of `faultline sim list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// A directory of scenarios (default: the shipped catalogue).
    dir: Option<PathBuf>,
}

/// `faultline sim list`.
pub fn list_command(args: ListArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(catalogue_dir);
    let scenarios = faultline_scenarios::load_catalogue(&dir)
        .map_err(|error| exit::usage(error.to_string()))?;
    if scenarios.is_empty() {
        return Err(exit::usage(format!(
            "no scenario files (*.toml) in {}",
            dir.display()
        )));
    }
    for (path, scenario) in scenarios {
        println!(
            "{:<20} {:<8} {:>6}  {}",
            scenario.name,
            scenario.scheduler,
            format!("{}s", scenario.duration.as_secs()),
            scenario.description
        );
        println!("{:<20} {}", "", path.display());
    }
    Ok(())
}
