//! Subcommands of the `faultline` binary. Each file owns one family of
//! subcommands; [`exit`] maps outcomes to the exit statuses shared by all.

pub mod agent;
pub mod connect;
pub mod env;
pub mod exit;
pub mod harness;
pub mod job;
pub mod overview;
pub mod pool;
pub mod serve;
pub mod sim;
pub mod sim_bench;
