//! The `faultline` command: the supervisor and agent on tokio (`serve`,
//! `agent`, `job`, `status`) and the simulation harness (`sim`).
//!
//! Exit statuses are stated once, in [`cli::exit`], and hold for every
//! subcommand: 0 success, 1 safety violation, 2 liveness violation,
//! 3 nondeterminism, 4 usage or input error, 5 other runtime error; and
//! `job wait` exits 6 when the job ended other than `completed`.

mod cli;
mod real;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// faultline: a job supervisor and the deterministic simulator that tests it.
#[derive(Parser, Debug)]
#[command(name = "faultline", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the supervisor (HTTP API and agent endpoint), optionally with local agents.
    Serve(cli::serve::ServeArgs),
    /// Run an agent that connects to a supervisor and runs jobs as processes.
    Agent(cli::agent::AgentArgs),
    /// Submit, inspect, wait for and cancel jobs.
    Job(cli::job::JobArgs),
    /// The resource overview: every live op with its situation, every pool with holders and waiters.
    Status(cli::job::StatusArgs),
    /// The deterministic simulator and the scenario harness.
    Sim(cli::sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return cli::exit::clap_error(error),
    };
    let result = match cli.command {
        Command::Serve(args) => cli::serve::run(args),
        Command::Agent(args) => cli::agent::run(args),
        Command::Job(args) => cli::job::run(args),
        Command::Status(args) => cli::job::status(args),
        Command::Sim(args) => cli::sim::run(args),
    };
    cli::exit::report(result)
}
