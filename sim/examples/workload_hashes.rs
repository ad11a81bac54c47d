//! Prints one line per run with its trace hash, polls, events and virtual
//! end time, for runs that exercise the simulator's hot paths: the three
//! benchmark workloads at their standard size, and smaller runs of the same
//! shapes under every scheduler, with a stall and a kill in the middle.
//!
//! A determinism baseline for changes to the simulator: the output must not
//! change unless behaviour is meant to (`scripts/hash-baseline` runs it).
//!
//! ```sh
//! cargo run --release -p faultline-sim --example workload_hashes
//! ```

use std::ops::ControlFlow;
use std::time::Duration;

use faultline_core::runtime::{Instant, TaskHandle};
use faultline_sim::util::yield_now;
use faultline_sim::workloads::{self, BENCH_NAMES};
use faultline_sim::{NodeId, SchedulerKind, Sim, SimConfig};
use rand::Rng;

/// Seeds of every run.
const SEEDS: std::ops::RangeInclusive<u64> = 1..=5;

fn main() {
    for name in BENCH_NAMES {
        for seed in SEEDS {
            let run = workloads::run_bench(name, seed).expect("the benchmark workloads pass");
            println!(
                "bench {name} seed={seed} hash={:016x} polls={} virtual_nanos={} messages={}",
                run.trace_hash,
                run.polls,
                run.virtual_elapsed.as_nanos(),
                run.messages
            );
        }
    }
    let schedulers = [
        ("random", SchedulerKind::Random),
        (
            "pct:3",
            SchedulerKind::Pct {
                depth: 3,
                steps_estimate: 10_000,
            },
        ),
        ("fifo", SchedulerKind::Fifo),
    ];
    for (label, scheduler) in schedulers {
        for seed in SEEDS {
            let mut config = SimConfig::new(seed);
            config.scheduler = scheduler;
            let sim = mixed(config);
            println!(
                "mixed scheduler={label} seed={seed} hash={} polls={} events={} end_nanos={}",
                sim.trace().hash_hex(),
                sim.polls(),
                sim.trace().event_count(),
                sim.now().as_nanos()
            );
        }
    }
}

/// Two nodes of yielders and sleepers (some spawned from inside tasks,
/// some aborted), node `a` stalled and node `b` killed and restarted part
/// way through.
fn mixed(config: SimConfig) -> Sim {
    let mut sim = Sim::new(config).expect("a valid configuration");
    let a = sim
        .add_node("a", |node| {
            let runtime = node.runtime();
            Box::pin(async move {
                let mut handles: Vec<TaskHandle> = Vec::new();
                for index in 0..40_u64 {
                    let inner = runtime.clone();
                    handles.push(runtime.spawn(
                        "child",
                        Box::pin(async move {
                            for _ in 0..(index % 7) {
                                yield_now().await;
                            }
                            inner.sleep(Duration::from_micros(50 * index)).await;
                            tracing::info!(index, "child done");
                        }),
                    ));
                }
                for handle in handles.iter().step_by(5) {
                    handle.abort();
                }
            })
        })
        .expect("a fresh node name");
    let b = sim
        .add_node("b", |node| {
            let runtime = node.runtime();
            Box::pin(async move {
                for round in 0..30_u32 {
                    runtime.sleep(Duration::from_micros(200)).await;
                    yield_now().await;
                    tracing::debug!(round, "b ticks");
                }
            })
        })
        .expect("a fresh node name");
    spawn_outside(&mut sim, a, 200);
    spawn_outside(&mut sim, b, 100);
    let stop = |sim: &Sim| sim.now() >= Instant::from_millis(1);
    run_until(&mut sim, stop);
    sim.stall(a, Duration::from_micros(700))
        .expect("node a is alive");
    let stop = |sim: &Sim| sim.now() >= Instant::from_millis(2);
    run_until(&mut sim, stop);
    sim.kill(b).expect("node b is alive");
    sim.run_for(Duration::from_micros(300))
        .expect("the run does not fail");
    sim.restart(b).expect("node b was killed");
    sim.run().expect("the run does not fail");
    sim
}

/// `tasks` tasks spawned from outside on `node`: sleepers and yielders.
fn spawn_outside(sim: &mut Sim, node: NodeId, tasks: u32) {
    let runtime = sim.context(node).runtime();
    for index in 0..tasks {
        let micros = sim.workload_rng().gen_range(1..=5_000);
        if index % 2 == 0 {
            sim.spawn(
                node,
                "sleeper",
                runtime.sleep(Duration::from_micros(micros)),
            );
        } else {
            let yields = micros % 13;
            sim.spawn(
                node,
                "yielder",
                Box::pin(async move {
                    for _ in 0..yields {
                        yield_now().await;
                    }
                }),
            );
        }
    }
}

/// Step until `stop` holds or the run ends.
fn run_until(sim: &mut Sim, stop: impl Fn(&Sim) -> bool) {
    sim.run_until(Instant::from_millis(1_000), |sim, _| {
        if stop(sim) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("the run does not fail");
}
