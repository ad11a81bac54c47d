//! `faultline serve`.

use clap::Args;

/// Arguments of `faultline serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {}

/// Run the supervisor.
pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    Err(anyhow::anyhow!(
        "`faultline serve` is not available in this build yet"
    ))
}
