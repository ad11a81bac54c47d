//! Agent liveness and restart recovery.
//!
//! The **agent monitor** wakes every heartbeat interval and declares lost
//! every agent not heard from (on any message) for the heartbeat grace,
//! connected or not. A lost agent's session is closed and its runs are
//! settled (`Lost`, or the status of a kill in flight); a dispatch whose
//! `Run` was not sent yet simply goes back to waiting for an agent.
//!
//! **Recovery** runs once, in [`Supervisor::start`]: terminal jobs are
//! loaded as they are; jobs with a run out there get an op in `Recovering`
//! that takes its slots ahead of everyone and waits for the agent to return
//! and declare the run (see [`agent_link`](super::agent_link)); pending jobs
//! re-enter their queues in submission order. When the recovery grace ends,
//! runs whose agent did not return are settled `Lost`.

use super::settle::RunEnd;
use super::state::State;
use super::{StartError, Supervisor};
use crate::agents::Link;
use crate::flaws::Flaw;
use crate::job::JobRecord;
use crate::ops::{KillReason, OpId, OpPhase};
use crate::protocol::{AgentId, JobId, JobStatus};
use crate::runtime::Instant;

impl Supervisor {
    /// Spawn the agent monitor.
    pub(super) fn start_monitor(&self) {
        let supervisor = self.clone();
        let task = self.spawn(
            "agent-monitor",
            Box::pin(async move {
                let interval = supervisor.inner.config.heartbeat_interval;
                // Ends when the supervisor shuts down (the task is also aborted).
                loop {
                    supervisor.runtime().sleep(interval).await;
                    if !supervisor.check_agents() {
                        return;
                    }
                }
            }),
        );
        self.lock().background.push(task);
    }

    /// Declare lost every agent silent past the grace. Returns false once
    /// the supervisor shuts down.
    fn check_agents(&self) -> bool {
        let now = self.runtime().now();
        let mut state = self.lock();
        if state.shutting_down {
            return false;
        }
        let config = &self.inner.config;
        let grace = if self.flaws().is_on(Flaw::NoHeartbeatGrace) {
            config.heartbeat_interval
        } else {
            config.heartbeat_grace()
        };
        let links: &[Link] = if self.flaws().is_on(Flaw::LostAgentJobStaysRunning) {
            &[Link::Connected]
        } else {
            &[Link::Connected, Link::Disconnected]
        };
        for agent in state.agents.silent(now, grace, links) {
            let reason = format!(
                "agent {agent} lost: not heard from for more than {}ms",
                grace.as_millis()
            );
            self.declare_lost(&mut state, &agent, now, &reason);
        }
        true
    }

    /// Close `agent`'s session and settle its runs.
    fn declare_lost(&self, state: &mut State, agent: &AgentId, now: Instant, reason: &str) {
        tracing::warn!(probe = "agent-declared-lost", %agent, reason, "agent lost");
        let (sender, runs) = state.agents.mark_lost(agent, now);
        if let Some(sender) = sender {
            sender.close();
        }
        super::agent_link::end_sessions(state, agent);
        for ((job, run), agent_run) in runs {
            let Some(op) = agent_run
                .op
                .filter(|op| state.ops.get(*op).is_some_and(|live| live.run == Some(run)))
            else {
                continue;
            };
            let phase = state.ops.get(op).expect("live op").phase;
            if phase == OpPhase::Dispatching {
                self.withdraw_dispatch(state, op, now);
                if let Some(kill) = state.ops.get(op).and_then(|live| live.kill) {
                    // Canceled while its dispatch was being recorded: the
                    // run was never sent, so nothing runs; do not dispatch
                    // it again elsewhere.
                    let reason = format!("{} before dispatch", kill.as_str());
                    self.end_without_run(state, op, kill.status(), &reason, now);
                    continue;
                }
                let situation = format!("waiting for an agent (agent {agent} was lost)");
                self.advance_op(state, op, OpPhase::WaitingForAgent, now, &situation);
                let seq = state.jobs[&job].record.seq;
                state.agent_waiters.insert(seq, op);
            } else if self.flaws().is_on(Flaw::NoHeartbeatGrace) {
                self.presume_dead(state, op, &job, now);
            } else {
                self.settle_run(state, op, RunEnd::AgentLost(reason.to_owned()), now);
            }
        }
        self.assign_agents(state, now);
    }

    /// [`Flaw::NoHeartbeatGrace`]: treat the run as dead and dispatch the
    /// job again, though its agent may well still run it.
    fn presume_dead(&self, state: &mut State, op: OpId, job_id: &JobId, now: Instant) {
        let run = state
            .ops
            .get(op)
            .expect("live op")
            .run
            .expect("run-bearing op");
        let job = state.job_mut(job_id);
        job.record.close_run(run, now, "presumed dead");
        self.inner.store.put(job.record.clone());
        self.finish_op(state, op, now, "presumed dead");
        self.requeue(state, job_id, now);
    }

    /// Take back the jobs `records` holds (see the module docs).
    pub(super) fn recover(&self, records: Vec<JobRecord>) -> Result<(), StartError> {
        let now = self.runtime().now();
        let mut state = self.lock();
        let mut order = Vec::with_capacity(records.len());
        for record in records {
            if record.id.0 != format!("j-{}", record.seq) {
                return Err(StartError::Record(format!(
                    "job {} has sequence number {}",
                    record.id, record.seq
                )));
            }
            state.next_seq = state.next_seq.max(record.seq + 1);
            if let Some(key) = &record.idempotency_key {
                state
                    .idempotency
                    .insert((record.owner.clone(), key.clone()), record.id.clone());
            }
            order.push(record.id.clone());
            state.insert_job(record);
        }
        let mut waiting_for_agents = false;
        for job_id in &order {
            waiting_for_agents |= self.recover_running(&mut state, job_id, now);
        }
        for job_id in &order {
            let record = &state.jobs[job_id].record;
            if record.status == JobStatus::Pending
                && record.open_run().is_none()
                && state.jobs[job_id].op.is_none()
            {
                self.spawn_op(&mut state, job_id, None);
            }
        }
        if waiting_for_agents {
            let until = now + self.inner.config.recovery_grace;
            state.recovering_until = Some(until);
            drop(state);
            self.start_recovery_grace();
        }
        Ok(())
    }

    /// Give a loaded job with a run out there an op that waits for its
    /// agent. Returns whether it did.
    fn recover_running(&self, state: &mut State, job_id: &JobId, now: Instant) -> bool {
        let record = &state.jobs[job_id].record;
        if record.status.is_terminal() {
            return false;
        }
        if !self.inner.config.users.contains_key(&record.owner) {
            let job = state.job_mut(job_id);
            self.set_status(
                job,
                JobStatus::Failed,
                now,
                "its owner is no longer configured",
            );
            return false;
        }
        let Some(open) = record.open_run().cloned() else {
            if record.status == JobStatus::Running {
                let job = state.job_mut(job_id);
                self.set_status(
                    job,
                    JobStatus::Lost,
                    now,
                    "no run on record after a restart",
                );
            }
            return false;
        };
        if self.flaws().is_on(Flaw::RestartRequeuesRunning) {
            let job = state.job_mut(job_id);
            job.record
                .close_run(open.run, now, "queued again at restart");
            self.inner.store.put(job.record.clone());
            self.requeue(state, job_id, now);
            return false;
        }
        let op = self.spawn_op_in(state, job_id, OpPhase::Recovering, None);
        let canceled = state.jobs[job_id].record.cancel_requested_at.is_some();
        let live = state.ops.get_mut(op).expect("just created");
        live.run = Some(open.run);
        live.agent = Some(open.agent.clone());
        if canceled {
            live.kill = Some(KillReason::Cancel);
        }
        live.situation = format!("awaiting agent {} to return after a restart", open.agent);
        let span = &state.resources[&op].span;
        span.record("run", open.run);
        span.record("agent", tracing::field::display(&open.agent));
        state.job_mut(job_id).ops_by_run.insert(open.run, op);
        self.acquire_slots(state, op, now);
        true
    }

    fn start_recovery_grace(&self) {
        let supervisor = self.clone();
        let grace = self.inner.config.recovery_grace;
        let task = self.spawn(
            "recovery-grace",
            Box::pin(async move {
                supervisor.runtime().sleep(grace).await;
                supervisor.end_recovery();
            }),
        );
        self.lock().background.push(task);
    }

    /// The recovery grace is over: settle the runs whose agent did not
    /// return.
    fn end_recovery(&self) {
        let now = self.runtime().now();
        let mut state = self.lock();
        state.recovering_until = None;
        let stranded: Vec<OpId> = state
            .ops
            .live()
            .filter(|op| op.phase == OpPhase::Recovering)
            .map(|op| op.id)
            .collect();
        for op in stranded {
            self.settle_run(&mut state, op, RunEnd::RecoveryExpired, now);
        }
        tracing::info!("recovery grace over");
    }
}
