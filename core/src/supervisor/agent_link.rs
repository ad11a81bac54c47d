//! One agent connection, from hello to end, and reconciliation.
//!
//! A connection must open with a valid hello within the hello timeout: a
//! known agent id, its token, at least one kind, a sane capacity. The hello
//! opens a new session (superseding any previous one, whose connection is
//! closed and whose later traffic is refused) and is reconciled against what
//! the supervisor believes the agent runs:
//! * a declared run the supervisor is driving is **adopted** (it is running);
//! * a declared run nobody wants (its job ended, or it is unknown) is listed
//!   in the welcome's `kill`;
//! * a run the supervisor sent but the agent does not declare becomes
//!   *unaccounted*: a `Finished` may still be on its way (agents re-send
//!   reports they could not deliver); without one within the reply timeout
//!   the run is settled as gone (see [`settle`](super::settle)).
//!
//! A malformed frame, a second hello, or any traffic from a superseded
//! session closes the connection with a logged reason; nothing panics.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::Notify;
use tracing::Instrument;

use super::settle::{exit_status, RunEnd};
use super::state::State;
use super::{constant_time_eq, Supervisor};
use crate::agents::{AgentRun, AgentRunPhase};
use crate::codec;
use crate::flaws::Flaw;
use crate::ops::{OpId, OpPhase};
use crate::protocol::{
    AgentId, AgentMessage, ExitInfo, JobId, JobKind, JobStatus, RunId, RunningJob,
    SupervisorMessage,
};
use crate::runtime::{Connection, FrameReceiver, FrameSender, Instant};

/// Most runs one hello may declare.
const DECLARED_RUNS_MAX: usize = 10_000;
/// Largest capacity an agent may declare.
const AGENT_SLOTS_MAX: u32 = 10_000;

/// A hello, unpacked.
struct Hello {
    agent: AgentId,
    token: String,
    kinds: Vec<JobKind>,
    slots: u32,
    running: Vec<RunningJob>,
}

/// Ends the session when the serving future ends or is dropped.
struct SessionGuard {
    supervisor: Supervisor,
    agent: AgentId,
    session: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.supervisor.end_session(&self.agent, self.session);
    }
}

impl Supervisor {
    /// Serve one agent connection from its hello to its end. Returns when
    /// the connection ends, the session is superseded or lost, or the
    /// supervisor shuts down. Dropping the future ends the session cleanly.
    pub async fn serve_agent(&self, connection: Connection) {
        let Connection {
            sender,
            mut receiver,
            peer,
        } = connection;
        let hello = match self.receive_hello(&mut receiver).await {
            Ok(hello) => hello,
            Err(reason) => return reject(&sender, &peer, &reason),
        };
        let agent = hello.agent.clone();
        let (session, ended) = match self.accept_agent(hello, &sender) {
            Ok(accepted) => accepted,
            Err(reason) => return reject(&sender, &peer, &reason),
        };
        let _guard = SessionGuard {
            supervisor: self.clone(),
            agent: agent.clone(),
            session,
        };
        let span = tracing::info_span!("agent-conn", agent = %agent, session, peer = %peer);
        self.serve_session(&agent, session, &sender, &mut receiver, &ended)
            .instrument(span)
            .await;
        sender.close();
    }

    async fn receive_hello(&self, receiver: &mut FrameReceiver) -> Result<Hello, String> {
        let timeout = self.inner.config.agent_hello_timeout;
        let sleep = self.runtime().sleep(timeout).fuse();
        let frame = receiver.recv().fuse();
        futures::pin_mut!(sleep, frame);
        let frame = futures::select_biased! {
            frame = frame => frame.map_err(|error| format!("connection ended before hello: {error}"))?,
            () = sleep => return Err(format!("no hello within {}ms", timeout.as_millis())),
        };
        match codec::decode::<AgentMessage>(&frame) {
            Ok(AgentMessage::Hello {
                agent,
                token,
                kinds,
                slots,
                running,
            }) => Ok(Hello {
                agent,
                token,
                kinds,
                slots,
                running,
            }),
            Ok(_) => Err("the first message must be a hello".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Check a hello, open its session, reconcile, and send the welcome.
    fn accept_agent(
        &self,
        hello: Hello,
        sender: &FrameSender,
    ) -> Result<(u64, Arc<Notify>), String> {
        let now = self.runtime().now();
        let config = &self.inner.config;
        let expected = config
            .agents
            .get(&hello.agent.0)
            .ok_or_else(|| format!("unknown agent {}", hello.agent))?;
        if !constant_time_eq(expected.token.as_bytes(), hello.token.as_bytes()) {
            return Err(format!("wrong token for agent {}", hello.agent));
        }
        if hello.kinds.is_empty() {
            return Err("an agent must accept at least one kind".to_owned());
        }
        if hello.slots == 0 || hello.slots > AGENT_SLOTS_MAX {
            return Err(format!("slots must be between 1 and {AGENT_SLOTS_MAX}"));
        }
        if hello.running.len() > DECLARED_RUNS_MAX {
            return Err(format!(
                "at most {DECLARED_RUNS_MAX} running jobs may be declared"
            ));
        }
        let mut kinds = hello.kinds;
        kinds.sort();
        kinds.dedup();
        let mut state = self.lock();
        if state.shutting_down {
            return Err("the supervisor is shutting down".to_owned());
        }
        let accepted = state
            .agents
            .connect(&hello.agent, kinds, hello.slots, sender.clone(), now);
        if let Some(superseded) = accepted.superseded {
            superseded.close();
        }
        let agent_name = hello.agent.0.clone();
        let stale: Vec<(String, u64)> = state
            .sessions
            .keys()
            .filter(|(name, _)| *name == agent_name)
            .cloned()
            .collect();
        for key in stale {
            if let Some(ended) = state.sessions.remove(&key) {
                ended.notify_one();
            }
        }
        let ended = Arc::new(Notify::new());
        state
            .sessions
            .insert((agent_name, accepted.session), ended.clone());
        let kill = self.reconcile(
            &mut state,
            &hello.agent,
            accepted.session,
            hello.running,
            now,
        );
        let welcome = SupervisorMessage::Welcome {
            session: accepted.session,
            heartbeat_ms: u64::try_from(config.heartbeat_interval.as_millis()).unwrap_or(u64::MAX),
            kill,
        };
        if let Err(error) = sender.send(codec::encode(&welcome)) {
            tracing::info!(agent = %hello.agent, %error, "welcome not sent");
        }
        tracing::info!(agent = %hello.agent, session = accepted.session, "agent connected");
        self.assign_agents(&mut state, now);
        Ok((accepted.session, ended))
    }

    /// Match the declared runs against what the supervisor believes the
    /// agent runs. Returns the runs to kill.
    fn reconcile(
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
    fn mark_started(&self, state: &mut State, op: OpId, now: Instant, how: &str) {
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

    async fn serve_session(
        &self,
        agent: &AgentId,
        session: u64,
        sender: &FrameSender,
        receiver: &mut FrameReceiver,
        ended: &Notify,
    ) {
        loop {
            let frame = {
                let notified = ended.notified().fuse();
                let frame = receiver.recv().fuse();
                futures::pin_mut!(notified, frame);
                futures::select_biased! {
                    () = notified => {
                        tracing::info!("session ended by the supervisor");
                        return;
                    }
                    frame = frame => frame,
                }
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => {
                    tracing::info!(%error, "agent connection ended");
                    return;
                }
            };
            let message = match codec::decode::<AgentMessage>(&frame) {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(reason = %error, "closing agent connection: bad frame");
                    return;
                }
            };
            if let Err(reason) = self.handle_agent_message(agent, session, sender, message) {
                tracing::warn!(%reason, "closing agent connection");
                return;
            }
        }
    }

    /// Apply one message of a session. `Err` closes the connection.
    fn handle_agent_message(
        &self,
        agent: &AgentId,
        session: u64,
        sender: &FrameSender,
        message: AgentMessage,
    ) -> Result<(), String> {
        let now = self.runtime().now();
        let mut state = self.lock();
        if !self.speaks_for_agent(&state, agent, session) {
            return Err(format!("session {session} of agent {agent} was superseded"));
        }
        state.agents.heard(agent, now);
        match message {
            AgentMessage::Hello { .. } => return Err("a second hello on one connection".to_owned()),
            AgentMessage::Heartbeat { seq } => {
                let ack = SupervisorMessage::HeartbeatAck { seq };
                if let Err(error) = sender.send(codec::encode(&ack)) {
                    return Err(format!("cannot acknowledge a heartbeat: {error}"));
                }
            }
            AgentMessage::Started { job, run } => {
                self.on_started(&mut state, agent, session, job, run, now)
            }
            AgentMessage::Finished {
                job,
                run,
                exit,
                killed,
            } => {
                tracing::info!(%job, run, killed, "agent reports a run finished");
                self.on_finished(&mut state, agent, job, run, exit, now);
            }
        }
        Ok(())
    }

    /// Whether `session` may speak for `agent`: only its current session.
    fn speaks_for_agent(&self, state: &State, agent: &AgentId, session: u64) -> bool {
        state.agents.is_current(agent, session) || self.flaws().is_on(Flaw::StaleConnectionAccepted)
    }

    fn on_started(
        &self,
        state: &mut State,
        agent: &AgentId,
        session: u64,
        job: JobId,
        run: RunId,
        now: Instant,
    ) {
        let key = (job.clone(), run);
        let known = state
            .agents
            .get(agent)
            .and_then(|entry| entry.runs.get(&key))
            .copied();
        let op = live_op_for(state, known.and_then(|r| r.op), run);
        match op {
            Some(op) => {
                let phase = state.ops.get(op).expect("live op").phase;
                if phase != OpPhase::Dispatching {
                    self.mark_started(state, op, now, &format!("reported by agent {agent}"));
                }
            }
            None => {
                tracing::info!(%agent, %job, run, "start of a run nobody wants: kill");
                if state.jobs.contains_key(&job) {
                    let entry = state
                        .agents
                        .get_mut(agent)
                        .expect("a speaking agent is registered");
                    entry.runs.insert(
                        key,
                        AgentRun {
                            op: None,
                            phase: AgentRunPhase::Killing,
                            session,
                        },
                    );
                }
                let message = SupervisorMessage::Kill { job, run };
                if let Some(sender) = state.agents.get(agent).and_then(|entry| entry.sender()) {
                    if let Err(error) = sender.send(codec::encode(&message)) {
                        tracing::info!(%error, "kill of an unwanted run not sent");
                    }
                }
            }
        }
    }

    fn on_finished(
        &self,
        state: &mut State,
        agent: &AgentId,
        job: JobId,
        run: RunId,
        exit: ExitInfo,
        now: Instant,
    ) {
        let key = (job.clone(), run);
        let known = state
            .agents
            .get(agent)
            .and_then(|entry| entry.runs.get(&key))
            .copied();
        let Some(known) = known else {
            tracing::info!(%job, run, "report of a run already settled (duplicate)");
            if self.flaws().is_on(Flaw::DoubleFreeOnDuplicateFinish) {
                self.release_settled_run_again(state, &job, run, now);
            }
            return;
        };
        if let Some(op) = live_op_for(state, known.op, run) {
            if state.ops.get(op).expect("live op").phase == OpPhase::Dispatching {
                tracing::warn!(%job, run, "report of a run not yet sent: ignored");
                return;
            }
            return self.settle_run(state, op, RunEnd::Exited(exit), now);
        }
        let entry = state
            .agents
            .get_mut(agent)
            .expect("a speaking agent is registered");
        entry.runs.remove(&key);
        match known.op {
            Some(op) if self.flaws().is_on(Flaw::UseAfterDestroy) => {
                self.apply_to_destroyed_op(state, op, &job, exit, now);
            }
            _ => tracing::info!(%job, run, "late report of a settled run: the run is over"),
        }
    }

    /// [`Flaw::UseAfterDestroy`]: apply a late report to the op it named.
    fn apply_to_destroyed_op(
        &self,
        state: &mut State,
        op: OpId,
        job_id: &JobId,
        exit: ExitInfo,
        now: Instant,
    ) {
        state
            .ops
            .record_use_after_destroy(op, now, "late finished applied");
        let kill = state.ops.destroyed(op).and_then(|destroyed| destroyed.kill);
        let status = exit_status(&exit, kill);
        let job = state.job_mut(job_id);
        job.record.exit = Some(exit);
        job.record
            .force_status(status, now, "late report applied to a destroyed op");
        self.inner.store.put(job.record.clone());
        tracing::error!(op, job = %job_id, "late report applied to a destroyed op");
    }

    /// [`Flaw::DoubleFreeOnDuplicateFinish`]: return the run's slots again.
    fn release_settled_run_again(&self, state: &mut State, job: &JobId, run: RunId, now: Instant) {
        let Some(op) = state
            .jobs
            .get(job)
            .and_then(|job| job.ops_by_run.get(&run))
            .copied()
        else {
            return;
        };
        let Some(pools) = state
            .ops
            .destroyed(op)
            .map(|destroyed| destroyed.held_pools.clone())
        else {
            return;
        };
        for name in pools {
            if let Some(pool) = state.pool_named(&name) {
                pool.lock().release_unchecked(now);
                tracing::error!(pool = %name, %job, run, "slot returned a second time");
            }
        }
    }

    /// The session's serving loop ended (or its future was dropped).
    fn end_session(&self, agent: &AgentId, session: u64) {
        let now = self.runtime().now();
        let mut state = self.lock();
        state.sessions.remove(&(agent.0.clone(), session));
        if self.speaks_for_agent(&state, agent, session) {
            state.agents.disconnect_any_session(agent, now);
            tracing::info!(%agent, session, "agent disconnected");
        }
    }
}

/// `op` if it is live and drives run `run`.
fn live_op_for(state: &State, op: Option<OpId>, run: RunId) -> Option<OpId> {
    op.filter(|op| state.ops.get(*op).is_some_and(|live| live.run == Some(run)))
}

fn reject(sender: &FrameSender, peer: &str, reason: &str) {
    tracing::warn!(%peer, reason, "agent refused");
    let message = SupervisorMessage::Rejected {
        reason: reason.to_owned(),
    };
    if let Err(error) = sender.send(codec::encode(&message)) {
        tracing::debug!(%peer, %error, "rejection not sent");
    }
    sender.close();
}
