//! The supervisor's shared state, behind one lock, and the small helpers
//! every part of the supervisor uses on it.
//!
//! Lock discipline: `State` is only touched under `Inner::state`, which is
//! never held across an `.await`. Pools have their own locks, taken *inside*
//! the state lock (a permit dropped with an op returns its slot there).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::agents::AgentRegistry;
use crate::config::SupervisorConfig;
use crate::job::JobRecord;
use crate::ops::{OpId, OpPhase, OpRegistry};
use crate::protocol::{JobId, JobKind, RunId};
use crate::runtime::{Instant, TaskHandle};
use crate::slots::{Holder, SharedPool, SlotPermit, SlotPool, SlotTicket};

/// The pools an op acquires, in this order (the same for every op, so no
/// two ops can wait on each other).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum SlotStage {
    /// The owner's plan slot (`user/<name>`).
    User,
    /// The job's own slot (`job/<id>`): serialises ops on one job.
    Job,
    /// The kind's slot (`kind/<kind>`).
    Kind,
    /// All three held.
    Held,
}

impl SlotStage {
    pub(crate) fn next(self) -> SlotStage {
        match self {
            SlotStage::User => SlotStage::Job,
            SlotStage::Job => SlotStage::Kind,
            SlotStage::Kind | SlotStage::Held => SlotStage::Held,
        }
    }
}

/// An armed max-run timer.
#[derive(Debug)]
pub(crate) struct MaxRunTimer {
    /// The run it was armed for.
    pub(crate) run: RunId,
    /// The timer task; aborted when disarmed.
    pub(crate) task: TaskHandle,
}

/// A job in memory: its durable record and what drives it.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) record: JobRecord,
    /// The live op acting for the job, if any.
    pub(crate) op: Option<OpId>,
    /// Every op that drove a run of this job, by run.
    pub(crate) ops_by_run: BTreeMap<RunId, OpId>,
    /// The armed max-run timer, if any.
    pub(crate) max_run_timer: Option<MaxRunTimer>,
    /// Set only by [`Flaw::CancelHitsLaterRun`](crate::flaws::Flaw): the
    /// acknowledged cancel waits for the next run to be dispatched.
    pub(crate) cancel_on_next_dispatch: bool,
}

impl Job {
    pub(crate) fn new(record: JobRecord) -> Job {
        Job {
            record,
            op: None,
            ops_by_run: BTreeMap::new(),
            max_run_timer: None,
            cancel_on_next_dispatch: false,
        }
    }
}

/// What an op owns besides its [`Op`](crate::ops::Op) record: dropped
/// together with it, so its tickets and permits return to their pools in the
/// same critical section that destroys it.
#[derive(Debug)]
pub(crate) struct OpResources {
    /// Wakes the op's task.
    pub(crate) wake: Arc<Notify>,
    /// The pool stage the op is at.
    pub(crate) stage: SlotStage,
    /// Its place in the queue of the current stage's pool.
    pub(crate) ticket: Option<SlotTicket>,
    /// Slots held.
    pub(crate) permits: Vec<SlotPermit>,
    /// The op's task, aborted on shutdown.
    pub(crate) task: Option<TaskHandle>,
    /// Counts dispatches, so a commit finishing late can tell whether the
    /// dispatch it made durable is still the op's current one.
    pub(crate) dispatch_generation: u64,
    /// The op's span (job, attempt, run, agent, phase, situation): its task
    /// runs in it, and events about the op from other tasks name it as
    /// their parent.
    pub(crate) span: tracing::Span,
}

/// Everything the supervisor knows, behind one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) jobs: BTreeMap<JobId, Job>,
    /// Every job that was not terminal when last looked at: a superset of
    /// the non-terminal jobs, so admission counts pending jobs without
    /// walking every job ever submitted. Terminal ones are pruned lazily,
    /// by [`State::pending_count`].
    pub(crate) unsettled: BTreeSet<JobId>,
    /// `(owner, key) → job` for idempotent submits.
    pub(crate) idempotency: BTreeMap<(String, String), JobId>,
    /// The next job's sequence number.
    pub(crate) next_seq: u64,
    pub(crate) ops: OpRegistry,
    pub(crate) resources: BTreeMap<OpId, OpResources>,
    pub(crate) agents: AgentRegistry,
    /// Signals that end an agent session's serving loop, by (agent, session).
    pub(crate) sessions: BTreeMap<(String, u64), Arc<Notify>>,
    pub(crate) kind_pools: BTreeMap<JobKind, SharedPool>,
    pub(crate) user_pools: BTreeMap<String, SharedPool>,
    pub(crate) job_pools: BTreeMap<JobId, SharedPool>,
    /// Ops holding their slots and waiting for an agent, by job sequence.
    pub(crate) agent_waiters: BTreeMap<u64, OpId>,
    /// Until when recovered runs wait for their agents; `None` once over.
    pub(crate) recovering_until: Option<Instant>,
    pub(crate) shutting_down: bool,
    /// Background tasks (monitor, recovery grace), aborted on shutdown.
    pub(crate) background: Vec<TaskHandle>,
    /// Client connections being served over `Net`.
    pub(crate) client_connections: u32,
}

impl State {
    pub(crate) fn new(config: &SupervisorConfig) -> State {
        let kind_pools = JobKind::ALL
            .into_iter()
            .map(|kind| {
                let pool = SlotPool::new(format!("kind/{kind}"), config.pools.get(kind));
                (kind, SharedPool::new(pool))
            })
            .collect();
        State {
            jobs: BTreeMap::new(),
            unsettled: BTreeSet::new(),
            idempotency: BTreeMap::new(),
            next_seq: 1,
            ops: OpRegistry::new(),
            resources: BTreeMap::new(),
            agents: AgentRegistry::new(),
            sessions: BTreeMap::new(),
            kind_pools,
            user_pools: BTreeMap::new(),
            job_pools: BTreeMap::new(),
            agent_waiters: BTreeMap::new(),
            recovering_until: None,
            shutting_down: false,
            background: Vec::new(),
            client_connections: 0,
        }
    }

    /// The job `id`; panics if unknown (callers hold ids the state gave).
    pub(crate) fn job_mut(&mut self, id: &JobId) -> &mut Job {
        self.jobs
            .get_mut(id)
            .unwrap_or_else(|| panic!("job {id} is known to the state"))
    }

    /// The pool an op at `stage` queues in, created on first use.
    pub(crate) fn pool_for(
        &mut self,
        config: &SupervisorConfig,
        stage: SlotStage,
        record: &JobRecord,
    ) -> SharedPool {
        match stage {
            SlotStage::User => self
                .user_pools
                .entry(record.owner.clone())
                .or_insert_with(|| {
                    let plan = config.plan_of(&record.owner);
                    let name = format!("user/{}", record.owner);
                    SharedPool::new(SlotPool::new(name, plan.max_running))
                })
                .clone(),
            SlotStage::Job => self
                .job_pools
                .entry(record.id.clone())
                .or_insert_with(|| SharedPool::new(SlotPool::new(format!("job/{}", record.id), 1)))
                .clone(),
            SlotStage::Kind => self.kind_pools[&record.kind].clone(),
            SlotStage::Held => panic!("no pool past the last stage"),
        }
    }

    /// The pool named `name` (`kind/…`, `user/…`, `job/…`), if it exists.
    pub(crate) fn pool_named(&self, name: &str) -> Option<SharedPool> {
        if let Some(kind) = name.strip_prefix("kind/") {
            let kind: JobKind = kind.parse().ok()?;
            return self.kind_pools.get(&kind).cloned();
        }
        if let Some(user) = name.strip_prefix("user/") {
            return self.user_pools.get(user).cloned();
        }
        let job = name.strip_prefix("job/")?;
        self.job_pools.get(&JobId(job.to_owned())).cloned()
    }

    /// Forget the job pool of a terminal job once nobody holds or waits.
    pub(crate) fn prune_job_pool(&mut self, job: &JobId) {
        let idle = self
            .job_pools
            .get(job)
            .is_some_and(|pool| pool.lock().is_idle());
        if idle {
            self.job_pools.remove(job);
        }
    }

    /// Add a job (submitted, or loaded from the store).
    pub(crate) fn insert_job(&mut self, record: JobRecord) {
        if !record.status.is_terminal() {
            self.unsettled.insert(record.id.clone());
        }
        self.jobs.insert(record.id.clone(), Job::new(record));
    }

    /// Jobs of `owner` (of everyone: `None`) not yet dispatched (waiting
    /// for slots or an agent). Forgets the jobs that ended since the last
    /// count, so the cost follows the jobs still in play.
    pub(crate) fn pending_count(&mut self, owner: Option<&str>) -> usize {
        let jobs = &self.jobs;
        self.unsettled.retain(|id| {
            jobs.get(id)
                .is_some_and(|job| !job.record.status.is_terminal())
        });
        // With flaws compiled in, a flawed supervisor may bring a terminal
        // job back (the oracles report it); a clean one never does.
        #[cfg(not(feature = "flaws"))]
        debug_assert!(
            jobs.values()
                .filter(|job| !job.record.status.is_terminal())
                .all(|job| self.unsettled.contains(&job.record.id)),
            "every job still in play is in `unsettled`"
        );
        self.unsettled
            .iter()
            .map(|id| &jobs[id])
            .filter(|job| owner.is_none_or(|owner| job.record.owner == owner))
            .filter(|job| job.record.status == crate::protocol::JobStatus::Pending)
            .filter(|job| job.record.open_run().is_none())
            .count()
    }

    /// The holder label of an op of `job` for its next run.
    pub(crate) fn holder_for(job: &JobRecord, op: Option<OpId>) -> Holder {
        Holder {
            job: job.id.clone(),
            op,
            label: format!("{}#{}", job.id, job.attempts() + 1),
        }
    }

    /// The 1-based place of `job` in its kind's queue, while it waits there.
    pub(crate) fn queue_position(&self, job: &Job) -> Option<u32> {
        let op = job.op?;
        let resources = self.resources.get(&op)?;
        let phase = self.ops.get(op)?.phase;
        if phase != OpPhase::WaitingForSlots || resources.stage != SlotStage::Kind {
            return None;
        }
        resources.ticket.as_ref()?.position()
    }
}
