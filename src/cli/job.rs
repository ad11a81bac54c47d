//! `faultline job …` and `faultline status`.

use clap::Args;

/// Arguments of `faultline job`.
#[derive(Args, Debug)]
pub struct JobArgs {}

/// Arguments of `faultline status`.
#[derive(Args, Debug)]
pub struct StatusArgs {}

/// Run a `job` subcommand.
pub fn run(_args: JobArgs) -> anyhow::Result<()> {
    Err(anyhow::anyhow!(
        "`faultline job` is not available in this build yet"
    ))
}

/// Print the resource overview.
pub fn status(_args: StatusArgs) -> anyhow::Result<()> {
    Err(anyhow::anyhow!(
        "`faultline status` is not available in this build yet"
    ))
}
