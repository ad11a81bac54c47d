//! `faultline sim bench`.

use clap::Args;

/// Arguments of `faultline sim bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {}

/// Run the benchmarks.
pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    Err(anyhow::anyhow!(
        "`faultline sim bench` is not available in this build yet"
    ))
}
