//! Known flaws: switches that re-introduce one real bug class each, so the
//! simulation harness can prove it finds them.
//!
//! Every flaw is one check, [`FlawSet::is_on`], at the place where the real
//! bug lived. Without the cargo feature `flaws` that check is the constant
//! `false`, so the faulty branch is dead code the optimiser removes and a
//! production build cannot switch a flaw on, whatever its configuration says.
//!
//! Each flaw is written so that it shows up as a violation an oracle can see
//! through [`Supervisor::snapshot`](crate::supervisor::Supervisor::snapshot)
//! or through the history clients observe, not only as a panic. The
//! signature each one leaves is listed on its variant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One known bug class of the original system.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flaw {
    /// A cancel that arrives while a slot is being handed to the job's op
    /// leaves that slot taken. Mechanism: the pool had already handed the
    /// permit to the waiter, and the cancel path only removed the waiter from
    /// the queue. Signature: a pool holder whose op is destroyed and whose
    /// job is terminal; the pool's capacity shrinks for good.
    SlotLeakOnCancel,
    /// A late agent reply is applied to an op that was destroyed meanwhile.
    /// Mechanism: the reply handler found the op through an index that still
    /// named it and never looked at its lifecycle. Signature: an op
    /// transition after `Destroyed` and a terminal job whose status changes
    /// again.
    UseAfterDestroy,
    /// The max-run timer is not disarmed when the run completes, and later
    /// overwrites the job's terminal status with `TimedOut`. Signature: an
    /// illegal transition (`Completed → TimedOut`) in the job's history.
    TimeoutOverwritesTerminal,
    /// Messages and the end of an agent's superseded connection are still
    /// applied after the agent reconnected. Mechanism: the connection handler
    /// never compared its session with the agent's current one. Signature:
    /// a connected agent shown disconnected (its live session detached), so
    /// jobs wait for it forever and acknowledged cancels never reach it.
    StaleConnectionAccepted,
    /// One late heartbeat declares a live agent lost, and its runs are
    /// treated as dead and dispatched again. Signature: two live runs of one
    /// job (on two agents, or twice on one) in the snapshot.
    NoHeartbeatGrace,
    /// The submit handler reserves the job's queue position before it awaits
    /// the store, and registers the job only after; a handler dropped at that
    /// await leaves an orphan queue entry. Signature: a pool waiter that
    /// belongs to no job, holding its queue position forever.
    DropUnsafeSubmit,
    /// An acknowledged cancel that finds the job between runs is carried over
    /// to the job's next run instead of ending the job. Signature: a run
    /// dispatched after the job's cancel was acknowledged.
    CancelHitsLaterRun,
    /// A closed agent connection leaves its jobs `Running` forever: the agent
    /// monitor only looks at connected agents. Signature: a job stuck
    /// `Running` on a disconnected agent after the system healed.
    LostAgentJobStaysRunning,
    /// A duplicated `Finished` returns the run's slots a second time.
    /// Signature: a pool with `held + free != capacity`.
    DoubleFreeOnDuplicateFinish,
    /// The client is answered before the job record is durable. Signature:
    /// an acknowledged job missing after a supervisor crash and restart.
    AckBeforeCommit,
    /// On restart, jobs that were running are queued again at once instead
    /// of waiting for their agents. Signature: a `Running → Pending` step in
    /// the job's history and two live runs of the job once its agent returns.
    RestartRequeuesRunning,
}

impl Flaw {
    /// Every flaw, in a fixed order.
    pub const ALL: [Flaw; 11] = [
        Flaw::SlotLeakOnCancel,
        Flaw::UseAfterDestroy,
        Flaw::TimeoutOverwritesTerminal,
        Flaw::StaleConnectionAccepted,
        Flaw::NoHeartbeatGrace,
        Flaw::DropUnsafeSubmit,
        Flaw::CancelHitsLaterRun,
        Flaw::LostAgentJobStaysRunning,
        Flaw::DoubleFreeOnDuplicateFinish,
        Flaw::AckBeforeCommit,
        Flaw::RestartRequeuesRunning,
    ];

    /// The kebab-case name used in scenario files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Flaw::SlotLeakOnCancel => "slot-leak-on-cancel",
            Flaw::UseAfterDestroy => "use-after-destroy",
            Flaw::TimeoutOverwritesTerminal => "timeout-overwrites-terminal",
            Flaw::StaleConnectionAccepted => "stale-connection-accepted",
            Flaw::NoHeartbeatGrace => "no-heartbeat-grace",
            Flaw::DropUnsafeSubmit => "drop-unsafe-submit",
            Flaw::CancelHitsLaterRun => "cancel-hits-later-run",
            Flaw::LostAgentJobStaysRunning => "lost-agent-job-stays-running",
            Flaw::DoubleFreeOnDuplicateFinish => "double-free-on-duplicate-finish",
            Flaw::AckBeforeCommit => "ack-before-commit",
            Flaw::RestartRequeuesRunning => "restart-requeues-running",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`Flaw::ALL`].
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("unknown flaw `{name}` (known: {known})")]
pub struct UnknownFlaw {
    /// The name given.
    pub name: String,
    /// Every known name, comma separated.
    pub known: String,
}

impl FromStr for Flaw {
    type Err = UnknownFlaw;
    fn from_str(name: &str) -> Result<Flaw, UnknownFlaw> {
        Flaw::ALL
            .into_iter()
            .find(|flaw| flaw.as_str() == name)
            .ok_or_else(|| UnknownFlaw {
                name: name.to_owned(),
                known: Flaw::ALL
                    .iter()
                    .map(|flaw| flaw.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Which flaws are switched on. `Copy`, so every component keeps its own.
#[derive(Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "Vec<Flaw>", from = "Vec<Flaw>")]
pub struct FlawSet {
    bits: u32,
}

impl FlawSet {
    /// No flaw: the correct supervisor.
    pub const fn none() -> FlawSet {
        FlawSet { bits: 0 }
    }

    /// Exactly the given flaws.
    pub fn of(flaws: &[Flaw]) -> FlawSet {
        let mut set = FlawSet::none();
        for flaw in flaws {
            set.insert(*flaw);
        }
        set
    }

    /// Switch `flaw` on (it only takes effect in builds with the `flaws`
    /// feature; see [`FlawSet::is_on`]).
    pub fn insert(&mut self, flaw: Flaw) {
        self.bits |= flaw.bit();
    }

    /// Whether `flaw` is switched on *and* this build can express flaws.
    /// The constant `false` without the `flaws` feature.
    #[inline(always)]
    pub fn is_on(self, flaw: Flaw) -> bool {
        cfg!(feature = "flaws") && self.bits & flaw.bit() != 0
    }

    /// Whether any flaw is in effect. The constant `false` without the
    /// `flaws` feature. Code that asserts an invariant a flaw may break uses
    /// it to record the violation for the oracle instead of panicking.
    #[inline(always)]
    pub fn any_on(self) -> bool {
        cfg!(feature = "flaws") && self.bits != 0
    }

    /// The flaws in the set, in [`Flaw::ALL`] order (whether or not this
    /// build can express them).
    pub fn iter(self) -> impl Iterator<Item = Flaw> {
        Flaw::ALL
            .into_iter()
            .filter(move |flaw| self.bits & flaw.bit() != 0)
    }
}

impl From<FlawSet> for Vec<Flaw> {
    fn from(set: FlawSet) -> Vec<Flaw> {
        set.iter().collect()
    }
}

impl From<Vec<Flaw>> for FlawSet {
    fn from(flaws: Vec<Flaw>) -> FlawSet {
        FlawSet::of(&flaws)
    }
}

impl fmt::Debug for FlawSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_display() {
        for flaw in Flaw::ALL {
            let parsed: Flaw = flaw.to_string().parse().expect("own name parses");
            assert_eq!(parsed, flaw);
        }
        let error = "no-such-flaw".parse::<Flaw>().expect_err("unknown name");
        assert!(error.known.contains("slot-leak-on-cancel"));
    }

    #[test]
    fn every_flaw_has_its_own_bit() {
        let mut seen = 0u32;
        for flaw in Flaw::ALL {
            assert_eq!(seen & flaw.bit(), 0, "{flaw} shares a bit");
            seen |= flaw.bit();
        }
    }

    #[test]
    fn is_on_follows_the_feature() {
        let set = FlawSet::of(&[Flaw::AckBeforeCommit]);
        assert_eq!(set.is_on(Flaw::AckBeforeCommit), cfg!(feature = "flaws"));
        assert!(!set.is_on(Flaw::UseAfterDestroy));
        assert!(!FlawSet::none().any_on());
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![Flaw::AckBeforeCommit]);
    }

    #[test]
    fn serializes_as_a_list_of_names() {
        let set = FlawSet::of(&[Flaw::NoHeartbeatGrace, Flaw::SlotLeakOnCancel]);
        let json = serde_json::to_string(&set).expect("serializes");
        assert_eq!(json, r#"["slot-leak-on-cancel","no-heartbeat-grace"]"#);
        let back: FlawSet = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, set);
    }
}
