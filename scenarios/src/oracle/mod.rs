//! Oracles: what a run must satisfy, read from the supervisor's snapshot,
//! the execution ledger and the client book.
//!
//! * [`safety`]: checks on one snapshot, after every step that may have
//!   changed the supervisor's state;
//! * [`liveness`]: settling after heal, the hang report, durability across
//!   restarts, leaked tasks;
//! * this file: the [`Checker`] that runs them as the simulation steps.

pub mod liveness;
pub mod safety;

use std::time::Duration;

use faultline_core::runtime::Instant;
use faultline_core::supervisor::Snapshot;
use faultline_sim::{Fault, NodeId, Progress, Sim};

use crate::report::{Failure, FailureKind};
use crate::scenario::Scenario;
use crate::topology::SUPERVISOR_NODE;
use crate::world::{Handles, World};
use safety::SafetyContext;

/// An oracle's finding, before it is stamped with kind and time.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Violation {
    /// The oracle.
    pub oracle: &'static str,
    /// Stable across seeds.
    pub site: String,
    /// For humans.
    pub message: String,
}

impl Violation {
    /// A finding of `oracle` at `site`.
    pub fn new(oracle: &'static str, site: String, message: String) -> Violation {
        Violation {
            oracle,
            site,
            message,
        }
    }

    /// The failure it is, of `kind`, detected at `now`.
    pub fn into_failure(self, kind: FailureKind, now: Instant) -> Failure {
        Failure {
            kind,
            oracle: self.oracle.to_owned(),
            site: self.site,
            message: self.message,
            at: now - Instant::ZERO,
            hang_report: None,
        }
    }
}

/// Runs the oracles as the simulation steps.
pub struct Checker {
    supervisor_node: NodeId,
    agents: usize,
    heartbeat_interval: Duration,
    heartbeat_silence: Duration,
    /// Until when (global time) the supervisor was last stalled, skewed or
    /// restarted: the monitor check waits for it to run undisturbed.
    disturbed_until: Instant,
    /// The supervisor start generation last checked for durability.
    generation_checked: u64,
    /// The last snapshot taken, with its global time.
    last: Option<(Snapshot, Instant)>,
    /// Polls of the supervisor's node so far.
    supervisor_steps: u64,
}

/// The supervisor's snapshot is taken and checked after every fault and
/// after every this-many polls of the supervisor's node (not after every
/// one: a snapshot copies every job, and taking one per poll made the
/// oracles five times as costly as the simulation; see ARCHITECTURE.md).
/// Every violation a known flaw leaves persists until the next check.
pub const SNAPSHOT_EVERY_SUPERVISOR_STEPS: u64 = 32;

/// What one step's check concluded.
pub enum StepVerdict {
    /// The cheap checks passed; no snapshot was due.
    Unchecked,
    /// A snapshot was taken and passed every check.
    Checked,
    /// A safety oracle failed.
    Failed(Failure),
}

impl Checker {
    /// A checker for `world`, built from `scenario`.
    pub fn new(scenario: &Scenario, world: &World) -> Checker {
        let timing = &scenario.supervisor;
        Checker {
            supervisor_node: world.handles.supervisor_node,
            agents: scenario.topology.agents as usize,
            heartbeat_interval: timing.heartbeat_interval,
            heartbeat_silence: timing.heartbeat_interval * timing.heartbeat_grace,
            disturbed_until: Instant::ZERO,
            generation_checked: 0,
            last: None,
            supervisor_steps: 0,
        }
    }

    /// The snapshot of the last check, if the supervisor was up.
    pub fn last_snapshot(&self) -> Option<&Snapshot> {
        self.last.as_ref().map(|(snapshot, _)| snapshot)
    }

    /// Note a planned fault; the supervisor's death empties its slot and
    /// crashes its store.
    pub fn on_fault(&mut self, world: &Handles, fault: &Fault, now: Instant) {
        match fault {
            Fault::Kill { node } if node == SUPERVISOR_NODE => {
                world.on_supervisor_killed();
                self.last = None;
                self.disturb(now);
            }
            Fault::Restart { node } | Fault::Skew { node, .. } if node == SUPERVISOR_NODE => {
                self.disturb(now);
            }
            Fault::Stall { node, duration } if node == SUPERVISOR_NODE => {
                self.disturb(now + *duration);
            }
            _ => {}
        }
    }

    /// Note that the supervisor was disturbed until `until`.
    pub fn disturb(&mut self, until: Instant) {
        self.disturbed_until = self.disturbed_until.max(until);
    }

    /// Check what a step may have broken. `progress` says what the step
    /// did; a snapshot is taken after a fault and after every
    /// [`SNAPSHOT_EVERY_SUPERVISOR_STEPS`]-th poll of the supervisor.
    pub fn after_step(&mut self, world: &Handles, sim: &Sim, progress: &Progress) -> StepVerdict {
        let now = sim.now();
        // Nodes are added supervisor first, then agents, then clients: the
        // ledger changes only on agents' steps, the book on clients'.
        let node = match progress {
            Progress::Polled { node, .. } => Some(node.index()),
            Progress::Fault(_) => None,
            _ => return StepVerdict::Unchecked,
        };
        let on_agent = node.is_none_or(|index| (1..=self.agents).contains(&index));
        let on_client = node.is_none_or(|index| index > self.agents);
        if on_agent {
            if let Some(violation) = world.ledger.first_violation() {
                let violation = Violation::new("executions", "concurrent".to_owned(), violation);
                return StepVerdict::Failed(violation.into_failure(FailureKind::Safety, now));
            }
        }
        if on_client {
            if let Some(violation) = world.book.first_violation() {
                let violation = Violation::new(
                    "client-history",
                    violation.site.to_owned(),
                    violation.message,
                );
                return StepVerdict::Failed(violation.into_failure(FailureKind::Safety, now));
            }
        }
        let due = match node {
            None => true,
            Some(index) if index == self.supervisor_node.index() => {
                self.supervisor_steps += 1;
                self.supervisor_steps
                    .is_multiple_of(SNAPSHOT_EVERY_SUPERVISOR_STEPS)
            }
            Some(_) => false,
        };
        if !due {
            return StepVerdict::Unchecked;
        }
        if let Some(error) = world.supervisor.start_error() {
            let violation = Violation::new("supervisor-start", "start".to_owned(), error);
            return StepVerdict::Failed(violation.into_failure(FailureKind::Safety, now));
        }
        self.check_supervisor(world, now)
    }

    /// Take a snapshot and check it now, whatever the cadence.
    pub fn check_supervisor(&mut self, world: &Handles, now: Instant) -> StepVerdict {
        let Some((snapshot, generation)) = world.supervisor.snapshot() else {
            self.last = None;
            return StepVerdict::Checked;
        };
        let undisturbed = now.saturating_duration_since(self.disturbed_until);
        let context = SafetyContext {
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_silence: self.heartbeat_silence,
            monitor_settled: undisturbed > self.heartbeat_silence + self.heartbeat_interval * 3,
        };
        let mut verdict = safety::check_snapshot(&snapshot, &context);
        if verdict.is_ok() && generation != self.generation_checked {
            self.generation_checked = generation;
            verdict = liveness::check_acknowledged(&snapshot, &world.book);
        }
        self.last = Some((snapshot, now));
        match verdict {
            Ok(()) => StepVerdict::Checked,
            Err(violation) => StepVerdict::Failed(violation.into_failure(FailureKind::Safety, now)),
        }
    }

    /// Whether the world may have settled, judged without a snapshot: every
    /// client script ended and no process runs.
    pub fn may_have_settled(&self, world: &Handles) -> bool {
        world.book.all_scripts_finished() && !world.ledger.any_live()
    }

    /// Why the world has not settled, judged on the last snapshot.
    pub fn unsettled(&self, world: &Handles) -> Option<Violation> {
        liveness::unsettled(
            self.last_snapshot(),
            self.agents,
            &world.book,
            &world.ledger,
        )
    }
}
