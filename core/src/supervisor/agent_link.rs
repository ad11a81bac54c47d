//! One agent connection, from hello to end, and reconciliation.
//!
//! A connection must open with a valid hello within the hello timeout: a
//! known agent id, its token, at least one kind, a sane capacity. The hello
//! opens a new session (superseding any previous one, whose connection is
//! closed and whose later traffic is refused) and is reconciled against what
//! the supervisor believes the agent runs (see [`reconcile`](super::reconcile)).
//!
//! A malformed frame, a second hello, or any traffic from a superseded
//! session closes the connection with a logged reason; nothing panics.

use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::Notify;
use tracing::Instrument;

use super::reconcile::live_op_for;
use super::settle::{exit_status, RunEnd};
use super::state::State;
use super::{constant_time_eq, Supervisor};
use crate::agents::{AgentRun, AgentRunPhase};
use crate::codec;
use crate::config::SupervisorConfig;
use crate::flaws::Flaw;
use crate::ops::{OpId, OpPhase};
use crate::protocol::{
    AgentId, AgentMessage, ExitInfo, JobId, JobKind, RunId, RunningJob, SupervisorMessage,
};
use crate::runtime::{Connection, FrameReceiver, FrameSender, Instant};

/// Most runs one hello may declare.
const DECLARED_RUNS_MAX: usize = 10_000;
/// Largest capacity an agent may declare.
const AGENT_SLOTS_MAX: u32 = 10_000;

/// Why no hello was accepted.
enum HelloFailure {
    /// The hello is wrong: retrying the same hello cannot help (`Rejected`).
    Refused(String),
    /// No hello came (timeout, connection ended): the agent may retry.
    Missing(String),
}

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
        // While unwinding from a failed invariant the state lock may be
        // poisoned; a second panic here would abort and hide the first.
        if !std::thread::panicking() {
            self.supervisor.end_session(&self.agent, self.session);
        }
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
            Err(HelloFailure::Refused(reason)) => return reject(&sender, &peer, &reason),
            Err(HelloFailure::Missing(reason)) => {
                // Retrying can help (the hello may be stuck in the network):
                // close without a `Rejected`, which an agent takes as final.
                tracing::info!(%peer, reason, "agent connection closed without a hello");
                return sender.close();
            }
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

    async fn receive_hello(&self, receiver: &mut FrameReceiver) -> Result<Hello, HelloFailure> {
        let timeout = self.inner.config.agent_hello_timeout;
        let sleep = self.runtime().sleep(timeout).fuse();
        let frame = receiver.recv().fuse();
        futures::pin_mut!(sleep, frame);
        let frame = futures::select_biased! {
            frame = frame => frame.map_err(|error| {
                HelloFailure::Missing(format!("connection ended before hello: {error}"))
            })?,
            () = sleep => {
                let reason = format!("no hello within {}ms", timeout.as_millis());
                return Err(HelloFailure::Missing(reason));
            }
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
            Ok(_) => Err(HelloFailure::Refused(
                "the first message must be a hello".to_owned(),
            )),
            Err(error) => Err(HelloFailure::Refused(error.to_string())),
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
        let kinds = check_hello(config, &hello)?;
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
        end_sessions(&mut state, &hello.agent);
        let ended = Arc::new(Notify::new());
        state
            .sessions
            .insert((hello.agent.0.clone(), accepted.session), ended.clone());
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
        if !state.agents.is_current(agent, session) {
            tracing::info!(probe = "stale-connection-message", %agent, session, "message on a superseded session");
        }
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
            None if known.is_none() && run_has_ended(state, &job, run) => {
                // A duplicated or overtaken report: the run's end is known.
                tracing::info!(%agent, %job, run, "stale start report of an ended run");
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
            tracing::info!(probe = "duplicate-finish", %job, run, "report of a run already settled (duplicate)");
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
            _ => tracing::info!(
                probe = "reply-after-op-destroyed",
                %job,
                run,
                "late report of a settled run: the run is over"
            ),
        }
        // The agent has room again.
        self.assign_agents(state, now);
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

/// Whether the supervisor recorded the end of `job`'s run `run` and no
/// longer lists it on any agent (so a report of its start is stale).
fn run_has_ended(state: &State, job: &JobId, run: RunId) -> bool {
    state.jobs.get(job).is_some_and(|found| {
        found
            .record
            .runs
            .iter()
            .any(|record| record.run == run && !record.is_open())
    })
}

/// Check a hello's credentials and claims; returns its kinds, sorted.
fn check_hello(config: &SupervisorConfig, hello: &Hello) -> Result<Vec<JobKind>, String> {
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
    let mut kinds = hello.kinds.clone();
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

/// Signal every serving loop of `agent`'s sessions to end.
pub(super) fn end_sessions(state: &mut State, agent: &AgentId) {
    let sessions: Vec<(String, u64)> = state
        .sessions
        .keys()
        .filter(|(name, _)| *name == agent.0)
        .cloned()
        .collect();
    for key in sessions {
        if let Some(ended) = state.sessions.remove(&key) {
            ended.notify_one();
        }
    }
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
