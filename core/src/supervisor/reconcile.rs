//! Reconciliation: what an agent declares in its hello against what the
//! supervisor believes it runs.
//!
//! * a declared run the supervisor is driving is **adopted**: it is running
//!   (its job becomes `Running` if the start report was lost);
//! * a declared run nobody wants (its job ended, or it is unknown) is listed
//!   in the welcome's `kill` and stays on the agent's books until reported;
//! * a run the supervisor sent but the agent does not declare becomes
//!   **unaccounted**: agents re-send reports they could not deliver, so a
//!   `Finished` may still come; without one within the reply timeout the run
//!   is settled as gone (see [`settle`](super::settle));
//! * after a restart the agent's books are empty: the recovered runs naming
//!   the agent are entered first, then matched like any other.

use std::collections::BTreeSet;

use super::state::State;
use super::Supervisor;
use crate::agents::{AgentRun, AgentRunPhase};
use crate::ops::{OpId, OpPhase};
use crate::protocol::{AgentId, JobId, JobStatus, RunId, RunningJob};
use crate::runtime::Instant;

impl Supervisor {
    /// Match the declared runs against what the supervisor believes the
    /// agent runs. Returns the runs to kill.
    pub(super) fn reconcile(
        &self,
        state: &mut State,
        agent: &AgentId,
        session: u64,
        running: Vec<RunningJob>,
        now: Instant,
    ) -> Vec<RunningJob> {
        self.register_recovering_runs(state, agent, session);
        let declared: BTreeSet<(JobId, RunId)> =
            running.into_iter().map(|r| (r.job, r.run)).collect();
        let books = state.agents.get(agent).map_or(0, |entry| entry.runs.len());
        if !declared.is_empty() || books > 0 {
            tracing::info!(
                probe = "reconnect-with-jobs-to-reconcile",
                %agent,
                declared = declared.len(),
                books,
                "reconciling"
            );
        }
        let known: Vec<((JobId, RunId), AgentRun)> = state
            .agents
            .get(agent)
            .expect("just connected")
            .runs
            .iter()
            .map(|(key, run)| (key.clone(), *run))
            .collect();
        for (key, agent_run) in known {
            if declared.contains(&key) {
                continue;
            }
            match live_op_for(state, agent_run.op, key.1) {
                Some(op) => self.mark_unaccounted(state, op, agent, session, now),
                None => {
                    let entry = state.agents.get_mut(agent).expect("just connected");
                    entry.runs.remove(&key);
                }
            }
        }
        let mut kill = Vec::new();
        for (job, run) in declared {
            let key = (job.clone(), run);
            let known_op = state
                .agents
                .get(agent)
                .expect("just connected")
                .runs
                .get(&key)
                .and_then(|r| r.op);
            match live_op_for(state, known_op, run) {
                Some(op) => self.adopt(state, op, agent, session, now, &mut kill),
                None => {
                    tracing::info!(%agent, %job, run, "declared run is not wanted: kill");
                    let entry = state.agents.get_mut(agent).expect("just connected");
                    entry.runs.insert(
                        key,
                        AgentRun {
                            op: None,
                            phase: AgentRunPhase::Killing,
                            session,
                        },
                    );
                    kill.push(RunningJob { job, run });
                }
            }
        }
        kill
    }

    /// After a restart the agent table is empty: list the recovered runs of
    /// `agent` so reconciliation sees them.
    fn register_recovering_runs(&self, state: &mut State, agent: &AgentId, session: u64) {
        let recovering: Vec<(JobId, RunId, OpId)> = state
            .ops
            .live()
            .filter(|op| op.phase == OpPhase::Recovering && op.agent.as_ref() == Some(agent))
            .map(|op| {
                (
                    op.job.clone(),
                    op.run.expect("recovering ops name their run"),
                    op.id,
                )
            })
            .collect();
        let entry = state.agents.get_mut(agent).expect("just connected");
        for (job, run, op) in recovering {
            entry.runs.entry((job, run)).or_insert(AgentRun {
                op: Some(op),
                phase: AgentRunPhase::Dispatched,
                session,
            });
        }
    }

    fn mark_unaccounted(
        &self,
        state: &mut State,
        op: OpId,
        agent: &AgentId,
        session: u64,
        now: Instant,
    ) {
        let phase = state.ops.get(op).expect("live op").phase;
        let run = state
            .ops
            .get(op)
            .expect("live op")
            .run
            .expect("run-bearing op");
        match phase {
            OpPhase::Dispatching => {
                // Not sent yet: it will go out on the new session.
                let job = state.ops.get(op).expect("live op").job.clone();
                if let Some(agent_run) = state
                    .agents
                    .get_mut(agent)
                    .and_then(|e| e.runs.get_mut(&(job, run)))
                {
                    agent_run.session = session;
                }
            }
            OpPhase::AwaitingStart | OpPhase::Running | OpPhase::Killing | OpPhase::Recovering => {
                let situation = format!(
                    "awaiting a report of run {run} from agent {agent} after its reconnect"
                );
                self.advance_op(state, op, OpPhase::Unaccounted, now, &situation);
                self.wake_op(state, op);
            }
            _ => {}
        }
    }

    /// The agent declares op `op`'s run: it runs.
    fn adopt(
        &self,
        state: &mut State,
        op: OpId,
        agent: &AgentId,
        session: u64,
        now: Instant,
        kill: &mut Vec<RunningJob>,
    ) {
        let current = state.ops.get(op).expect("adopted op is live").clone();
        let run = current.run.expect("run-bearing op");
        let entry = state.agents.get_mut(agent).expect("just connected");
        entry.runs.insert(
            (current.job.clone(), run),
            AgentRun {
                op: Some(op),
                phase: AgentRunPhase::Started,
                session,
            },
        );
        if current.phase == OpPhase::Dispatching {
            tracing::warn!(%agent, job = %current.job, run, "agent declares a run not yet sent: kill");
            kill.push(RunningJob {
                job: current.job,
                run,
            });
            return;
        }
        if current.phase == OpPhase::Recovering {
            tracing::info!(probe = "recovered-run-adopted", %agent, op, run, "run found after a restart");
        }
        self.mark_started(state, op, now, "declared by its agent on reconnect");
        if let Some(reason) = current.kill {
            let situation = format!(
                "awaiting kill confirmation from agent {agent} ({})",
                reason.as_str()
            );
            self.advance_op(state, op, OpPhase::Killing, now, &situation);
            let key = (current.job.clone(), run);
            if let Some(agent_run) = state
                .agents
                .get_mut(agent)
                .and_then(|e| e.runs.get_mut(&key))
            {
                agent_run.phase = AgentRunPhase::Killing;
            }
            kill.push(RunningJob {
                job: current.job,
                run,
            });
        }
        self.wake_op(state, op);
        tracing::info!(%agent, op, run, "run adopted");
    }

    /// Record that op `op`'s run has started (reported or declared): the
    /// job becomes `Running` and its max-run timer is armed.
    pub(super) fn mark_started(&self, state: &mut State, op: OpId, now: Instant, how: &str) {
        let current = state.ops.get(op).expect("started op is live").clone();
        let run = current.run.expect("run-bearing op");
        let agent = current.agent.clone().expect("run-bearing op");
        let job = state.job_mut(&current.job);
        let open = job.record.open_run_mut().expect("a started run is open");
        assert_eq!(
            open.run, run,
            "job {}: the started run is the open run",
            current.job
        );
        let started_at = *open.started_at.get_or_insert(now);
        if job.record.status == JobStatus::Pending {
            self.set_status(job, JobStatus::Running, now, &format!("started ({how})"));
        } else {
            self.inner.store.put(job.record.clone());
        }
        let armed = job
            .max_run_timer
            .as_ref()
            .is_some_and(|timer| timer.run == run);
        if let Some(agent_run) = state
            .agents
            .get_mut(&agent)
            .and_then(|e| e.runs.get_mut(&(current.job.clone(), run)))
        {
            if agent_run.phase == AgentRunPhase::Dispatched {
                agent_run.phase = AgentRunPhase::Started;
            }
        }
        if matches!(
            current.phase,
            OpPhase::AwaitingStart | OpPhase::Recovering | OpPhase::Unaccounted
        ) {
            let situation = format!("running on agent {agent}");
            self.advance_op(state, op, OpPhase::Running, now, &situation);
        }
        if !armed {
            self.arm_max_run(state, &current.job, run, started_at, now);
        }
    }
}

/// `op` if it is live and drives run `run`.
pub(super) fn live_op_for(state: &State, op: Option<OpId>, run: RunId) -> Option<OpId> {
    op.filter(|op| state.ops.get(*op).is_some_and(|live| live.run == Some(run)))
}
