//! `faultline sim bench`: the simulator's own micro-workloads, one line
//! each with its throughput and its time compression (simulated seconds per
//! wall second).

use std::time::Duration;

use clap::Args;
use faultline_sim::workloads::{self, WorkloadRun};

use super::exit;

/// Arguments of `faultline sim bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A workload to run: ping-pong, sleepers or spawn-yield (repeatable;
    /// default: all, in that order).
    #[arg(long = "workload", value_name = "NAME")]
    workloads: Vec<String>,
    /// The seed of every run (decimal or 0x-hex).
    #[arg(long, default_value = "1", value_parser = super::sim::parse_seed)]
    seed: u64,
    /// Print exactly one `RESULT faultline-sim <workload> <value> <unit>`
    /// line per workload instead of the human lines.
    #[arg(long)]
    machine: bool,
}

/// One workload's figures.
struct Measured {
    name: &'static str,
    throughput: f64,
    unit: &'static str,
    compression: f64,
    wall: Duration,
}

/// Run the benchmarks.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let names: Vec<String> = if args.workloads.is_empty() {
        workloads::BENCH_NAMES
            .iter()
            .map(|name| (*name).to_owned())
            .collect()
    } else {
        args.workloads
    };
    if let Some(unknown) = names
        .iter()
        .find(|name| !workloads::BENCH_NAMES.contains(&name.as_str()))
    {
        return Err(exit::usage(format!(
            "unknown workload {unknown:?}; the workloads are: {}",
            workloads::BENCH_NAMES.join(", ")
        )));
    }
    for name in &names {
        let measured = measure(name, args.seed)?;
        if args.machine {
            println!(
                "RESULT faultline-sim {} {:.1} {}",
                measured.name, measured.throughput, measured.unit
            );
        } else {
            println!(
                "{:<12} {:>12.0} {:<12} compression {:>10.1}x  (wall {:.3}s)",
                measured.name,
                measured.throughput,
                measured.unit,
                measured.compression,
                measured.wall.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Run workload `name` once and time it on the wall clock.
// The one place that reads wall time: to measure the simulator itself.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn measure(name: &str, seed: u64) -> anyhow::Result<Measured> {
    let started = std::time::Instant::now();
    let run = workloads::run_bench(name, seed)?;
    let wall = started.elapsed().max(Duration::from_nanos(1));
    Ok(figures(&run, wall))
}

/// Throughput in the workload's unit and the time compression.
fn figures(run: &WorkloadRun, wall: Duration) -> Measured {
    let seconds = wall.as_secs_f64();
    let compression = run.virtual_elapsed.as_secs_f64() / seconds;
    let (throughput, unit) = match run.name {
        "ping-pong" => (
            2.0 * f64::from(workloads::PING_PONG_ROUND_TRIPS) / seconds,
            "msgs/s",
        ),
        "sleepers" => (compression, "sim_s/wall_s"),
        _ => {
            let polls = u64::from(workloads::SPAWN_YIELD_TASKS)
                * u64::from(workloads::SPAWN_YIELD_YIELDS + 1);
            (polls as f64 / seconds, "polls/s")
        }
    };
    Measured {
        name: run.name,
        throughput,
        unit,
        compression,
        wall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_use_the_units_of_the_contract() {
        let run = |name| WorkloadRun {
            name,
            virtual_elapsed: Duration::from_secs(100),
            polls: 0,
            messages: 0,
            trace_hash: 0,
        };
        let wall = Duration::from_secs(2);
        let ping = figures(&run("ping-pong"), wall);
        assert_eq!(
            (ping.throughput, ping.unit, ping.compression),
            (50_000.0, "msgs/s", 50.0)
        );
        let sleepers = figures(&run("sleepers"), wall);
        assert_eq!((sleepers.throughput, sleepers.unit), (50.0, "sim_s/wall_s"));
        let spawn = figures(&run("spawn-yield"), wall);
        assert_eq!((spawn.throughput, spawn.unit), (505_000.0, "polls/s"));
    }
}
