//! Ops: one exchange with an agent on behalf of a job, with an explicit
//! lifecycle that ends in `Destroyed`.
//!
//! An op is what the supervisor does for one run of a job: wait for its
//! slots, wait for an agent, record the dispatch, await the agent's start,
//! watch the run, kill it. Every op carries a **situation**: what it waits
//! for right now, in words ("waiting for a parallel slot, 3 ahead",
//! "awaiting start from agent a-2 since 12.4s"). Situations appear in log
//! spans, in the snapshot and in the clients' overview.
//!
//! ```text
//! Created         ─► WaitingForSlots | WaitingForAgent
//! WaitingForSlots ─► WaitingForAgent                  (holds all its slots)
//! WaitingForAgent ─► Dispatching
//! Dispatching     ─► AwaitingStart | WaitingForAgent  (Run not sent: agent left)
//! AwaitingStart   ─► Running | Killing | Unaccounted
//! Running         ─► Killing | Unaccounted
//! Killing         ─► Unaccounted
//! Unaccounted     ─► Running | Killing                (a late report or a kill)
//! Recovering      ─► Running | AwaitingStart | Killing | Unaccounted
//! any live phase  ─► itself (new situation) | Destroyed (final)
//! ```
//!
//! [`OpRegistry`] owns every live op and a bounded tail of destroyed ones.
//! A use of a destroyed op is refused and recorded in that op's history, so
//! an oracle sees it even when the caller (under a flaw) goes on regardless.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::protocol::{AgentId, JobId, JobStatus, RunId};
use crate::runtime::Instant;

/// Identifies an op, unique for the supervisor's lifetime.
pub type OpId = u64;

/// How many destroyed ops the registry remembers for snapshots.
pub const DESTROYED_OPS_KEPT: usize = 256;

/// Where an op is in its lifecycle.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpPhase {
    /// Just created.
    Created,
    /// Queued in a slot pool (job, user, then kind).
    WaitingForSlots,
    /// Holding its slots, waiting for an agent with room.
    WaitingForAgent,
    /// An agent was chosen; the dispatch is being made durable.
    Dispatching,
    /// `Run` sent; awaiting the agent's `Started`.
    AwaitingStart,
    /// The agent runs the process.
    Running,
    /// `Kill` sent (or owed to a disconnected agent); awaiting `Finished`.
    Killing,
    /// The agent came back without declaring the run; awaiting a late
    /// report before settling it.
    Unaccounted,
    /// Restored after a supervisor restart; awaiting the agent's return.
    Recovering,
    /// Final. Nothing may touch the op any more.
    Destroyed,
}

impl OpPhase {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            OpPhase::Created => "created",
            OpPhase::WaitingForSlots => "waiting_for_slots",
            OpPhase::WaitingForAgent => "waiting_for_agent",
            OpPhase::Dispatching => "dispatching",
            OpPhase::AwaitingStart => "awaiting_start",
            OpPhase::Running => "running",
            OpPhase::Killing => "killing",
            OpPhase::Unaccounted => "unaccounted",
            OpPhase::Recovering => "recovering",
            OpPhase::Destroyed => "destroyed",
        }
    }

    /// Whether the op has an agent-side run that may be live.
    pub fn has_run(self) -> bool {
        matches!(
            self,
            OpPhase::AwaitingStart
                | OpPhase::Running
                | OpPhase::Killing
                | OpPhase::Unaccounted
                | OpPhase::Recovering
        )
    }
}

impl fmt::Display for OpPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an op may go from `from` to `to`.
pub fn is_legal_op_transition(from: OpPhase, to: OpPhase) -> bool {
    use OpPhase::*;
    match (from, to) {
        (Destroyed, _) => false,
        (_, Destroyed) => true,
        (from, to) if from == to => true,
        (Created, WaitingForSlots | WaitingForAgent) => true,
        (WaitingForSlots, WaitingForAgent) => true,
        (WaitingForAgent, Dispatching) => true,
        (Dispatching, AwaitingStart | WaitingForAgent) => true,
        (AwaitingStart, Running | Killing | Unaccounted) => true,
        (Running, Killing | Unaccounted) => true,
        (Killing, Unaccounted) => true,
        (Unaccounted, Running | Killing) => true,
        (Recovering, Running | AwaitingStart | Killing | Unaccounted) => true,
        _ => false,
    }
}

/// Why the supervisor kills a run; decides the job's status if the kill,
/// not the process, ends it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillReason {
    /// Its owner canceled the job.
    Cancel,
    /// It ran past its max run time.
    MaxRunTime,
    /// Its agent did not report it started in time.
    StartTimeout,
}

impl KillReason {
    /// The status a run ended by this kill gives its job.
    pub fn status(self) -> JobStatus {
        match self {
            KillReason::Cancel => JobStatus::Canceled,
            KillReason::MaxRunTime => JobStatus::TimedOut,
            KillReason::StartTimeout => JobStatus::Failed,
        }
    }

    /// For humans.
    pub fn as_str(self) -> &'static str {
        match self {
            KillReason::Cancel => "cancel",
            KillReason::MaxRunTime => "max run time",
            KillReason::StartTimeout => "start timeout",
        }
    }
}

/// One step of an op's lifecycle.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct OpStep {
    /// The phase entered (or, for a refused use, the phase it stays in).
    pub phase: OpPhase,
    /// When.
    pub at: Instant,
    /// What happened, for humans.
    pub note: String,
}

/// One op.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Op {
    /// The op's id.
    pub id: OpId,
    /// Its job.
    pub job: JobId,
    /// The run it drives, once dispatched (or recovered).
    pub run: Option<RunId>,
    /// Its agent, once chosen.
    pub agent: Option<AgentId>,
    /// Current phase.
    pub phase: OpPhase,
    /// When the current phase began.
    pub since: Instant,
    /// Why the run is being killed, if it is.
    pub kill: Option<KillReason>,
    /// What the op waits for right now, in words.
    pub situation: String,
    /// Lifecycle steps, oldest first (bounded by the number of phases, plus
    /// any refused use after destroy).
    pub history: Vec<OpStep>,
    /// Uses refused because the op was destroyed. Zero unless a flaw let a
    /// late message reach it.
    pub uses_after_destroy: u32,
    /// The pools the op took a slot from (kept after destroy, for the
    /// record).
    pub held_pools: Vec<String>,
}

/// An op transition the lifecycle refuses.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("op {op}: illegal transition {from} -> {to}")]
pub struct IllegalOpTransition {
    /// The op.
    pub op: OpId,
    /// Its phase.
    pub from: OpPhase,
    /// The refused phase.
    pub to: OpPhase,
}

/// Every live op, plus the most recently destroyed ones.
#[derive(Debug, Default)]
pub struct OpRegistry {
    live: BTreeMap<OpId, Op>,
    destroyed: VecDeque<Op>,
    next_id: OpId,
}

impl OpRegistry {
    /// An empty registry.
    pub fn new() -> OpRegistry {
        OpRegistry {
            live: BTreeMap::new(),
            destroyed: VecDeque::new(),
            next_id: 1,
        }
    }

    /// Create an op for `job` in phase `phase` (`Created` or `Recovering`).
    pub fn create(&mut self, job: JobId, phase: OpPhase, now: Instant, situation: &str) -> OpId {
        assert!(
            matches!(phase, OpPhase::Created | OpPhase::Recovering),
            "ops start created or recovering, not {phase}"
        );
        let id = self.next_id;
        self.next_id += 1;
        self.live.insert(
            id,
            Op {
                id,
                job,
                run: None,
                agent: None,
                phase,
                since: now,
                kill: None,
                situation: situation.to_owned(),
                history: vec![OpStep {
                    phase,
                    at: now,
                    note: situation.to_owned(),
                }],
                uses_after_destroy: 0,
                held_pools: Vec::new(),
            },
        );
        id
    }

    /// The live op `id`.
    pub fn get(&self, id: OpId) -> Option<&Op> {
        self.live.get(&id)
    }

    /// The live op `id`, mutably (for its run, agent, kill and situation).
    pub fn get_mut(&mut self, id: OpId) -> Option<&mut Op> {
        self.live.get_mut(&id)
    }

    /// Whether `id` is live.
    pub fn is_live(&self, id: OpId) -> bool {
        self.live.contains_key(&id)
    }

    /// Move op `id` to `to`, with `situation` as its new description.
    pub fn advance(
        &mut self,
        id: OpId,
        to: OpPhase,
        now: Instant,
        situation: &str,
    ) -> Result<(), IllegalOpTransition> {
        assert!(
            to != OpPhase::Destroyed,
            "destroy ops with OpRegistry::destroy"
        );
        let Some(op) = self.live.get_mut(&id) else {
            return Err(IllegalOpTransition {
                op: id,
                from: OpPhase::Destroyed,
                to,
            });
        };
        if !is_legal_op_transition(op.phase, to) {
            return Err(IllegalOpTransition {
                op: id,
                from: op.phase,
                to,
            });
        }
        if op.phase != to {
            op.since = now;
        }
        op.phase = to;
        op.situation = situation.to_owned();
        op.history.push(OpStep {
            phase: to,
            at: now,
            note: situation.to_owned(),
        });
        Ok(())
    }

    /// Destroy op `id`, noting `outcome`. Returns the op as it was.
    /// Destroying an op that is not live is a bug.
    pub fn destroy(&mut self, id: OpId, now: Instant, outcome: &str) -> Op {
        let mut op = self
            .live
            .remove(&id)
            .unwrap_or_else(|| panic!("op {id} destroyed twice or never created"));
        op.phase = OpPhase::Destroyed;
        op.since = now;
        op.situation = format!("destroyed: {outcome}");
        op.history.push(OpStep {
            phase: OpPhase::Destroyed,
            at: now,
            note: outcome.to_owned(),
        });
        if self.destroyed.len() == DESTROYED_OPS_KEPT {
            self.destroyed.pop_front();
        }
        self.destroyed.push_back(op.clone());
        op
    }

    /// A recently destroyed op, if still remembered.
    pub fn destroyed(&self, id: OpId) -> Option<&Op> {
        self.destroyed.iter().rev().find(|op| op.id == id)
    }

    /// Record that something tried to use the destroyed op `id`. Returns
    /// whether the op was remembered.
    pub fn record_use_after_destroy(&mut self, id: OpId, now: Instant, what: &str) -> bool {
        let Some(op) = self.destroyed.iter_mut().rev().find(|op| op.id == id) else {
            return false;
        };
        op.uses_after_destroy += 1;
        op.history.push(OpStep {
            phase: OpPhase::Destroyed,
            at: now,
            note: format!("used after destroy: {what}"),
        });
        true
    }

    /// Live ops, by id.
    pub fn live(&self) -> impl Iterator<Item = &Op> {
        self.live.values()
    }

    /// Remembered destroyed ops, oldest first.
    pub fn recently_destroyed(&self) -> impl Iterator<Item = &Op> {
        self.destroyed.iter()
    }

    /// Number of live ops.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PHASES: [OpPhase; 10] = [
        OpPhase::Created,
        OpPhase::WaitingForSlots,
        OpPhase::WaitingForAgent,
        OpPhase::Dispatching,
        OpPhase::AwaitingStart,
        OpPhase::Running,
        OpPhase::Killing,
        OpPhase::Unaccounted,
        OpPhase::Recovering,
        OpPhase::Destroyed,
    ];

    fn job() -> JobId {
        JobId("j-1".into())
    }

    #[test]
    fn the_happy_path_is_legal() {
        let mut ops = OpRegistry::new();
        let t = Instant::from_millis(5);
        let id = ops.create(job(), OpPhase::Created, t, "created");
        for phase in [
            OpPhase::WaitingForSlots,
            OpPhase::WaitingForAgent,
            OpPhase::Dispatching,
            OpPhase::AwaitingStart,
            OpPhase::Running,
            OpPhase::Killing,
        ] {
            ops.advance(id, phase, t, phase.as_str()).expect("legal");
        }
        let op = ops.destroy(id, t, "canceled");
        assert_eq!(op.phase, OpPhase::Destroyed);
        assert_eq!(op.history.len(), 8);
        assert!(!ops.is_live(id));
        assert!(ops.destroyed(id).is_some());
    }

    #[test]
    fn a_destroyed_op_refuses_every_transition_and_records_uses() {
        let mut ops = OpRegistry::new();
        let t = Instant::ZERO;
        let id = ops.create(job(), OpPhase::Created, t, "created");
        ops.destroy(id, t, "canceled while queued");
        let error = ops
            .advance(id, OpPhase::Running, t, "late start")
            .expect_err("destroyed is final");
        assert_eq!(error.from, OpPhase::Destroyed);
        assert!(ops.record_use_after_destroy(id, t, "late finished"));
        let op = ops.destroyed(id).expect("remembered");
        assert_eq!(op.uses_after_destroy, 1);
        assert!(op
            .history
            .last()
            .expect("step")
            .note
            .contains("used after destroy"));
    }

    #[test]
    #[should_panic(expected = "destroyed twice")]
    fn destroying_twice_is_a_bug() {
        let mut ops = OpRegistry::new();
        let id = ops.create(job(), OpPhase::Created, Instant::ZERO, "created");
        ops.destroy(id, Instant::ZERO, "done");
        ops.destroy(id, Instant::ZERO, "again");
    }

    #[test]
    fn only_a_bounded_tail_of_destroyed_ops_is_kept() {
        let mut ops = OpRegistry::new();
        for _ in 0..DESTROYED_OPS_KEPT + 10 {
            let id = ops.create(job(), OpPhase::Created, Instant::ZERO, "created");
            ops.destroy(id, Instant::ZERO, "done");
        }
        assert_eq!(ops.recently_destroyed().count(), DESTROYED_OPS_KEPT);
        assert!(ops.destroyed(1).is_none());
    }

    proptest! {
        #[test]
        fn any_sequence_of_requests_follows_the_lifecycle(
            steps in proptest::collection::vec(0usize..10, 0..30)
        ) {
            let mut ops = OpRegistry::new();
            let id = ops.create(job(), OpPhase::Created, Instant::ZERO, "created");
            let mut destroyed = false;
            for index in steps {
                let to = PHASES[index];
                let before = ops.get(id).map(|op| op.phase);
                if to == OpPhase::Destroyed {
                    if !destroyed {
                        ops.destroy(id, Instant::ZERO, "done");
                        destroyed = true;
                    }
                    continue;
                }
                let result = ops.advance(id, to, Instant::ZERO, "step");
                match before {
                    None => prop_assert!(result.is_err()),
                    Some(from) => prop_assert_eq!(result.is_ok(), is_legal_op_transition(from, to)),
                }
            }
            let op = ops.get(id).or_else(|| ops.destroyed(id)).expect("known op").clone();
            for pair in op.history.windows(2) {
                prop_assert!(
                    pair[0].phase == pair[1].phase
                        || is_legal_op_transition(pair[0].phase, pair[1].phase),
                    "{:?} -> {:?}", pair[0].phase, pair[1].phase
                );
            }
            prop_assert_eq!(op.phase == OpPhase::Destroyed, destroyed);
        }
    }
}
