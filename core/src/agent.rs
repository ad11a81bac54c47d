//! The agent: connects to a supervisor, runs the jobs it is given as
//! processes, reports how they ended, and reconnects when the connection
//! fails, without losing a report.
//!
//! Written only against the runtime traits, so the same code runs on tokio
//! (`faultline agent`) and inside the simulator.
//!
//! * this file: configuration, errors, [`run_agent`] and the reconnect loop
//!   with its backoff;
//! * `session`: one connection: hello, welcome, then heartbeats and the
//!   supervisor's `Run`/`Kill` messages until the connection fails;
//! * `state`: the memory kept across connections: running processes and the
//!   reports the supervisor has not confirmed yet.
//!
//! Delivery of completions: a `Finished` report stays buffered until the
//! supervisor acknowledges a heartbeat sent after it on the same connection.
//! After a reconnect the hello declares every run still executing or still
//! unconfirmed, and the unconfirmed reports are sent again right after the
//! welcome; the supervisor treats duplicates by run id.

mod run;
mod session;
mod state;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::Instrument;

use crate::protocol::{AgentId, JobKind};
use crate::runtime::{Launcher, Net, Runtime};
use session::SessionEnd;
use state::AgentState;
pub use state::{REPORTS_MAX, RUN_HISTORY_MAX};

/// How an agent identifies itself and behaves. Build it with
/// [`AgentConfig::new`] to get the documented defaults, then set fields.
#[derive(Clone)]
pub struct AgentConfig {
    /// The agent's id, unique among a supervisor's agents.
    pub id: AgentId,
    /// The agent's secret, checked by the supervisor.
    pub token: String,
    /// Where the supervisor listens, as given to [`Net::connect`].
    pub supervisor_addr: String,
    /// The job kinds it accepts. Not empty. Default: every kind.
    pub kinds: Vec<JobKind>,
    /// How many jobs it runs at once. At least 1. Default: 1.
    pub slots: u32,
    /// The first reconnect delay. Positive. Default: 100 ms.
    pub reconnect_backoff_min: Duration,
    /// The largest reconnect delay. At least the minimum. Default: 10 s.
    pub reconnect_backoff_max: Duration,
    /// How long to wait for a connection to open, and then for the
    /// supervisor's answer to the hello. Positive. Default: 10 s.
    pub reply_timeout: Duration,
    /// After this many heartbeat intervals without any frame from the
    /// supervisor, the connection is considered dead (a partition may not
    /// reset it) and the agent reconnects. At least 1. Default: 3.
    pub heartbeat_grace_intervals: u32,
}

impl AgentConfig {
    /// A configuration with the defaults documented on each field.
    pub fn new(id: AgentId, token: String, supervisor_addr: String) -> AgentConfig {
        AgentConfig {
            id,
            token,
            supervisor_addr,
            kinds: JobKind::ALL.to_vec(),
            slots: 1,
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(10),
            heartbeat_grace_intervals: 3,
        }
    }

    /// Check the documented constraints.
    pub fn validate(&self) -> Result<(), AgentError> {
        let invalid = |reason: &str| Err(AgentError::InvalidConfig(reason.to_owned()));
        if self.kinds.is_empty() {
            return invalid("an agent accepts at least one job kind");
        }
        if self.slots == 0 {
            return invalid("an agent has at least one slot");
        }
        if self.reconnect_backoff_min.is_zero() {
            return invalid("the minimum reconnect backoff must be positive");
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return invalid("the minimum reconnect backoff exceeds the maximum");
        }
        if self.reply_timeout.is_zero() {
            return invalid("the reply timeout must be positive");
        }
        if self.heartbeat_grace_intervals == 0 {
            return invalid("the heartbeat grace is at least one interval");
        }
        Ok(())
    }
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .field("supervisor_addr", &self.supervisor_addr)
            .field("kinds", &self.kinds)
            .field("slots", &self.slots)
            .field("reconnect_backoff_min", &self.reconnect_backoff_min)
            .field("reconnect_backoff_max", &self.reconnect_backoff_max)
            .field("reply_timeout", &self.reply_timeout)
            .field("heartbeat_grace_intervals", &self.heartbeat_grace_intervals)
            .finish()
    }
}

/// What the agent runs on.
#[derive(Clone)]
pub struct AgentDeps {
    /// Time, tasks and randomness.
    pub runtime: Arc<dyn Runtime>,
    /// Connections to the supervisor.
    pub net: Arc<dyn Net>,
    /// The processes that run jobs.
    pub launcher: Arc<dyn Launcher>,
}

/// Why [`run_agent`] ended. Connection failures are not errors: the agent
/// retries them forever.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration breaks a documented constraint.
    #[error("invalid agent configuration: {0}")]
    InvalidConfig(String),
    /// The supervisor refused the agent (bad credentials, bad hello).
    /// Retrying cannot help.
    #[error("the supervisor rejected agent {agent}: {reason}")]
    Rejected {
        /// The agent.
        agent: AgentId,
        /// The supervisor's reason.
        reason: String,
    },
    /// The supervisor speaks another protocol version.
    #[error("the supervisor speaks protocol version {got}; this agent speaks {expected}")]
    ProtocolVersion {
        /// The supervisor's version.
        got: u32,
        /// Ours.
        expected: u32,
    },
}

/// Run the agent until the supervisor rejects it (or the configuration is
/// invalid). It never returns `Ok`: connection failures of any kind lead to a
/// reconnect after a backoff, forever.
///
/// When the future ends or is dropped, every process it started is killed.
pub async fn run_agent(config: AgentConfig, deps: AgentDeps) -> Result<(), AgentError> {
    config.validate()?;
    let span = tracing::info_span!("agent", agent = %config.id);
    let agent = Agent {
        state: Arc::new(Mutex::new(AgentState::new(
            config.id.clone(),
            config.kinds.clone(),
            config.slots,
        ))),
        config,
        deps,
        span: span.clone(),
    };
    let _stop = StopOnDrop(Arc::clone(&agent.state));
    agent.reconnect_forever().instrument(span).await
}

/// Everything one agent's tasks share.
pub(crate) struct Agent {
    config: AgentConfig,
    deps: AgentDeps,
    state: Arc<Mutex<AgentState>>,
    /// The agent's span: parent of every run's span, whatever the session.
    span: tracing::Span,
}

impl Agent {
    async fn reconnect_forever(&self) -> Result<(), AgentError> {
        let mut failures: u32 = 0;
        loop {
            let (welcomed, cause) = match session::run_session(self).await {
                SessionEnd::Fatal(error) => {
                    tracing::error!(%error, "agent stops");
                    return Err(error);
                }
                SessionEnd::Lost { welcomed, cause } => (welcomed, cause),
            };
            failures = if welcomed {
                1
            } else {
                failures.saturating_add(1)
            };
            let delay = reconnect_delay(
                failures,
                self.config.reconnect_backoff_min,
                self.config.reconnect_backoff_max,
                self.deps.runtime.random_u64(),
            );
            tracing::info!(
                %cause,
                failures,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "connection to the supervisor lost; reconnecting"
            );
            self.deps.runtime.sleep(delay).await;
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, AgentState> {
        lock_state(&self.state)
    }
}

pub(crate) fn lock_state(state: &Mutex<AgentState>) -> MutexGuard<'_, AgentState> {
    state
        .lock()
        .expect("agent state lock poisoned: a task panicked while holding it")
}

/// Stops the agent's processes when [`run_agent`] ends or is dropped.
struct StopOnDrop(Arc<Mutex<AgentState>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // Also runs while unwinding from a panic: never panic again here.
        let mut state = match self.0.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        state.stop();
    }
}

/// The delay before reconnect attempt number `failures` (1 for the first
/// after a loss): exponential from `min`, capped at `max`, with "equal
/// jitter": uniform in the upper half of the exponential step, never below
/// `min`. The first delay is exactly `min`.
pub(crate) fn reconnect_delay(
    failures: u32,
    min: Duration,
    max: Duration,
    random: u64,
) -> Duration {
    assert!(failures >= 1, "a reconnect follows at least one failure");
    assert!(min <= max, "validated: backoff min <= max");
    let doublings = (failures - 1).min(31);
    let ceiling = min.saturating_mul(1u32 << doublings).min(max);
    let floor = (ceiling / 2).max(min);
    let spread_nanos = u64::try_from((ceiling - floor).as_nanos()).unwrap_or(u64::MAX);
    let jitter_nanos = match spread_nanos.checked_add(1) {
        Some(range) => random % range,
        None => random,
    };
    let delay = floor + Duration::from_nanos(jitter_nanos);
    assert!(
        min <= delay && delay <= max,
        "backoff stays within [min, max]"
    );
    delay
}
