//! One run of a scenario for one seed: build the world, apply the fault
//! plan, step with the safety oracles after every step, heal, wait for the
//! world to settle within the liveness window, check for leaks, report.
//!
//! Phases, in virtual time:
//! 1. `[0, heal)`: the fault plan and the scenario's network profile;
//! 2. at `heal`: links clean, killed nodes restarted, partitions and clogs
//!    undone, clocks true;
//! 3. `[heal, heal + liveness_window]`: the world must settle (every job
//!    ended, every agent connected, every client script done); the run
//!    stops as soon as it has, plus a short grace for tasks to end, then
//!    checks for leaked tasks and the client histories against the
//!    supervisor's records.

use std::ops::ControlFlow;
use std::time::Duration;

use faultline_core::runtime::Instant;
use faultline_sim::{Failure as SimFailure, FaultPlan, PlanError, Progress, RunEnd, SchedulerKind};

use crate::fault_plan::generate_faults;
use crate::oracle::{liveness, Checker, StepVerdict, Violation};
use crate::probes;
use crate::report::{Failure, FailureKind, Outcome, RunOptions, RunReport, TraceMode};
use crate::scenario::{parse_scheduler, Scenario, SchedulerChoice};
use crate::topology::node_names;
use crate::workload::generate_workload;
use crate::world::{sim_config, World, TRACE_TAIL_LINES};

/// PCT's estimate of the polls in one run.
const PCT_STEPS_ESTIMATE: u64 = 5_000;

/// The simulator's scheduler for a scenario's choice.
pub fn scheduler_kind(choice: SchedulerChoice) -> SchedulerKind {
    match choice {
        SchedulerChoice::Random => SchedulerKind::Random,
        SchedulerChoice::Fifo => SchedulerKind::Fifo,
        SchedulerChoice::Pct { depth } => SchedulerKind::Pct {
            depth,
            steps_estimate: PCT_STEPS_ESTIMATE,
        },
    }
}

/// Whether `plan` can be applied to `scenario`'s world: valid, naming only
/// its nodes. [`run`] requires it of an explicit plan (a shrunk plan may
/// not be: a restart whose kill was removed).
pub fn check_plan(scenario: &Scenario, plan: &FaultPlan) -> Result<(), PlanError> {
    plan.validate(Some(&node_names(scenario)))
}

/// Run `scenario` with `options`. Deterministic: the same scenario and
/// options give the same report (and hash), on any thread. Each call has
/// its own simulator, so calls may run in parallel.
///
/// Panics if `options.plan` fails [`check_plan`].
pub fn run(scenario: &Scenario, options: &RunOptions) -> RunReport {
    let workload = options
        .workload
        .clone()
        .unwrap_or_else(|| generate_workload(scenario, options.seed));
    let (plan, swarm_off) = match &options.plan {
        Some(plan) => (plan.clone(), Vec::new()),
        None => {
            let generated = generate_faults(scenario, options.seed);
            (generated.plan, generated.swarm_off)
        }
    };
    let choice = options.scheduler.unwrap_or_else(|| {
        parse_scheduler(&scenario.scheduler).expect("validated scenarios name a scheduler")
    });
    let config = sim_config(
        scenario,
        options.seed,
        scheduler_kind(choice),
        options.trace,
    );
    let mut world = World::build(scenario, config, options.flaws, &workload);
    let applied = before(&plan, scenario.heal);
    if let Err(error) = world.sim.apply_plan(&applied) {
        panic!("run needs a plan that passes check_plan: {error}");
    }
    let outcome = drive(scenario, &mut world, &applied);
    let sim = &world.sim;
    let trace = sim.trace();
    let full = options.trace == TraceMode::Full;
    RunReport {
        scenario: scenario.name.clone(),
        seed: options.seed,
        scheduler: sim.scheduler(),
        hash: trace.hash_hex(),
        events: trace.event_count(),
        sim_time: sim.now() - Instant::ZERO,
        steps: sim.steps(),
        outcome,
        probes: probes::complete(&trace.probes()),
        plan,
        workload,
        trace_tail: trace.tail(TRACE_TAIL_LINES),
        trace_text: full.then(|| trace.text()),
        chrome_trace: full.then(|| trace.chrome_json()),
        swarm_off,
    }
}

/// The events of `plan` before `heal` (after it the world is healed).
fn before(plan: &FaultPlan, heal: Duration) -> FaultPlan {
    FaultPlan::new(
        plan.events
            .iter()
            .filter(|event| event.at < heal)
            .cloned()
            .collect(),
    )
}

/// What ended a phase early.
enum Stop {
    Failed(Failure),
    Settled,
}

fn drive(scenario: &Scenario, world: &mut World, plan: &FaultPlan) -> Outcome {
    let mut checker = Checker::new(scenario, world);
    let heal = Instant::ZERO + scenario.heal;
    if let Some(failure) = step_until(world, &mut checker, heal) {
        return Outcome::Fail(failure);
    }
    world.heal(scenario, plan);
    checker.disturb(world.sim.now());
    let end = heal + scenario.liveness_window;
    let settled = match step_until_settled(world, &mut checker, end) {
        Ok(settled) => settled,
        Err(failure) => return Outcome::Fail(failure),
    };
    if !settled {
        return Outcome::Fail(liveness_failure(world, &checker));
    }
    let grace = world.sim.now() + scenario.supervisor.heartbeat_interval * 2;
    if let Some(failure) = step_until(world, &mut checker, grace) {
        return Outcome::Fail(failure);
    }
    match final_checks(world, &checker) {
        Ok(()) => Outcome::Pass,
        Err(failure) => Outcome::Fail(failure),
    }
}

/// Step until `deadline` with the safety oracles; the first failure.
fn step_until(world: &mut World, checker: &mut Checker, deadline: Instant) -> Option<Failure> {
    run_phase(world, checker, deadline, false).err()
}

/// Step until the world settles or `end`; whether it settled.
fn step_until_settled(
    world: &mut World,
    checker: &mut Checker,
    end: Instant,
) -> Result<bool, Failure> {
    run_phase(world, checker, end, true)
}

/// Step until `deadline` (or, with `settle`, until the world settled);
/// whether it settled.
fn run_phase(
    world: &mut World,
    checker: &mut Checker,
    deadline: Instant,
    settle: bool,
) -> Result<bool, Failure> {
    let World { sim, handles } = world;
    let result = sim.run_until(deadline, |sim, progress| {
        if let Progress::Fault(event) = progress {
            checker.on_fault(handles, &event.fault, sim.now());
        }
        let mut verdict = checker.after_step(handles, sim, progress);
        if settle
            && matches!(verdict, StepVerdict::Unchecked)
            && matches!(progress, Progress::Polled { node, .. } if *node == handles.supervisor_node)
            && checker.may_have_settled(handles)
        {
            verdict = checker.check_supervisor(handles, sim.now());
        }
        match verdict {
            StepVerdict::Failed(failure) => ControlFlow::Break(Stop::Failed(failure)),
            StepVerdict::Checked if settle && checker.unsettled(handles).is_none() => {
                ControlFlow::Break(Stop::Settled)
            }
            StepVerdict::Checked | StepVerdict::Unchecked => ControlFlow::Continue(()),
        }
    });
    match result {
        Ok(RunEnd::Stopped(Stop::Failed(failure))) => Err(failure),
        Ok(RunEnd::Stopped(Stop::Settled)) => Ok(true),
        Ok(_) => Ok(false),
        Err(failure) => Err(simulator_failure(&failure, sim.now())),
    }
}

/// The world did not settle within the liveness window.
fn liveness_failure(world: &World, checker: &Checker) -> Failure {
    let now = world.sim.now();
    let handles = &world.handles;
    let violation = checker.unsettled(handles).unwrap_or_else(|| {
        Violation::new(
            "liveness",
            "unsettled".to_owned(),
            "the world did not settle".to_owned(),
        )
    });
    let mut failure = violation.into_failure(FailureKind::Liveness, now);
    failure.message = format!(
        "not settled {}s after heal: {}",
        world
            .sim
            .now()
            .saturating_duration_since(Instant::ZERO)
            .as_secs_f64(),
        failure.message
    );
    failure.hang_report = Some(liveness::hang_report(
        checker.last_snapshot(),
        &handles.book,
        &handles.ledger,
        &world.sim.tasks(),
    ));
    failure
}

/// After settling: no leaked task, every acknowledged job known, every
/// client observation in the records.
fn final_checks(world: &World, checker: &Checker) -> Result<(), Failure> {
    let now = world.sim.now();
    let handles = &world.handles;
    let liveness_kind = |violation: Violation| violation.into_failure(FailureKind::Liveness, now);
    let safety_kind = |violation: Violation| violation.into_failure(FailureKind::Safety, now);
    let Some(snapshot) = checker.last_snapshot() else {
        let violation = Violation::new(
            "liveness",
            "supervisor-down".to_owned(),
            "the supervisor is not running at the end".to_owned(),
        );
        return Err(liveness_kind(violation));
    };
    liveness::check_acknowledged(snapshot, &handles.book).map_err(safety_kind)?;
    liveness::check_observed(snapshot, &handles.book).map_err(safety_kind)?;
    liveness::check_leaks(&world.sim.tasks()).map_err(liveness_kind)
}

/// A failure the simulator found on its own account.
fn simulator_failure(failure: &SimFailure, now: Instant) -> Failure {
    let (kind, oracle, site) = match failure {
        SimFailure::Panic { task, .. } => {
            let site = task.name.split(' ').next().unwrap_or("task").to_owned();
            (FailureKind::Panic, "panic", site)
        }
        SimFailure::Deadlock { .. } => (FailureKind::Deadlock, "deadlock", "quiescent".to_owned()),
        SimFailure::StepLimit { .. } => (FailureKind::Runaway, "runaway", "steps".to_owned()),
        SimFailure::TimeLimit { .. } => (FailureKind::Runaway, "runaway", "time".to_owned()),
    };
    Failure {
        kind,
        oracle: oracle.to_owned(),
        site,
        message: failure.to_string(),
        at: now - Instant::ZERO,
        hang_report: None,
    }
}
