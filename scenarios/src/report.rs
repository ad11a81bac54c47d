//! What a run is given ([`RunOptions`]) and what it reports ([`RunReport`],
//! [`Outcome`], [`Failure`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use faultline_core::flaws::FlawSet;
use faultline_sim::FaultPlan;
use serde::Serialize;

use crate::scenario::SchedulerChoice;
use crate::workload::Workload;

/// What the trace keeps besides its hash.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum TraceMode {
    /// The hash and the last lines ([`RunReport::trace_tail`]): the fastest,
    /// for fuzzing.
    #[default]
    Hash,
    /// Every event and poll: [`RunReport::trace_text`] and
    /// [`RunReport::chrome_trace`] are filled in (for `replay --trace` and
    /// `--chrome-trace FILE`). Slower; the hash is the same.
    Full,
}

/// How to run a scenario. `None` fields take the scenario's own (the
/// scheduler it names, the plan and workload generated from the seed).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Overrides the scenario's scheduler.
    pub scheduler: Option<SchedulerChoice>,
    /// An explicit fault plan instead of the generated one (replay of a
    /// shrunk or edited plan). Faults at or after `heal` are not applied.
    pub plan: Option<FaultPlan>,
    /// An explicit workload instead of the generated one.
    pub workload: Option<Workload>,
    /// Known flaws to switch on (effective with the `flaws` feature only).
    pub flaws: FlawSet,
    /// What the trace keeps.
    pub trace: TraceMode,
}

impl RunOptions {
    /// The scenario's own choices, with `seed`.
    pub fn new(seed: u64) -> RunOptions {
        RunOptions {
            seed,
            ..RunOptions::default()
        }
    }
}

/// Everything one run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The scheduler, described (`random`, `pct(d=3,k=...)`).
    pub scheduler: String,
    /// The trace hash (16 hex digits): the determinism fingerprint.
    pub hash: String,
    /// Trace events captured.
    pub events: u64,
    /// Virtual time at the end of the run.
    pub sim_time: Duration,
    /// Simulation steps (polls and applied faults).
    pub steps: u64,
    /// Pass or the first failure.
    pub outcome: Outcome,
    /// How often each sometimes-probe was reached (every name of
    /// [`PROBES`](crate::PROBES) is present, possibly with 0).
    pub probes: BTreeMap<String, u64>,
    /// The fault plan the run applied.
    pub plan: FaultPlan,
    /// The workload the clients played.
    pub workload: Workload,
    /// The last lines of the trace (up to ~300).
    pub trace_tail: Vec<String>,
    /// The whole trace as text, with [`TraceMode::Full`].
    pub trace_text: Option<String>,
    /// The whole trace as Chrome trace-event JSON, with [`TraceMode::Full`].
    pub chrome_trace: Option<String>,
    /// Fault families swarm testing switched off for this seed (empty for
    /// an explicit plan).
    pub swarm_off: Vec<String>,
}

impl RunReport {
    /// The failure, if the run failed.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.outcome {
            Outcome::Pass => None,
            Outcome::Fail(failure) => Some(failure),
        }
    }
}

/// How a run ended.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub enum Outcome {
    /// Every oracle held.
    Pass,
    /// The first oracle that failed.
    Fail(Failure),
}

impl Outcome {
    /// Whether the run passed.
    pub fn is_pass(&self) -> bool {
        matches!(self, Outcome::Pass)
    }
}

/// What kind of oracle failed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Something wrong was observed (slot accounting, a status transition,
    /// two live executions, a client history, a lost job).
    Safety,
    /// Something never happened after heal (a job never ended, an agent
    /// never came back), or a task was left behind.
    Liveness,
    /// A task panicked.
    Panic,
    /// Nothing could run and nothing was pending, yet tasks waited.
    Deadlock,
    /// The run passed its step or time bound.
    Runaway,
}

impl FailureKind {
    /// Whether the failure breaks safety (exit status 1) rather than
    /// liveness (exit status 2). A panic is a safety failure; a deadlock or
    /// a runaway is a liveness failure.
    pub fn is_safety(self) -> bool {
        matches!(self, FailureKind::Safety | FailureKind::Panic)
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Safety => "safety",
            FailureKind::Liveness => "liveness",
            FailureKind::Panic => "panic",
            FailureKind::Deadlock => "deadlock",
            FailureKind::Runaway => "runaway",
        }
    }
}

/// The first oracle that failed in a run.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Failure {
    /// Safety, liveness, ...
    pub kind: FailureKind,
    /// The oracle (`slot-accounting`, `status-transition`, `liveness`, ...).
    pub oracle: String,
    /// Where, in terms stable across seeds (`kind-pool`, `completed->timed_out`).
    pub site: String,
    /// What exactly, for humans (names jobs, pools, agents, times).
    pub message: String,
    /// Virtual time of detection.
    pub at: Duration,
    /// For liveness failures: every live op with its situation, every job
    /// not ended, every agent, every blocked task.
    pub hang_report: Option<String>,
}

impl Failure {
    /// `oracle@site`: the same for the same bug whatever the seed; fuzzing
    /// reports one failure per signature.
    pub fn signature(&self) -> String {
        format!("{}@{}", self.oracle, self.site)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at t={:.3}s: {}: {}",
            self.kind.as_str(),
            self.at.as_secs_f64(),
            self.oracle,
            self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_leave_out_the_details() {
        let failure = Failure {
            kind: FailureKind::Safety,
            oracle: "slot-accounting".into(),
            site: "kind-pool".into(),
            message: "pool kind/parallel: held 4 + free 0 != capacity 3".into(),
            at: Duration::from_millis(12_301),
            hang_report: None,
        };
        assert_eq!(failure.signature(), "slot-accounting@kind-pool");
        assert!(failure.to_string().contains("t=12.301s"), "{failure}");
        assert!(FailureKind::Panic.is_safety());
        assert!(!FailureKind::Deadlock.is_safety());
    }
}
