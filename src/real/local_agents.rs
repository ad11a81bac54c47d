//! Agents started by `faultline serve --local-agents N`: child processes of
//! the same binary, so one command gives a working system.
//!
//! None of them is restarted: an agent that dies shows as lost in
//! `faultline status`. All of them are killed when the supervisor stops,
//! and each one exits by itself if the supervisor dies without stopping
//! them (`--exit-with-parent`).

use std::process::Stdio;

use crate::cli::env;

/// One agent to start.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LocalAgentSpec {
    /// Its id, as the supervisor's configuration lists it.
    pub id: String,
    /// Its token.
    pub token: String,
    /// Its slots.
    pub slots: u32,
}

/// The running local agents. Dropping this kills them.
#[derive(Debug, Default)]
pub struct LocalAgents {
    children: Vec<(String, tokio::process::Child)>,
}

impl LocalAgents {
    /// Start one `faultline agent` per spec, connecting to `url`. The token
    /// travels in the environment, not on the command line, so other users
    /// cannot read it from the process list.
    pub fn spawn(url: &str, specs: &[LocalAgentSpec]) -> std::io::Result<LocalAgents> {
        let binary = std::env::current_exe()?;
        let mut agents = LocalAgents::default();
        for spec in specs {
            let child = tokio::process::Command::new(&binary)
                .args(["agent", "--supervisor", url, "--id", &spec.id])
                .args(["--slots", &spec.slots.to_string(), "--exit-with-parent"])
                .env(env::AGENT_TOKEN, &spec.token)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            tracing::info!(agent = %spec.id, pid = child.id(), "local agent started");
            agents.children.push((spec.id.clone(), child));
        }
        Ok(agents)
    }

    /// Kill every agent and reap it.
    pub async fn kill(&mut self) {
        for (id, child) in &mut self.children {
            if let Err(error) = child.kill().await {
                tracing::warn!(agent = %id, %error, "could not kill local agent");
            }
        }
        self.children.clear();
    }
}
