//! `faultline agent`.

use clap::Args;

/// Arguments of `faultline agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {}

/// Run an agent.
pub fn run(_args: AgentArgs) -> anyhow::Result<()> {
    Err(anyhow::anyhow!(
        "`faultline agent` is not available in this build yet"
    ))
}
