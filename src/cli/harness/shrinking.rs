//! Shrinking a failing run: with the seed fixed, remove fault-plan events and
//! workload actions (ddmin, then one at a time) while the run still fails
//! with the same signature, until removing any one more makes it pass.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use faultline_scenarios::shrink::shrink;
use faultline_scenarios::{check_plan, run, RunOptions, RunReport, Scenario, TraceMode, Workload};
use faultline_sim::FaultPlan;

use super::{exit, options_for, resolve_scenario, run_timed, summary_line, RunTarget};

/// The smallest failing inputs found.
pub struct Shrunk {
    /// The shrunk fault plan.
    pub plan: FaultPlan,
    /// The shrunk workload.
    pub workload: Workload,
    /// The run of the shrunk inputs (fails with the original signature).
    pub report: RunReport,
    /// Fault events and actions before shrinking.
    pub original_sizes: (usize, usize),
    /// Candidate runs performed.
    pub runs: usize,
    /// Whether no single further removal keeps the failure.
    pub one_minimal: bool,
    /// Wall time spent shrinking.
    pub wall: Duration,
}

#[derive(Clone, Copy)]
enum Item {
    Fault(usize),
    Action(usize),
}

/// Inputs left after removing everything but `kept`.
fn inputs_of(failing: &RunReport, kept: &[Item]) -> (FaultPlan, Workload) {
    let kept_faults: Vec<usize> = kept
        .iter()
        .filter_map(|item| match item {
            Item::Fault(index) => Some(*index),
            Item::Action(_) => None,
        })
        .collect();
    let kept_actions: Vec<usize> = kept
        .iter()
        .filter_map(|item| match item {
            Item::Action(index) => Some(*index),
            Item::Fault(_) => None,
        })
        .collect();
    let removed_faults: Vec<usize> = (0..failing.plan.events.len())
        .filter(|index| !kept_faults.contains(index))
        .collect();
    let removed_actions: Vec<usize> = (0..failing.workload.actions.len())
        .filter(|index| !kept_actions.contains(index))
        .collect();
    (
        failing.plan.without(&removed_faults),
        failing.workload.without(&removed_actions),
    )
}

/// Shrink `failing` (a failed run of `scenario` with `base` options) within
/// `budget` candidate runs. Returns `None` if the run did not fail or its
/// explicit inputs do not reproduce the failure.
pub fn shrink_failure(
    scenario: &Scenario,
    base: &RunOptions,
    failing: &RunReport,
    budget: usize,
) -> Option<Shrunk> {
    let signature = failing.failure()?.signature();
    let started = Instant::now();
    let attempt = |plan: FaultPlan, workload: Workload| -> Option<RunReport> {
        if check_plan(scenario, &plan).is_err() {
            return None;
        }
        let options = RunOptions {
            plan: Some(plan),
            workload: Some(workload),
            trace: TraceMode::Hash,
            ..base.clone()
        };
        let report = run(scenario, &options);
        (report.failure().map(|failure| failure.signature()) == Some(signature.clone()))
            .then_some(report)
    };
    // The explicit inputs must reproduce the failure before anything is removed.
    attempt(failing.plan.clone(), failing.workload.clone())?;
    let items: Vec<Item> = (0..failing.plan.events.len())
        .map(Item::Fault)
        .chain((0..failing.workload.actions.len()).map(Item::Action))
        .collect();
    let result = shrink(&items, budget, |kept| {
        let (plan, workload) = inputs_of(failing, kept);
        attempt(plan, workload).is_some()
    });
    let (plan, workload) = inputs_of(failing, &result.items);
    let report = attempt(plan.clone(), workload.clone())
        .expect("the shrunk inputs failed when they were kept");
    Some(Shrunk {
        plan,
        workload,
        report,
        original_sizes: (failing.plan.events.len(), failing.workload.actions.len()),
        runs: result.runs + 2,
        one_minimal: result.one_minimal,
        wall: started.elapsed(),
    })
}

/// Where a shrunk plan and workload are written: `<dir>/<scenario>-<seed>.{plan,workload}.toml`.
pub fn write_shrunk(
    dir: &Path,
    scenario: &str,
    seed: u64,
    shrunk: &Shrunk,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = format!("{scenario}-{seed:#x}");
    let plan_path = dir.join(format!("{stem}.plan.toml"));
    let workload_path = dir.join(format!("{stem}.workload.toml"));
    std::fs::write(&plan_path, shrunk.plan.to_toml())
        .with_context(|| format!("writing {}", plan_path.display()))?;
    std::fs::write(&workload_path, shrunk.workload.to_toml())
        .with_context(|| format!("writing {}", workload_path.display()))?;
    Ok((plan_path, workload_path))
}

/// Arguments of `faultline sim shrink`.
#[derive(Args, Debug)]
pub struct ShrinkArgs {
    #[command(flatten)]
    target: RunTarget,
    /// The most candidate runs to spend.
    #[arg(long, default_value_t = 400)]
    budget: usize,
    /// Where to write the shrunk plan and workload.
    #[arg(long, default_value = ".", value_name = "DIR")]
    out: PathBuf,
}

/// `faultline sim shrink`.
pub fn shrink_command(args: ShrinkArgs) -> anyhow::Result<()> {
    let resolved = resolve_scenario(&args.target.scenario)?;
    let options = options_for(&args.target, &resolved, TraceMode::Hash)?;
    let (report, wall) = run_timed(&resolved, &options);
    let Some(failure) = report.failure() else {
        println!("{}", summary_line(&report, wall));
        return Err(exit::usage(
            "this run passes: there is no failure to shrink",
        ));
    };
    println!("failure: {failure}");
    let shrunk = shrink_failure(&resolved.scenario, &options, &report, args.budget).ok_or_else(|| {
        exit::usage("the failure does not reproduce from its explicit plan and workload, so it cannot be shrunk")
    })?;
    let (plan_path, workload_path) =
        write_shrunk(&args.out, &report.scenario, report.seed, &shrunk)?;
    println!(
        "shrunk in {} runs ({:.1}s{}): {} of {} faults, {} of {} workload actions",
        shrunk.runs,
        shrunk.wall.as_secs_f64(),
        if shrunk.one_minimal {
            ", 1-minimal"
        } else {
            ", budget exhausted"
        },
        shrunk.plan.events.len(),
        shrunk.original_sizes.0,
        shrunk.workload.actions.len(),
        shrunk.original_sizes.1,
    );
    println!("plan:\n{}", shrunk.plan);
    println!("workload:");
    for action in &shrunk.workload.actions {
        println!("  {action}");
    }
    let mut target = args.target.clone();
    target.plan = Some(plan_path);
    target.workload = Some(workload_path);
    println!(
        "replay: {}",
        super::bug_report::replay_command(&resolved.path, &target, &shrunk.report, None)?
    );
    println!("{}", summary_line(&shrunk.report, shrunk.wall));
    Err(exit::silent(super::outcome_status(&shrunk.report.outcome)))
}
