//! How runs end: every path that settles a job, kills a run or fires the
//! max-run timer. All of it runs under the state lock, so a job's terminal
//! status, the release of its slots and the destruction of its op happen in
//! one critical section: no observer ever sees a terminal job holding a slot.
//!
//! Outcomes, one per way a run can end:
//! * the agent reports `Finished`: exit 0 is `Completed` (even if a kill was
//!   on its way: the completion won the race); otherwise the kill's reason
//!   decides (`Canceled`, `TimedOut`, `Failed` for a start timeout), and
//!   without a kill it is `Failed`;
//! * a kill not confirmed within the reply timeout: the kill's status; the
//!   run stays listed on its agent until the agent reports or proves it gone;
//! * the agent is lost (silent past the heartbeat grace): `Lost`;
//! * the agent came back without the run and sent no late report: `Lost` if
//!   it had started; otherwise the run was never delivered and the job is
//!   queued again (at most `max_attempts` runs), unless it was canceled;
//! * after a restart, the agent did not return within the recovery grace:
//!   `Lost`.

use std::time::Duration;

use super::state::{Job, MaxRunTimer, State};
use super::Supervisor;
use crate::agents::{AgentRunPhase, Link};
use crate::codec;
use crate::duration::format_duration;
use crate::flaws::Flaw;
use crate::ops::{KillReason, Op, OpId, OpPhase};
use crate::protocol::{ExitInfo, JobId, JobStatus, RunId, SupervisorMessage};
use crate::runtime::Instant;

/// How a run ended, as far as the supervisor can tell.
#[derive(Clone, Debug)]
pub(super) enum RunEnd {
    /// The agent reported the process's end.
    Exited(ExitInfo),
    /// A kill went unconfirmed for the reply timeout.
    KillUnconfirmed,
    /// The agent was declared lost.
    AgentLost(String),
    /// The agent came back without the run, and no late report came.
    Gone,
    /// The agent did not return within the recovery grace after a restart.
    RecoveryExpired,
    /// The op ran away (step bound); a supervisor bug, reported as such.
    Abandoned,
}

/// The status a reported exit gives a job, given the kill in flight.
pub(super) fn exit_status(exit: &ExitInfo, kill: Option<KillReason>) -> JobStatus {
    if exit.code == Some(0) && exit.signal.is_none() {
        return JobStatus::Completed;
    }
    match kill {
        Some(reason) => reason.status(),
        None => JobStatus::Failed,
    }
}

fn describe_exit(exit: &ExitInfo) -> String {
    match (exit.code, exit.signal) {
        (Some(0), None) => "exited with code 0".to_owned(),
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("ended by signal {signal}"),
        (None, None) => format!("could not start: {}", exit.output_tail),
    }
}

impl Supervisor {
    /// End the run of op `op` with `end`, settle its job, destroy the op.
    pub(super) fn settle_run(&self, state: &mut State, op: OpId, end: RunEnd, now: Instant) {
        let current = state.ops.get(op).expect("settled ops are live").clone();
        let run = current.run.expect("a settled run-bearing op names its run");
        let agent = current
            .agent
            .clone()
            .expect("a run-bearing op names its agent");
        let job_id = current.job.clone();
        let started = state.jobs[&job_id]
            .record
            .open_run()
            .is_some_and(|open| open.started_at.is_some());
        if matches!(end, RunEnd::Gone) && !started {
            return self.end_undelivered(state, op, now);
        }
        if matches!(end, RunEnd::Exited(_) | RunEnd::Gone) {
            remove_agent_run(state, &agent, &job_id, run);
        }
        if let RunEnd::Exited(exit) = &end {
            let job = state.job_mut(&job_id);
            job.record.exit = Some(exit.clone());
            if job.record.status == JobStatus::Pending
                && (exit.code.is_some() || exit.signal.is_some())
            {
                if let Some(open) = job.record.open_run_mut() {
                    open.started_at = Some(now);
                }
                self.set_status(
                    job,
                    JobStatus::Running,
                    now,
                    "started (reported with its end)",
                );
            }
        }
        if let (RunEnd::Exited(exit), Some(kill)) = (&end, current.kill) {
            note_race_probe(exit, kill, op);
        }
        let (status, reason, outcome) = self.judge(&current, end);
        let job = state.job_mut(&job_id);
        let closed = job.record.close_run(run, now, &outcome);
        assert!(closed, "job {job_id}: settled run {run} is its open run");
        self.set_status(job, status, now, &reason);
        self.finish_op(state, op, now, &outcome);
    }

    /// The status, reason and run outcome `end` gives op `op`'s job. A kill
    /// in flight decides the status of any end the process did not report.
    fn judge(&self, op: &Op, end: RunEnd) -> (JobStatus, String, String) {
        let agent = op.agent.as_ref().expect("a run-bearing op names its agent");
        let run = op.run.expect("a run-bearing op names its run");
        let (unreported, outcome) = match end {
            RunEnd::Exited(exit) => {
                let status = exit_status(&exit, op.kill);
                let reason = match (status, op.kill) {
                    (JobStatus::Completed, _) | (_, None) => describe_exit(&exit),
                    (_, Some(kill)) => {
                        format!("killed ({}): {}", kill.as_str(), describe_exit(&exit))
                    }
                };
                return (status, reason, status.as_str().to_owned());
            }
            RunEnd::Abandoned => {
                let reason = "its op exceeded the step bound (a supervisor bug)";
                return (JobStatus::Failed, reason.to_owned(), "abandoned".to_owned());
            }
            RunEnd::KillUnconfirmed => {
                tracing::info!(
                    probe = "kill-unconfirmed",
                    op = op.id,
                    "kill not confirmed in time"
                );
                let timeout = format_duration(self.inner.config.agent_reply_timeout);
                let reason = format!("kill not confirmed by agent {agent} within {timeout}");
                (reason, "kill unconfirmed")
            }
            RunEnd::AgentLost(reason) => (reason, "agent lost"),
            RunEnd::Gone => (format!("agent {agent} came back without run {run}"), "gone"),
            RunEnd::RecoveryExpired => {
                let grace = format_duration(self.inner.config.recovery_grace);
                let reason =
                    format!("agent {agent} did not return within the recovery grace of {grace}");
                (reason, "recovery expired")
            }
        };
        match op.kill {
            Some(kill) => (
                kill.status(),
                format!("{}: {unreported}", kill.as_str()),
                outcome.to_owned(),
            ),
            None => (JobStatus::Lost, unreported, outcome.to_owned()),
        }
    }

    /// The agent never got the run: cancel, fail or queue the job again.
    fn end_undelivered(&self, state: &mut State, op: OpId, now: Instant) {
        let current = state.ops.get(op).expect("settled ops are live").clone();
        let run = current.run.expect("an undelivered op names its run");
        let agent = current
            .agent
            .clone()
            .expect("an undelivered op names its agent");
        let job_id = current.job.clone();
        remove_agent_run(state, &agent, &job_id, run);
        let max_attempts = self.inner.config.max_attempts;
        let job = state.job_mut(&job_id);
        job.record.close_run(run, now, "undelivered");
        let canceled =
            current.kill == Some(KillReason::Cancel) || job.record.cancel_requested_at.is_some();
        if canceled {
            tracing::info!(
                probe = "cancel-between-runs",
                op,
                "a canceled run never started"
            );
        }
        if canceled && self.flaws().is_on(Flaw::CancelHitsLaterRun) {
            job.cancel_on_next_dispatch = true;
        } else if canceled {
            let reason = format!("canceled; run {run} never started");
            self.set_status(job, JobStatus::Canceled, now, &reason);
            return self.finish_op(state, op, now, "undelivered, canceled");
        } else if let Some(kill) = current.kill {
            let reason = format!("agent {agent} did not start run {run} ({})", kill.as_str());
            self.set_status(job, kill.status(), now, &reason);
            return self.finish_op(state, op, now, "undelivered");
        } else if job.record.attempts() >= max_attempts {
            let reason = format!("not started by an agent in {max_attempts} runs");
            self.set_status(job, JobStatus::Failed, now, &reason);
            return self.finish_op(state, op, now, "undelivered, out of attempts");
        }
        self.inner.store.put(job.record.clone());
        tracing::info!(
            probe = "undelivered-run-queued-again",
            op,
            run,
            "run never started"
        );
        self.finish_op(state, op, now, "undelivered, queued again");
        self.requeue(state, &job_id, now);
    }

    /// Queue `job` again for a new run (it keeps its submission order).
    pub(super) fn requeue(&self, state: &mut State, job_id: &JobId, now: Instant) {
        let job = state.job_mut(job_id);
        if job.record.status != JobStatus::Pending {
            assert!(
                self.flaws().any_on(),
                "job {job_id}: only pending jobs are queued again"
            );
            self.set_status(job, JobStatus::Pending, now, "queued again");
        }
        tracing::info!(job = %job_id, "job queued again");
        self.spawn_op(state, job_id, None);
    }

    /// Settle the job of an op that has no run out there.
    pub(super) fn end_without_run(
        &self,
        state: &mut State,
        op: OpId,
        status: JobStatus,
        reason: &str,
        now: Instant,
    ) {
        let job_id = state.ops.get(op).expect("ended op is live").job.clone();
        let job = state.job_mut(&job_id);
        self.set_status(job, status, now, reason);
        self.finish_op(state, op, now, reason);
    }

    /// Destroy op `op`: its tickets and permits go back to their pools in
    /// this same critical section, and its task is woken to end.
    pub(super) fn finish_op(&self, state: &mut State, op: OpId, now: Instant, outcome: &str) {
        let destroyed = state.ops.destroy(op, now, outcome);
        if let Some(mut resources) = state.resources.remove(&op) {
            tracing::info!(parent: &resources.span, outcome, "op destroyed");
            if let Some(ticket) = resources.ticket.as_mut() {
                ticket.touch(now);
            }
            for permit in &mut resources.permits {
                permit.touch(now);
            }
            resources.wake.notify_one();
        }
        state.agent_waiters.retain(|_, waiting| *waiting != op);
        let job_id = destroyed.job;
        let disarm = !self.flaws().is_on(Flaw::TimeoutOverwritesTerminal);
        let job = state.job_mut(&job_id);
        if job.op == Some(op) {
            job.op = None;
        }
        if job.record.status.is_terminal() {
            if disarm {
                disarm_max_run(job);
            }
            state.prune_job_pool(&job_id);
        }
        self.assign_agents(state, now);
    }

    /// Change a job's status and buffer the record for the store. An illegal
    /// change is a bug, unless a flaw is on: then it is recorded for the
    /// oracle to report.
    pub(super) fn set_status(&self, job: &mut Job, to: JobStatus, now: Instant, reason: &str) {
        if let Err(error) = job.record.transition(to, now, reason) {
            assert!(
                self.flaws().any_on(),
                "{error}: the supervisor only asks for legal changes"
            );
            tracing::error!(%error, "illegal status change recorded");
            job.record.force_status(to, now, reason);
        }
        tracing::info!(job = %job.record.id, status = %to, reason, "job status changed");
        self.inner.store.put(job.record.clone());
    }

    /// Ask the agent to kill op `op`'s run, for `reason`. The first reason
    /// wins (a cancel during a timeout kill stays a timeout).
    pub(super) fn begin_kill(&self, state: &mut State, op: OpId, reason: KillReason, now: Instant) {
        let live = state.ops.get_mut(op).expect("killed op is live");
        let kill = *live.kill.get_or_insert(reason);
        let (phase, job_id, run, agent) =
            (live.phase, live.job.clone(), live.run, live.agent.clone());
        match phase {
            OpPhase::AwaitingStart | OpPhase::Running | OpPhase::Recovering => {
                let run = run.expect("a run-bearing op names its run");
                let agent = agent.expect("a run-bearing op names its agent");
                let situation = format!(
                    "awaiting kill confirmation from agent {agent} ({})",
                    kill.as_str()
                );
                self.advance_op(state, op, OpPhase::Killing, now, &situation);
                self.send_kill(state, &agent, &job_id, run);
            }
            OpPhase::Killing | OpPhase::Unaccounted | OpPhase::Dispatching => {}
            other => panic!("op {op}: no run to kill in phase {other}"),
        }
        self.wake_op(state, op);
    }

    /// Send `Kill` for a run to its agent if connected (otherwise it is
    /// owed, and sent in the welcome when the agent declares the run).
    pub(super) fn send_kill(
        &self,
        state: &mut State,
        agent: &crate::protocol::AgentId,
        job: &JobId,
        run: RunId,
    ) {
        let Some(entry) = state.agents.get_mut(agent) else {
            return;
        };
        if let Some(agent_run) = entry.runs.get_mut(&(job.clone(), run)) {
            agent_run.phase = AgentRunPhase::Killing;
        }
        if entry.link != Link::Connected {
            return;
        }
        let message = SupervisorMessage::Kill {
            job: job.clone(),
            run,
        };
        if let Some(sender) = entry.sender() {
            if let Err(error) = sender.send(codec::encode(&message)) {
                tracing::info!(%agent, %job, run, %error, "kill not sent; owed until the agent returns");
            }
        }
    }

    /// The owner's cancel, under the lock: recorded, then applied at once
    /// to a job without a run, or as a kill to the run it has.
    pub(super) fn cancel_job(&self, state: &mut State, job_id: &JobId, now: Instant) {
        let job = state.job_mut(job_id);
        if job.record.status.is_terminal() {
            return;
        }
        if job.record.cancel_requested_at.is_none() {
            job.record.cancel_requested_at = Some(now);
            self.inner.store.put(job.record.clone());
        }
        let Some(op) = job.op else {
            self.set_status(job, JobStatus::Canceled, now, "canceled");
            return;
        };
        let phase = state.ops.get(op).expect("a job's op is live").phase;
        note_cancel_probe(state, op, phase);
        match phase {
            OpPhase::Created | OpPhase::WaitingForSlots | OpPhase::WaitingForAgent => {
                self.end_without_run(state, op, JobStatus::Canceled, "canceled while queued", now);
            }
            OpPhase::Dispatching => {
                let live = state.ops.get_mut(op).expect("live op");
                live.kill.get_or_insert(KillReason::Cancel);
            }
            _ => self.begin_kill(state, op, KillReason::Cancel, now),
        }
    }

    /// Arm the max-run timer of `job`'s run `run`, started at `started_at`.
    pub(super) fn arm_max_run(
        &self,
        state: &mut State,
        job_id: &JobId,
        run: RunId,
        started_at: Instant,
        now: Instant,
    ) {
        let job = state.job_mut(job_id);
        disarm_max_run(job);
        let deadline = started_at + Duration::from_millis(job.record.max_run_ms);
        let delay = deadline - now;
        let supervisor = self.clone();
        let timer_job = job_id.clone();
        let sleep = self.runtime().sleep(delay);
        let task = self.spawn(
            &format!("max-run {job_id}#{run}"),
            Box::pin(async move {
                sleep.await;
                supervisor.expire_max_run(&timer_job, run);
            }),
        );
        job.max_run_timer = Some(MaxRunTimer { run, task });
    }

    /// The max-run timer of `job`'s run `run` fired.
    fn expire_max_run(&self, job_id: &JobId, run: RunId) {
        let now = self.runtime().now();
        let mut state = self.lock();
        let Some(job) = state.jobs.get_mut(job_id) else {
            return;
        };
        if job.max_run_timer.as_ref().map(|timer| timer.run) != Some(run) {
            return;
        }
        job.max_run_timer = None;
        let op = job.op;
        match op.filter(|op| state.ops.get(*op).is_some_and(|live| live.run == Some(run))) {
            Some(op) => {
                tracing::info!(job = %job_id, run, "max run time reached");
                self.begin_kill(&mut state, op, KillReason::MaxRunTime, now);
            }
            None => {
                // Armed without a live run: only a skipped disarm gets here.
                assert!(
                    self.flaws().any_on(),
                    "max-run timer of {job_id}#{run} outlived its run"
                );
                let job = state.job_mut(job_id);
                job.record
                    .force_status(JobStatus::TimedOut, now, "max run time exceeded");
                self.inner.store.put(job.record.clone());
                tracing::error!(job = %job_id, run, "stale max-run timer overwrote the job's status");
            }
        }
    }
}

/// A process that ended by itself while a kill was on its way: the race
/// the sometimes-probes count.
fn note_race_probe(exit: &ExitInfo, kill: KillReason, op: OpId) {
    if exit.signal.is_some() {
        return;
    }
    let probe = match kill {
        KillReason::MaxRunTime => "completion-races-timeout",
        KillReason::Cancel => "completion-races-cancel",
        KillReason::StartTimeout => "completion-races-start-timeout",
    };
    tracing::info!(
        probe,
        op,
        "the run ended by itself while a kill was in flight"
    );
}

/// Name the rare situation a cancel meets, for the simulator's
/// sometimes-probes.
fn note_cancel_probe(state: &State, op: OpId, phase: OpPhase) {
    let granted = state
        .resources
        .get(&op)
        .and_then(|resources| resources.ticket.as_ref())
        .is_some_and(|ticket| ticket.position().is_none());
    let probe = match phase {
        OpPhase::WaitingForSlots if granted => "cancel-during-slot-hand-off",
        OpPhase::WaitingForSlots => "cancel-during-slot-wait",
        OpPhase::Running => "cancel-of-running-job",
        _ => return,
    };
    tracing::info!(probe, op, "cancel meets a rare situation");
}

/// Disarm the job's max-run timer, if armed.
pub(super) fn disarm_max_run(job: &mut Job) {
    if let Some(timer) = job.max_run_timer.take() {
        timer.task.abort();
    }
}

fn remove_agent_run(state: &mut State, agent: &crate::protocol::AgentId, job: &JobId, run: RunId) {
    if let Some(entry) = state.agents.get_mut(agent) {
        entry.runs.remove(&(job.clone(), run));
    }
}
