//! `faultline sim …`: the simulator and the scenario harness.

use clap::{Args, Subcommand};

/// Arguments of `faultline sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(Subcommand, Debug)]
enum SimCommand {
    /// Run the simulator's own micro-workloads and print throughput and time compression.
    Bench(super::sim_bench::BenchArgs),
}

/// Run a `sim` subcommand.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.command {
        SimCommand::Bench(args) => super::sim_bench::run(args),
    }
}
