//! The supervisor: queues jobs against slots, dispatches them to agents,
//! watches, cancels and times them out, and keeps them across restarts.
//!
//! [`Supervisor`] is a cloneable handle (an `Arc` inside). Its state sits
//! behind one lock that is never held across an `.await`; every request path
//! makes all of its changes in one critical section *before* its first
//! await, so a future dropped at any await (a client that disconnects, a
//! `select!` that picks another branch) leaves the state consistent.
//!
//! What lives here:
//! * `state`: the shared state and its helpers;
//! * `clients`: `handle_client` (submit, status, cancel, list, overview);
//! * `dispatch`: the op task of each run (slots, agent, dispatch, timers);
//! * `settle`: how runs end, kills, and the max-run timer;
//! * `agent_link`: one agent connection from hello to end;
//! * `reconcile`: an agent's hello against what the supervisor believes it runs;
//! * `monitor`: agent liveness and restart recovery;
//! * `snapshot`: the state as data, for tests, oracles and the overview;
//! * `net`: accept loops over [`Net`](crate::runtime::Net) (the simulator's clients and agents).
//!
//! Every task is spawned through [`Runtime::spawn`] with a name that says
//! what it is for (`run-op j-3#1`, `agent-conn a-1#2`, `max-run j-3#1`).

mod agent_link;
mod clients;
mod dispatch;
#[cfg(all(test, feature = "flaws"))]
mod flaw_tests;
#[cfg(test)]
mod model_tests;
mod monitor;
mod net;
mod reconcile;
mod settle;
mod snapshot;
mod state;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{ConfigError, SupervisorConfig};
use crate::flaws::FlawSet;
use crate::runtime::{BoxFuture, Runtime, TaskHandle};
use crate::store::{Store, StoreError};

pub use snapshot::{JobSnapshot, Snapshot};

use state::State;

/// What the supervisor needs from its environment.
#[derive(Clone)]
pub struct SupervisorDeps {
    /// Time, tasks and randomness.
    pub runtime: Arc<dyn Runtime>,
    /// Durable job records.
    pub store: Arc<dyn Store>,
    /// Known flaws to switch on (only effective with the `flaws` feature).
    pub flaws: FlawSet,
}

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration contradicts itself.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be loaded.
    #[error("cannot load the job store: {0}")]
    Store(#[from] StoreError),
    /// The store holds a record the supervisor cannot take back.
    #[error("job store holds an unusable record: {0}")]
    Record(String),
}

/// The supervisor handle. Cheap to clone; every clone drives the same
/// supervisor.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    config: SupervisorConfig,
    runtime: Arc<dyn Runtime>,
    store: Arc<dyn Store>,
    flaws: FlawSet,
    state: Mutex<State>,
    /// Notified (all waiters) when the supervisor shuts down.
    stopped: tokio::sync::Notify,
}

impl Supervisor {
    /// Validate `config`, load the store, recover the jobs it holds (pending
    /// jobs re-enter their queues in submission order; running jobs wait for
    /// their agents for the recovery grace) and start the background tasks.
    pub async fn start(
        config: SupervisorConfig,
        deps: SupervisorDeps,
    ) -> Result<Supervisor, StartError> {
        config.validate()?;
        let records = deps.store.load().await?;
        let supervisor = Supervisor {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(&config)),
                config,
                runtime: deps.runtime,
                store: deps.store,
                flaws: deps.flaws,
                stopped: tokio::sync::Notify::new(),
            }),
        };
        supervisor.recover(records)?;
        supervisor.start_monitor();
        tracing::info!(
            flaws = ?supervisor.inner.flaws,
            "supervisor started"
        );
        Ok(supervisor)
    }

    /// The user a token belongs to, if any.
    pub fn authenticate_user(&self, token: &str) -> Option<String> {
        if token.is_empty() {
            return None;
        }
        self.inner
            .config
            .users
            .iter()
            .find(|(_, user)| constant_time_eq(user.token.as_bytes(), token.as_bytes()))
            .map(|(name, _)| name.clone())
    }

    /// Stop accepting work and stop every background task, op task and agent
    /// session. The state stays readable through [`Supervisor::snapshot`].
    pub fn shutdown(&self) {
        let mut tasks = Vec::new();
        {
            let mut state = self.lock();
            if state.shutting_down {
                return;
            }
            state.shutting_down = true;
            tasks.append(&mut state.background);
            for resources in state.resources.values_mut() {
                tasks.extend(resources.task.take());
            }
            for timer in state
                .jobs
                .values_mut()
                .filter_map(|job| job.max_run_timer.take())
            {
                tasks.push(timer.task);
            }
            for ended in state.sessions.values() {
                ended.notify_one();
            }
        }
        self.inner.stopped.notify_waiters();
        for task in tasks {
            task.abort();
        }
        tracing::info!("supervisor shut down");
    }

    /// The configuration in force.
    pub fn config(&self) -> &SupervisorConfig {
        &self.inner.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .expect("the state lock is only poisoned if an invariant assert fired under it")
    }

    fn runtime(&self) -> &dyn Runtime {
        self.inner.runtime.as_ref()
    }

    fn flaws(&self) -> FlawSet {
        self.inner.flaws
    }

    /// Spawn `future` as a named task of this supervisor.
    fn spawn(&self, name: &str, future: BoxFuture<'static, ()>) -> TaskHandle {
        self.inner.runtime.spawn(name, future)
    }
}

/// Compare secrets without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
