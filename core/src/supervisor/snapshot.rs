//! The supervisor's state as data: what tests and oracles read, and what
//! the clients' overview shows (filtered to the caller unless an admin).
//!
//! Situations are rendered here, at the moment of the snapshot: a queue
//! position is counted now, a wait is measured up to now ("awaiting start
//! from agent a-2 since 12.4s").

use serde::Serialize;

use super::state::State;
use super::Supervisor;
use crate::agents::{AgentSnapshot, Link};
use crate::config::Role;
use crate::job::JobRecord;
use crate::ops::{Op, OpId, OpPhase};
use crate::protocol::{JobView, RunId};
use crate::runtime::Instant;
use crate::slots::PoolSnapshot;

/// The supervisor's whole state at one instant.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Snapshot {
    /// When it was taken, on the supervisor's clock.
    pub at: Instant,
    /// Until when recovered runs wait for their agents, if recovering.
    pub recovering_until: Option<Instant>,
    /// Whether the supervisor is shutting down.
    pub shutting_down: bool,
    /// Every job, in submission order.
    pub jobs: Vec<JobSnapshot>,
    /// Every live op, by id, with its situation rendered now.
    pub ops: Vec<Op>,
    /// The most recently destroyed ops, oldest first.
    pub destroyed_ops: Vec<Op>,
    /// Every pool: kinds, then users, then the job pools in use.
    pub pools: Vec<PoolSnapshot>,
    /// Every agent that ever connected, by id.
    pub agents: Vec<AgentSnapshot>,
}

/// One job in a [`Snapshot`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct JobSnapshot {
    /// The durable record, history and runs included.
    #[serde(flatten)]
    pub record: JobRecord,
    /// The live op acting for it.
    pub op: Option<OpId>,
    /// Its place in its kind's queue, while it waits there.
    pub queue_position: Option<u32>,
    /// What it waits for right now.
    pub situation: Option<String>,
    /// The run whose max-run timer is armed, if any.
    pub max_run_timer: Option<RunId>,
}

impl Snapshot {
    /// What `user` may see: everything for an admin; otherwise their own
    /// jobs and ops, and pools and agents without other users' entries.
    pub fn for_user(mut self, user: &str, role: Role) -> Snapshot {
        if role == Role::Admin {
            return self;
        }
        self.jobs.retain(|job| job.record.owner == user);
        let own: std::collections::BTreeSet<_> =
            self.jobs.iter().map(|job| job.record.id.clone()).collect();
        self.ops.retain(|op| own.contains(&op.job));
        self.destroyed_ops.clear();
        let own_pool = format!("user/{user}");
        self.pools
            .retain(|pool| pool.name.starts_with("kind/") || pool.name == own_pool);
        for pool in &mut self.pools {
            pool.holders.retain(|entry| own.contains(&entry.holder.job));
            pool.waiters.retain(|entry| own.contains(&entry.holder.job));
        }
        for agent in &mut self.agents {
            agent.runs.retain(|run| own.contains(&run.job));
        }
        self
    }
}

impl Supervisor {
    /// The supervisor's state now. Cheap enough to take after every step of
    /// a simulation.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.runtime().now();
        let state = self.lock();
        build_snapshot(&state, now)
    }
}

pub(super) fn build_snapshot(state: &State, now: Instant) -> Snapshot {
    let jobs = {
        let mut jobs: Vec<JobSnapshot> = state
            .jobs
            .values()
            .map(|job| JobSnapshot {
                record: job.record.clone(),
                op: job.op,
                queue_position: state.queue_position(job),
                situation: job
                    .op
                    .and_then(|op| state.ops.get(op))
                    .map(|op| render_situation(state, op, now)),
                max_run_timer: job.max_run_timer.as_ref().map(|timer| timer.run),
            })
            .collect();
        jobs.sort_by_key(|job| job.record.seq);
        jobs
    };
    let ops = state
        .ops
        .live()
        .map(|op| {
            let mut op = op.clone();
            op.situation = render_situation(state, &op, now);
            op
        })
        .collect();
    let mut pools: Vec<PoolSnapshot> = state
        .kind_pools
        .values()
        .map(|p| p.lock().snapshot())
        .collect();
    pools.extend(state.user_pools.values().map(|p| p.lock().snapshot()));
    pools.extend(
        state
            .job_pools
            .values()
            .map(|p| p.lock().snapshot())
            .filter(|p| !p.holders.is_empty() || !p.waiters.is_empty()),
    );
    Snapshot {
        at: now,
        recovering_until: state.recovering_until,
        shutting_down: state.shutting_down,
        jobs,
        ops,
        destroyed_ops: state.ops.recently_destroyed().cloned().collect(),
        pools,
        agents: state.agents.snapshot(),
    }
}

/// The op's situation as of `now`.
pub(super) fn render_situation(state: &State, op: &Op, now: Instant) -> String {
    match op.phase {
        OpPhase::WaitingForSlots => {
            let position = state
                .resources
                .get(&op.id)
                .and_then(|resources| resources.ticket.as_ref())
                .and_then(|ticket| ticket.position());
            match position {
                Some(position) => format!("{}, {} ahead", op.situation, position - 1),
                None => format!("{}, being granted", op.situation),
            }
        }
        OpPhase::AwaitingStart
        | OpPhase::Running
        | OpPhase::Killing
        | OpPhase::Unaccounted
        | OpPhase::Recovering => {
            let waited = now.saturating_duration_since(op.since).as_secs_f64();
            let link = op
                .agent
                .as_ref()
                .and_then(|agent| state.agents.get(agent))
                .map(|agent| agent.link);
            let note = match link {
                Some(Link::Disconnected) => " (agent disconnected)",
                Some(Link::Lost) => " (agent lost)",
                _ => "",
            };
            format!("{} since {waited:.1}s{note}", op.situation)
        }
        _ => op.situation.clone(),
    }
}

/// The client's view of `job`.
pub(super) fn view_of(state: &State, job: &super::state::Job, now: Instant) -> JobView {
    let situation = job
        .op
        .and_then(|op| state.ops.get(op))
        .map(|op| render_situation(state, op, now));
    job.record.view(state.queue_position(job), situation)
}
