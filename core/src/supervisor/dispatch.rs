//! The op task of each run: acquire the slots, get an agent, make the
//! dispatch durable, send `Run`, and wake up for the start and kill
//! deadlines.
//!
//! The task never holds state between awaits: every wake-up re-reads the
//! op from the state (it may have been canceled, settled or destroyed
//! meanwhile) and decides its next step under the lock. Everything that
//! ends a run happens in [`settle`](super::settle), under the same lock,
//! wherever the news comes from (an agent message, a cancel, a timer).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tracing::Instrument;

use super::settle::RunEnd;
use super::state::{OpResources, SlotStage, State};
use super::Supervisor;
use crate::agents::{AgentRun, AgentRunPhase, Link};
use crate::codec;
use crate::flaws::Flaw;
use crate::ops::{KillReason, OpId, OpPhase};
use crate::protocol::{AgentId, JobId, JobStatus, SupervisorMessage};
use crate::runtime::{Instant, Runtime};
use crate::slots::{GrantOnWithdraw, SlotTicket};
use crate::store::StoreError;

/// Wake-ups one op task may take before it is declared runaway. An op is
/// woken by events about its own job only, so a healthy op takes a few dozen.
const OP_STEPS_MAX: u32 = 100_000;

/// How late an op reacts to a wake-up when the `op-wakes-late` buggify
/// site fires.
const OP_LATE_WAKE: Duration = Duration::from_secs(1);

/// What an op task does next.
#[derive(Debug)]
pub(super) enum OpStep {
    /// The op is destroyed (or the supervisor stops): end the task.
    Done,
    /// Sleep until woken, or until the timeout.
    Wait(Option<Duration>),
    /// Make the dispatch of this generation durable, then send it.
    Commit(u64),
}

impl Supervisor {
    /// Create an op for `job` and spawn its task. `reserved` is a user-pool
    /// ticket taken before the op existed (only under
    /// [`Flaw::DropUnsafeSubmit`]).
    pub(super) fn spawn_op(
        &self,
        state: &mut State,
        job_id: &JobId,
        reserved: Option<SlotTicket>,
    ) -> OpId {
        self.spawn_op_in(state, job_id, OpPhase::Created, reserved)
    }

    /// Create an op for `job` in `phase` (`Created`, or `Recovering` after a
    /// restart) and spawn its task.
    pub(super) fn spawn_op_in(
        &self,
        state: &mut State,
        job_id: &JobId,
        phase: OpPhase,
        reserved: Option<SlotTicket>,
    ) -> OpId {
        let now = self.runtime().now();
        let attempt = state.job_mut(job_id).record.attempts() + 1;
        let op = state.ops.create(job_id.clone(), phase, now, phase.as_str());
        let wake = Arc::new(Notify::new());
        if let Some(ticket) = &reserved {
            ticket.set_owner(op, wake.clone());
        }
        state.resources.insert(
            op,
            OpResources {
                wake: wake.clone(),
                stage: SlotStage::User,
                ticket: reserved,
                permits: Vec::new(),
                task: None,
                dispatch_generation: 0,
                span: tracing::Span::none(),
            },
        );
        state.job_mut(job_id).op = Some(op);
        let span = tracing::info_span!(
            "op",
            op,
            job = %job_id,
            attempt,
            run = tracing::field::Empty,
            agent = tracing::field::Empty,
        );
        let supervisor = self.clone();
        let task = self.spawn(
            &format!("run-op {job_id}#{attempt}"),
            Box::pin(supervisor.drive_op(op, wake).instrument(span.clone())),
        );
        if let Some(resources) = state.resources.get_mut(&op) {
            resources.task = Some(task);
            resources.span = span;
        }
        op
    }

    /// The op task: step, then wait for a wake-up, a deadline or the store.
    async fn drive_op(self, op: OpId, wake: Arc<Notify>) {
        for _ in 0..OP_STEPS_MAX {
            match self.step_op(op) {
                OpStep::Done => return,
                OpStep::Wait(timeout) => {
                    wait_for_wake(self.runtime(), &wake, timeout).await;
                    if self.runtime().buggify("op-wakes-late") {
                        // A busy supervisor: the op reacts to its wake-up late.
                        self.runtime().sleep(OP_LATE_WAKE).await;
                    }
                }
                OpStep::Commit(generation) => {
                    let result = self.inner.store.commit().await;
                    self.finish_dispatch(op, generation, result);
                }
            }
        }
        tracing::error!(op, steps = OP_STEPS_MAX, "op task exceeded its step bound");
        self.abandon_op(op);
    }

    /// Decide the op's next step under the lock.
    fn step_op(&self, op: OpId) -> OpStep {
        let now = self.runtime().now();
        let mut state = self.lock();
        if state.shutting_down {
            return OpStep::Done;
        }
        let Some(current) = state.ops.get(op) else {
            return OpStep::Done;
        };
        let (phase, since) = (current.phase, current.since);
        let config = &self.inner.config;
        match phase {
            OpPhase::Created | OpPhase::WaitingForSlots => self.acquire_slots(&mut state, op, now),
            OpPhase::Recovering => {
                self.acquire_slots(&mut state, op, now);
                OpStep::Wait(None)
            }
            OpPhase::WaitingForAgent | OpPhase::Running => OpStep::Wait(None),
            OpPhase::Dispatching => OpStep::Commit(state.resources[&op].dispatch_generation),
            OpPhase::AwaitingStart => {
                let deadline = since + config.agent_start_timeout;
                if now < deadline {
                    return OpStep::Wait(Some(deadline - now));
                }
                tracing::info!(probe = "start-timeout", op, "no start reported in time");
                self.begin_kill(&mut state, op, KillReason::StartTimeout, now);
                OpStep::Wait(Some(config.agent_reply_timeout))
            }
            OpPhase::Killing | OpPhase::Unaccounted => {
                let deadline = since + config.agent_reply_timeout;
                if now < deadline {
                    return OpStep::Wait(Some(deadline - now));
                }
                let end = if phase == OpPhase::Killing {
                    RunEnd::KillUnconfirmed
                } else {
                    RunEnd::Gone
                };
                self.settle_run(&mut state, op, end, now);
                OpStep::Done
            }
            OpPhase::Destroyed => OpStep::Done,
        }
    }

    /// Walk the slot stages as far as grants allow. An op in `Recovering`
    /// keeps its phase (its run is already out there); any other op moves to
    /// `WaitingForSlots`, then `WaitingForAgent` once it holds all three.
    pub(super) fn acquire_slots(&self, state: &mut State, op: OpId, now: Instant) -> OpStep {
        let job_id = state.ops.get(op).expect("acquiring op is live").job.clone();
        let recovering = state.ops.get(op).map(|o| o.phase) == Some(OpPhase::Recovering);
        let grant = if self.flaws().is_on(Flaw::SlotLeakOnCancel) {
            GrantOnWithdraw::Leak
        } else {
            GrantOnWithdraw::Release
        };
        for _ in 0..4 {
            let stage = state.resources[&op].stage;
            if stage == SlotStage::Held {
                if !recovering {
                    self.wait_for_agent(state, op, now);
                }
                return OpStep::Wait(None);
            }
            if state.resources[&op].ticket.is_none() {
                let record = &state.jobs[&job_id].record;
                let holder = State::holder_for(record, Some(op));
                let priority = if recovering { 0 } else { record.seq };
                let pool = state.pool_for(&self.inner.config, stage, &record.clone());
                let wake = state.resources[&op].wake.clone();
                let ticket = pool.enqueue(holder, priority, now, Some(wake), grant);
                state.resources.get_mut(&op).expect("live op").ticket = Some(ticket);
            }
            let resources = state.resources.get_mut(&op).expect("live op");
            let ticket = resources
                .ticket
                .as_mut()
                .expect("a ticket was just ensured");
            ticket.touch(now);
            match ticket.take(now) {
                Some(permit) => {
                    let pool_name = permit.pool().lock().name().to_owned();
                    resources.permits.push(permit);
                    resources.ticket = None;
                    resources.stage = stage.next();
                    if let Some(live) = state.ops.get_mut(op) {
                        live.held_pools.push(pool_name);
                    }
                }
                None => {
                    if !recovering {
                        let what = describe_stage(stage, state, &job_id);
                        let situation = format!("waiting for {what}");
                        self.advance_op(state, op, OpPhase::WaitingForSlots, now, &situation);
                    }
                    return OpStep::Wait(None);
                }
            }
        }
        unreachable!("three stages are walked in at most four steps")
    }

    fn wait_for_agent(&self, state: &mut State, op: OpId, now: Instant) {
        let job_id = state.ops.get(op).expect("live op").job.clone();
        let record = &state.jobs[&job_id].record;
        let (seq, kind) = (record.seq, record.kind);
        let situation = format!("waiting for an agent that runs {kind} jobs");
        self.advance_op(state, op, OpPhase::WaitingForAgent, now, &situation);
        state.agent_waiters.insert(seq, op);
        self.assign_agents(state, now);
    }

    /// Give each op waiting for an agent (oldest job first) the least loaded
    /// agent with room for its kind.
    pub(super) fn assign_agents(&self, state: &mut State, now: Instant) {
        let waiting: Vec<(u64, OpId)> = state
            .agent_waiters
            .iter()
            .map(|(seq, op)| (*seq, *op))
            .collect();
        for (seq, op) in waiting {
            let job_id = state.ops.get(op).expect("waiting ops are live").job.clone();
            let kind = state.jobs[&job_id].record.kind;
            let Some(agent) = state.agents.pick(kind) else {
                continue;
            };
            state.agent_waiters.remove(&seq);
            self.dispatch_to(state, op, &agent, now);
        }
    }

    /// Record run N of the op's job on `agent` and make it durable (the op
    /// task commits, then [`Supervisor::finish_dispatch`] sends it).
    fn dispatch_to(&self, state: &mut State, op: OpId, agent: &AgentId, now: Instant) {
        let job_id = state
            .ops
            .get(op)
            .expect("dispatched op is live")
            .job
            .clone();
        let job = state.job_mut(&job_id);
        let run = job.record.open_new_run(agent.clone(), now);
        job.ops_by_run.insert(run, op);
        self.inner.store.put(job.record.clone());
        let entry = state.agents.get_mut(agent).expect("picked agents exist");
        let session = entry.session;
        entry.runs.insert(
            (job_id.clone(), run),
            AgentRun {
                op: Some(op),
                phase: AgentRunPhase::Dispatched,
                session,
            },
        );
        let resources = state.resources.get_mut(&op).expect("dispatched op is live");
        resources.dispatch_generation += 1;
        let live = state.ops.get_mut(op).expect("dispatched op is live");
        live.run = Some(run);
        live.agent = Some(agent.clone());
        let situation = format!("recording the dispatch of run {run} to agent {agent}");
        self.advance_op(state, op, OpPhase::Dispatching, now, &situation);
        self.wake_op(state, op);
    }

    /// After the dispatch commit: send `Run`, unless the op was canceled or
    /// its agent left meanwhile.
    fn finish_dispatch(&self, op: OpId, generation: u64, committed: Result<(), StoreError>) {
        let now = self.runtime().now();
        let mut state = self.lock();
        let Some(current) = state.ops.get(op) else {
            return;
        };
        if current.phase != OpPhase::Dispatching
            || state.resources[&op].dispatch_generation != generation
        {
            // Withdrawn or dispatched again meanwhile: the next step commits anew.
            return;
        }
        let run = current.run.expect("a dispatching op names its run");
        let job_id = current.job.clone();
        let agent = current
            .agent
            .clone()
            .expect("a dispatching op names its agent");
        let kill = current.kill;
        if let Err(error) = committed {
            tracing::error!(%error, job = %job_id, run, "cannot record a dispatch");
            self.withdraw_dispatch(&mut state, op, now);
            let reason = format!("cannot record its dispatch: {error}");
            self.end_without_run(&mut state, op, JobStatus::Failed, &reason, now);
            return;
        }
        if kill.is_some() {
            self.withdraw_dispatch(&mut state, op, now);
            self.end_without_run(
                &mut state,
                op,
                JobStatus::Canceled,
                "canceled before dispatch",
                now,
            );
            return;
        }
        let record = &state.jobs[&job_id].record;
        let message = SupervisorMessage::Run {
            job: job_id.clone(),
            run,
            kind: record.kind,
            command: record.command.clone(),
        };
        let sent = state
            .agents
            .get(&agent)
            .filter(|entry| entry.link == Link::Connected)
            .and_then(|entry| entry.sender())
            .is_some_and(|sender| sender.send(codec::encode(&message)).is_ok());
        if !sent {
            tracing::info!(job = %job_id, run, %agent, "agent left before the run was sent");
            self.withdraw_dispatch(&mut state, op, now);
            self.wait_for_agent(&mut state, op, now);
            return;
        }
        let situation = format!("awaiting start from agent {agent}");
        self.advance_op(&mut state, op, OpPhase::AwaitingStart, now, &situation);
        let job = state.job_mut(&job_id);
        if job.cancel_on_next_dispatch {
            job.cancel_on_next_dispatch = false;
            self.begin_kill(&mut state, op, KillReason::Cancel, now);
        }
        self.wake_op(&state, op);
    }

    /// Take back a dispatch whose `Run` was never sent: the run disappears
    /// from the job and the agent; the op keeps its slots.
    pub(super) fn withdraw_dispatch(&self, state: &mut State, op: OpId, now: Instant) {
        let live = state.ops.get_mut(op).expect("withdrawn op is live");
        let job_id = live.job.clone();
        let run = live.run.take().expect("a dispatching op names its run");
        let agent = live.agent.take().expect("a dispatching op names its agent");
        let job = state.job_mut(&job_id);
        assert!(
            job.record.withdraw_run(run),
            "job {job_id}: run {run} is open and unstarted while dispatching"
        );
        job.ops_by_run.remove(&run);
        self.inner.store.put(job.record.clone());
        if let Some(entry) = state.agents.get_mut(&agent) {
            entry.runs.remove(&(job_id.clone(), run));
        }
        tracing::debug!(job = %job_id, run, %agent, at = %now, "dispatch withdrawn");
    }

    /// Move op `op` to `phase`, logging its new situation.
    pub(super) fn advance_op(
        &self,
        state: &mut State,
        op: OpId,
        phase: OpPhase,
        now: Instant,
        situation: &str,
    ) {
        let before = state.ops.get(op).map(|o| (o.phase, o.situation.clone()));
        if before
            .as_ref()
            .is_some_and(|(p, s)| *p == phase && s == situation)
        {
            return;
        }
        if let Err(error) = state.ops.advance(op, phase, now, situation) {
            panic!("{error}: the op lifecycle is driven only along legal edges");
        }
        let live = state.ops.get(op).expect("advanced op is live");
        let span = &state.resources[&op].span;
        if phase == OpPhase::Dispatching {
            // The run and agent are fixed from here on (a withdrawn dispatch
            // records its next ones the same way).
            span.record("run", live.run.expect("a dispatching op names its run"));
            let agent = live
                .agent
                .as_ref()
                .expect("a dispatching op names its agent");
            span.record("agent", tracing::field::display(agent));
        }
        // Whichever task moves the op, the event carries the op's context.
        tracing::info!(parent: span, phase = %phase, situation, "op advanced");
    }

    /// Wake op `op`'s task so it re-reads its state.
    pub(super) fn wake_op(&self, state: &State, op: OpId) {
        if let Some(resources) = state.resources.get(&op) {
            resources.wake.notify_one();
        }
    }

    /// A runaway op: fail its job with a reason that says so.
    fn abandon_op(&self, op: OpId) {
        let now = self.runtime().now();
        let mut state = self.lock();
        let Some(current) = state.ops.get(op) else {
            return;
        };
        let reason = "its op exceeded the step bound (a supervisor bug)";
        if current.phase.has_run() {
            self.settle_run(&mut state, op, RunEnd::Abandoned, now);
        } else {
            if current.phase == OpPhase::Dispatching {
                self.withdraw_dispatch(&mut state, op, now);
            }
            self.end_without_run(&mut state, op, JobStatus::Failed, reason, now);
        }
    }
}

/// What an op at `stage` waits for, in words.
fn describe_stage(stage: SlotStage, state: &State, job: &JobId) -> String {
    let record = &state.jobs[job].record;
    match stage {
        SlotStage::User => format!("a slot of user {}", record.owner),
        SlotStage::Job => format!("the job slot of {job}"),
        SlotStage::Kind => format!("a {} slot", record.kind),
        SlotStage::Held => "nothing".to_owned(),
    }
}

/// Sleep until `wake` is notified or `timeout` passes (forever if `None`).
pub(super) async fn wait_for_wake(runtime: &dyn Runtime, wake: &Notify, timeout: Option<Duration>) {
    let notified = wake.notified().fuse();
    let sleep = match timeout {
        Some(duration) => runtime.sleep(duration),
        None => Box::pin(futures::future::pending()),
    }
    .fuse();
    futures::pin_mut!(notified, sleep);
    futures::select_biased! {
        () = notified => {}
        () = sleep => {}
    }
}
