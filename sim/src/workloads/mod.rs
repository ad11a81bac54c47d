//! The simulator's own micro-workloads, for `faultline sim bench` and the
//! self-tests:
//!
//! * [`ping_pong`]: two nodes, one connection, sequential round trips over
//!   a fixed 1 ms link (network throughput);
//! * [`sleepers`]: many tasks sleeping long random durations (how fast
//!   virtual time jumps);
//! * [`spawn_yield`]: many tasks yielding repeatedly (raw polls);
//! * [`chatter`]: several nodes exchanging messages with timers under loss,
//!   duplication, reordering, a partition and a node restart (the
//!   determinism program).
//!
//! Each returns a [`WorkloadRun`] with what happened in virtual terms; wall
//! time is for the caller to measure.

pub mod chatter;
pub mod ping_pong;
pub mod sleepers;
pub mod spawn_yield;

use std::time::Duration;

use crate::config::SimConfig;
use crate::failure::Failure;
use crate::sim::Sim;
use crate::trace::{TraceCapture, TraceConfig};
use crate::BuggifyConfig;

/// The benchmark workloads, by name.
pub const BENCH_NAMES: [&str; 3] = ["ping-pong", "sleepers", "spawn-yield"];

/// What a workload did, in virtual terms.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WorkloadRun {
    /// The workload's name.
    pub name: &'static str,
    /// Virtual time from start to end.
    pub virtual_elapsed: Duration,
    /// Polls made.
    pub polls: u64,
    /// Network messages delivered (frames, both directions).
    pub messages: u64,
    /// The run's trace hash.
    pub trace_hash: u64,
}

/// A workload that could not run.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum WorkloadError {
    /// No workload has this name.
    #[error("unknown workload {0:?}; the workloads are: {names}", names = BENCH_NAMES.join(", "))]
    Unknown(String),
    /// The run failed (a bug in the simulator or the workload).
    #[error("workload {name} failed: {failure}")]
    Failed {
        /// The workload.
        name: &'static str,
        /// How.
        failure: Failure,
    },
}

/// Round trips of the standard `ping-pong`.
pub const PING_PONG_ROUND_TRIPS: u32 = 50_000;
/// Tasks of the standard `sleepers`.
pub const SLEEPERS_TASKS: u32 = 10_000;
/// Tasks of the standard `spawn-yield`.
pub const SPAWN_YIELD_TASKS: u32 = 10_000;
/// Yields per task of the standard `spawn-yield`.
pub const SPAWN_YIELD_YIELDS: u32 = 100;

/// Run the benchmark workload `name` at its standard size.
pub fn run_bench(name: &str, seed: u64) -> Result<WorkloadRun, WorkloadError> {
    match name {
        "ping-pong" => ping_pong::run(seed, PING_PONG_ROUND_TRIPS),
        "sleepers" => sleepers::run(seed, SLEEPERS_TASKS),
        "spawn-yield" => spawn_yield::run(seed, SPAWN_YIELD_TASKS, SPAWN_YIELD_YIELDS),
        other => Err(WorkloadError::Unknown(other.to_owned())),
    }
}

/// The configuration the benchmarks run with: default scheduler and poll
/// cost, no buggify, and a trace that keeps only its hash.
pub fn bench_config(seed: u64) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.buggify = BuggifyConfig::Off;
    config.trace = TraceConfig {
        capture: TraceCapture::HashOnly,
        tail_lines: 0,
        ..TraceConfig::default()
    };
    config
}

/// Run `sim` to the end and report it as `name`.
fn finish(name: &'static str, mut sim: Sim) -> Result<WorkloadRun, WorkloadError> {
    sim.run()
        .map_err(|failure| WorkloadError::Failed { name, failure })?;
    Ok(WorkloadRun {
        name,
        virtual_elapsed: sim.now() - faultline_core::runtime::Instant::ZERO,
        polls: sim.polls(),
        messages: sim.net_stats().frames_delivered,
        trace_hash: sim.trace().hash(),
    })
}
