//! The task that owns one run's process: start it, wait for its end, and
//! hand the outcome to the agent's state, which reports it.

use std::sync::{Arc, Mutex};

use tracing::Instrument;

use super::state::{AgentState, RunKey};
use super::{lock_state, Agent};
use crate::runtime::{LaunchSpec, Launcher};

/// Spawn the task of the accepted run `key` (named `agent <id> run <job>#<run>`).
/// The task is detached: it ends when the process does, and the agent kills
/// processes, never tasks.
pub(super) fn start_run(agent: &Agent, key: RunKey, command: Vec<String>) {
    let name = format!("agent {} run {key}", agent.config.id);
    let span = tracing::info_span!(parent: &agent.span, "run", job = %key.job, run = key.run);
    let task = run_process(
        Arc::clone(&agent.state),
        Arc::clone(&agent.deps.launcher),
        key,
        command,
    );
    drop(
        agent
            .deps
            .runtime
            .spawn(&name, Box::pin(task.instrument(span))),
    );
}

async fn run_process(
    state: Arc<Mutex<AgentState>>,
    launcher: Arc<dyn Launcher>,
    key: RunKey,
    command: Vec<String>,
) {
    let spec = LaunchSpec {
        job_id: key.job.0.clone(),
        run_id: key.run,
        command,
    };
    let process = match launcher.start(spec).await {
        Ok(process) => process,
        Err(error) => {
            tracing::warn!(%error, "process could not start");
            lock_state(&state).record_start_failure(&key, &error);
            return;
        }
    };
    tracing::info!(process = process.id(), "process started");
    lock_state(&state).attach_process(&key, Arc::clone(&process));
    let exit = process.wait().await;
    tracing::info!(code = ?exit.code, signal = ?exit.signal, "process ended");
    lock_state(&state).record_exit(&key, exit);
}
