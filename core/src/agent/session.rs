//! One connection to the supervisor, from connect to failure.
//!
//! connect → send `Hello` → await `Welcome` (or `Rejected`) within the reply
//! timeout → attach the link to the agent's state (which re-sends every
//! unconfirmed report) → kill the runs the welcome lists → loop: handle
//! frames, heartbeat every interval, and give up on the connection after the
//! heartbeat grace without any frame. Whatever ends the session (including
//! dropping its future), the guards close the connection and detach the link.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use tracing::Instrument;

use super::run::start_run;
use super::state::{AgentState, RunDecision, RunKey};
use super::{lock_state, Agent, AgentError};
use crate::codec::{self, CodecError};
use crate::protocol::{AgentMessage, JobId, JobKind, RunId, RunningJob, SupervisorMessage};
use crate::runtime::{Connection, FrameReceiver, FrameSender, Runtime};

/// How a session ended.
pub(super) enum SessionEnd {
    /// The connection failed or was abandoned; reconnect.
    Lost {
        /// Whether the supervisor had welcomed the agent on it.
        welcomed: bool,
        /// What happened, for the log.
        cause: String,
    },
    /// Retrying cannot help: stop the agent.
    Fatal(AgentError),
}

fn lost_before_welcome(cause: String) -> SessionEnd {
    SessionEnd::Lost {
        welcomed: false,
        cause,
    }
}

fn lost_after_welcome(cause: String) -> SessionEnd {
    SessionEnd::Lost {
        welcomed: true,
        cause,
    }
}

/// What the welcome said.
struct Welcome {
    session: u64,
    heartbeat_ms: u64,
    kill: Vec<RunningJob>,
}

/// Run one session; see the module docs.
pub(super) async fn run_session(agent: &Agent) -> SessionEnd {
    let runtime = &*agent.deps.runtime;
    let timeout = agent.config.reply_timeout;
    let addr = &agent.config.supervisor_addr;
    let connection = match within(runtime, timeout, agent.deps.net.connect(addr)).await {
        Some(Ok(connection)) => connection,
        Some(Err(error)) => return lost_before_welcome(format!("connect to {addr}: {error}")),
        None => return lost_before_welcome(format!("connect to {addr}: no answer in {timeout:?}")),
    };
    let Connection {
        sender,
        mut receiver,
        peer,
    } = connection;
    let _close = CloseOnDrop(sender.clone());
    tracing::debug!(%peer, "connected");

    let hello = AgentMessage::Hello {
        agent: agent.config.id.clone(),
        token: agent.config.token.clone(),
        kinds: agent.config.kinds.clone(),
        slots: agent.config.slots,
        running: agent.lock_state().declared_runs(),
    };
    if let Err(error) = sender.send(codec::encode(&hello)) {
        return lost_before_welcome(format!("send hello: {error}"));
    }
    let welcome = match await_welcome(agent, &mut receiver).await {
        Ok(welcome) => welcome,
        Err(end) => return end,
    };

    let span = tracing::info_span!("session", session = welcome.session);
    let _link = LinkGuard::open(&agent.state, sender, welcome.session);
    let heartbeat_interval = heartbeat_interval(welcome.heartbeat_ms);
    async {
        tracing::info!(%peer, heartbeat_ms = welcome.heartbeat_ms, "welcomed");
        for run in welcome.kill {
            kill_run(agent, run.job, run.run, "the welcome lists it");
        }
        serve(agent, &mut receiver, heartbeat_interval).await
    }
    .instrument(span)
    .await
}

async fn await_welcome(agent: &Agent, receiver: &mut FrameReceiver) -> Result<Welcome, SessionEnd> {
    let runtime = &*agent.deps.runtime;
    let timeout = agent.config.reply_timeout;
    let frame = match within(runtime, timeout, receiver.recv()).await {
        Some(Ok(frame)) => frame,
        Some(Err(error)) => return Err(lost_before_welcome(format!("awaiting welcome: {error}"))),
        None => {
            return Err(lost_before_welcome(format!(
                "no welcome within {timeout:?}"
            )))
        }
    };
    match codec::decode::<SupervisorMessage>(&frame) {
        Ok(SupervisorMessage::Welcome {
            session,
            heartbeat_ms,
            kill,
        }) => Ok(Welcome {
            session,
            heartbeat_ms,
            kill,
        }),
        Ok(SupervisorMessage::Rejected { reason }) => Err(rejected(agent, reason)),
        Ok(other) => Err(lost_before_welcome(format!(
            "expected a welcome, got {}",
            message_name(&other)
        ))),
        Err(CodecError::Version { got, expected }) => {
            Err(SessionEnd::Fatal(AgentError::ProtocolVersion {
                got,
                expected,
            }))
        }
        Err(error) => Err(lost_before_welcome(format!("awaiting welcome: {error}"))),
    }
}

/// The welcomed part of the session: frames, heartbeats, silence.
async fn serve(agent: &Agent, receiver: &mut FrameReceiver, interval: Duration) -> SessionEnd {
    let runtime = &*agent.deps.runtime;
    let silence_max = interval.saturating_mul(agent.config.heartbeat_grace_intervals);
    let mut last_heard = runtime.now();
    let mut tick = runtime.sleep(interval).fuse();
    loop {
        let mut frame = receiver.recv().fuse();
        futures::select_biased! {
            received = frame => {
                let frame = match received {
                    Ok(frame) => frame,
                    Err(error) => return lost_after_welcome(format!("connection {error}")),
                };
                last_heard = runtime.now();
                if let Some(end) = handle_frame(agent, &frame) {
                    return end;
                }
            }
            () = tick => {
                let silence = runtime.now() - last_heard;
                if silence >= silence_max {
                    return lost_after_welcome(format!(
                        "nothing from the supervisor for {silence:?} (grace {silence_max:?})"
                    ));
                }
                agent.lock_state().send_heartbeat();
                tick = runtime.sleep(interval).fuse();
            }
        }
    }
}

/// Handle one frame of a welcomed session. `Some` ends the session.
fn handle_frame(agent: &Agent, frame: &[u8]) -> Option<SessionEnd> {
    let message = match codec::decode::<SupervisorMessage>(frame) {
        Ok(message) => message,
        Err(error) => {
            tracing::error!(%error, "undecodable frame from the supervisor");
            return Some(lost_after_welcome(format!("undecodable frame: {error}")));
        }
    };
    match message {
        SupervisorMessage::Run {
            job,
            run,
            kind,
            command,
        } => accept_run(agent, job, run, kind, command),
        SupervisorMessage::Kill { job, run } => kill_run(agent, job, run, "the supervisor asks"),
        SupervisorMessage::HeartbeatAck { seq } => {
            let confirmed = agent.lock_state().confirm_heartbeat(seq);
            if confirmed > 0 {
                tracing::debug!(seq, confirmed, "reports confirmed");
            }
        }
        SupervisorMessage::Rejected { reason } => return Some(rejected(agent, reason)),
        SupervisorMessage::Welcome { session, .. } => {
            tracing::warn!(session, "second welcome on one connection; ignored");
        }
    }
    None
}

fn accept_run(agent: &Agent, job: JobId, run: RunId, kind: JobKind, command: Vec<String>) {
    let key = RunKey { job, run };
    let decision = agent.lock_state().decide_run(&key, kind);
    match decision {
        RunDecision::Start => start_run(agent, key, command),
        RunDecision::Ignore(why) => tracing::debug!(run = %key, why, "run ignored"),
        RunDecision::Refuse(reason) => tracing::warn!(run = %key, %reason, "run refused"),
    }
}

fn kill_run(agent: &Agent, job: JobId, run: RunId, why: &str) {
    let key = RunKey { job, run };
    if agent.lock_state().request_kill(&key) {
        tracing::info!(run = %key, why, "killing run");
    } else {
        tracing::debug!(run = %key, why, "kill of a run that no longer runs; ignored");
    }
}

fn rejected(agent: &Agent, reason: String) -> SessionEnd {
    SessionEnd::Fatal(AgentError::Rejected {
        agent: agent.config.id.clone(),
        reason,
    })
}

fn heartbeat_interval(heartbeat_ms: u64) -> Duration {
    if heartbeat_ms == 0 {
        tracing::warn!("the supervisor asks for heartbeats every 0 ms; using 1 ms");
    }
    Duration::from_millis(heartbeat_ms.max(1))
}

fn message_name(message: &SupervisorMessage) -> &'static str {
    match message {
        SupervisorMessage::Welcome { .. } => "welcome",
        SupervisorMessage::HeartbeatAck { .. } => "heartbeat_ack",
        SupervisorMessage::Rejected { .. } => "rejected",
        SupervisorMessage::Run { .. } => "run",
        SupervisorMessage::Kill { .. } => "kill",
    }
}

/// `future`'s output, or `None` if `limit` elapses first.
async fn within<T>(
    runtime: &dyn Runtime,
    limit: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    let mut deadline = runtime.sleep(limit).fuse();
    let future = future.fuse();
    futures::pin_mut!(future);
    futures::select_biased! {
        value = future => Some(value),
        () = deadline => None,
    }
}

/// Closes the connection when the session ends, however it ends.
struct CloseOnDrop(FrameSender);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The session's link in the agent's state, detached when the session ends.
struct LinkGuard<'a> {
    state: &'a Mutex<AgentState>,
}

impl<'a> LinkGuard<'a> {
    fn open(state: &'a Mutex<AgentState>, sender: FrameSender, session: u64) -> LinkGuard<'a> {
        lock_state(state).open_link(sender, session);
        LinkGuard { state }
    }
}

impl Drop for LinkGuard<'_> {
    fn drop(&mut self) {
        // Also runs while unwinding from a panic: never panic again here.
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        state.close_link();
    }
}
