//! PCT earns its place: two programs with a known ordering bug, of depth 2
//! and of depth 3, and the median number of runs to the first failure for
//! the random scheduler and for PCT, over a fixed set of starting seeds.
//!
//! * Depth 2, a lost update: task A reads a counter, yields, writes back
//!   what it read plus one; task B yields 30 times, then increments the
//!   counter in one step. The update is lost iff `A.read < B.increment <
//!   A.write` (2 ordering constraints; with no preemption one task runs
//!   before the other and nothing is lost).
//! * Depth 3, a torn read: task A reads `x`, yields twice, reads `x` again;
//!   task B yields 30 times, writes `x = 1`, yields, writes `x = 2`. A sees
//!   `0` then `1` iff `A.read1 < B.write1 < A.read2 < B.write2` (3
//!   constraints: A must run inside B's one-step window, so one preemption
//!   of A is not enough; B must be preempted too).
//!
//! PCT with depth `d` finds a bug of depth `d` with probability at least
//! `1/(n·k^(d−1))` per run (`n` tasks, `k` steps), so its expected number of
//! runs is at most `n·k^(d−1)`; the test asserts that PCT's median is within
//! that bound and below the random scheduler's. The random scheduler needs
//! B to outrun A by some 30 steps, which it almost never does.
//!
//! Reproduce the figures in BENCHMARKS.md with
//! `cargo test -p faultline-sim --release --test pct -- --nocapture`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use faultline_core::runtime::BoxFuture;
use faultline_sim::util::yield_now;
use faultline_sim::{BuggifyConfig, SchedulerKind, Sim, SimConfig, TraceCapture, TraceConfig};

/// A racing program: two tasks on one node, spawned by its init.
struct Race {
    name: &'static str,
    depth: u32,
    /// `k`: every poll of a run (the same in every run).
    steps: u64,
    /// Build the two tasks over a shared cell and say, from the cell and a
    /// second cell A records into, whether the bug showed.
    tasks: fn(Arc<AtomicU64>, Arc<AtomicU64>) -> [BoxFuture<'static, ()>; 2],
    bug: fn(u64, u64) -> bool,
}

const B_PREFIX: u32 = 30;

fn lost_update(counter: Arc<AtomicU64>, _seen: Arc<AtomicU64>) -> [BoxFuture<'static, ()>; 2] {
    let other = Arc::clone(&counter);
    [
        Box::pin(async move {
            let read = counter.load(Ordering::SeqCst);
            yield_now().await;
            counter.store(read + 1, Ordering::SeqCst);
        }),
        Box::pin(async move {
            for _ in 0..B_PREFIX {
                yield_now().await;
            }
            other.fetch_add(1, Ordering::SeqCst);
        }),
    ]
}

fn torn_read(x: Arc<AtomicU64>, seen: Arc<AtomicU64>) -> [BoxFuture<'static, ()>; 2] {
    let writer = Arc::clone(&x);
    [
        Box::pin(async move {
            let first = x.load(Ordering::SeqCst);
            yield_now().await;
            yield_now().await;
            let second = x.load(Ordering::SeqCst);
            seen.store(first * 10 + second, Ordering::SeqCst);
        }),
        Box::pin(async move {
            for _ in 0..B_PREFIX {
                yield_now().await;
            }
            writer.store(1, Ordering::SeqCst);
            yield_now().await;
            writer.store(2, Ordering::SeqCst);
        }),
    ]
}

const DEPTH_2: Race = Race {
    name: "lost update (depth 2)",
    depth: 2,
    // init 1 + A 2 + B 31
    steps: 1 + 2 + (B_PREFIX as u64 + 1),
    tasks: lost_update,
    bug: |counter, _| counter != 2,
};

const DEPTH_3: Race = Race {
    name: "torn read (depth 3)",
    depth: 3,
    // init 1 + A 3 + B 32
    steps: 1 + 3 + (B_PREFIX as u64 + 2),
    tasks: torn_read,
    bug: |_, seen| seen == 1, // first read 0, second read 1
};

/// `n`: the node's init task and the two racers.
const TASKS: u64 = 3;

impl Race {
    /// `n·k^(d−1)`: the bound on the expected number of PCT runs.
    fn pct_bound(&self) -> u64 {
        TASKS * self.steps.pow(self.depth - 1)
    }

    fn scheduler(&self, pct: bool) -> SchedulerKind {
        if pct {
            SchedulerKind::Pct {
                depth: self.depth,
                steps_estimate: self.steps,
            }
        } else {
            SchedulerKind::Random
        }
    }

    /// Run the program once; whether the bug showed.
    fn run(&self, seed: u64, scheduler: SchedulerKind) -> bool {
        let mut config = SimConfig::new(seed);
        config.scheduler = scheduler;
        config.buggify = BuggifyConfig::Off;
        config.trace = TraceConfig {
            capture: TraceCapture::HashOnly,
            tail_lines: 0,
            ..TraceConfig::default()
        };
        let mut sim = Sim::new(config).expect("valid");
        let (cell, seen) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (shared_cell, shared_seen, tasks) = (Arc::clone(&cell), Arc::clone(&seen), self.tasks);
        sim.add_node("racer", move |node| {
            let [a, b] = tasks(Arc::clone(&shared_cell), Arc::clone(&shared_seen));
            Box::pin(async move {
                node.runtime().spawn("a", a);
                node.runtime().spawn("b", b);
            })
        })
        .expect("one node");
        sim.run().expect("the racers finish");
        assert_eq!(sim.polls(), self.steps, "k is exact");
        (self.bug)(cell.load(Ordering::SeqCst), seen.load(Ordering::SeqCst))
    }

    /// Runs from `start` (seeds `start`, `start + 1`, ...) until the bug
    /// shows: the number of runs, or `None` past `runs_max`.
    fn runs_to_failure(&self, start: u64, pct: bool, runs_max: u64) -> Option<u64> {
        (0..runs_max)
            .find(|offset| self.run(start + offset, self.scheduler(pct)))
            .map(|offset| offset + 1)
    }

    /// Median runs to failure over the starting seeds (`None`: more than
    /// `runs_max`), and every count.
    fn median(&self, pct: bool, runs_max: u64) -> (Option<u64>, Vec<Option<u64>>) {
        let mut runs: Vec<Option<u64>> = STARTS
            .iter()
            .map(|start| self.runs_to_failure(*start, pct, runs_max))
            .collect();
        runs.sort_by_key(|runs| runs.unwrap_or(u64::MAX));
        (runs[runs.len() / 2], runs)
    }
}

/// The fixed starting seeds: 1 000 000, 2 000 000, ... (an odd count, for
/// a plain median).
const STARTS: [u64; 21] = {
    let mut starts = [0; 21];
    let mut index = 0;
    while index < starts.len() {
        starts[index] = (index as u64 + 1) * 1_000_000;
        index += 1;
    }
    starts
};

fn show(runs: &[Option<u64>], runs_max: u64) -> String {
    let shown: Vec<String> = runs
        .iter()
        .map(|runs| runs.map_or_else(|| format!(">{runs_max}"), |runs| runs.to_string()))
        .collect();
    shown.join(" ")
}

fn measure(race: &Race, random_runs_max: u64) {
    let bound = race.pct_bound();
    let (pct, pct_all) = race.median(true, 4 * bound);
    let (random, random_all) = race.median(false, random_runs_max);
    println!(
        "{}: n = {TASKS}, k = {}, bound n·k^(d-1) = {bound}\n  PCT(d={}) runs to failure: {}\n  random runs to failure:   {}",
        race.name,
        race.steps,
        race.depth,
        show(&pct_all, 4 * bound),
        show(&random_all, random_runs_max),
    );
    let pct = pct.expect("PCT's median is found within four times its bound");
    println!(
        "  median: PCT {pct}, random {}",
        random.map_or_else(|| format!("> {random_runs_max}"), |r| r.to_string())
    );
    assert!(pct <= bound, "PCT's median {pct} exceeds its bound {bound}");
    assert!(
        random.is_none_or(|random| random > pct),
        "PCT ({pct}) beats random ({random:?})"
    );
}

#[test]
fn pct_finds_a_depth_2_lost_update_within_its_bound() {
    measure(&DEPTH_2, 2_000);
}

#[test]
fn pct_finds_a_depth_3_torn_read_within_its_bound() {
    measure(&DEPTH_3, 2_000);
}

/// How often one run of PCT hits the bug, over `RATE_RUNS` seeds.
fn hit_rate(race: &Race) -> f64 {
    let hits = (0..RATE_RUNS)
        .filter(|seed| race.run(*seed, race.scheduler(true)))
        .count();
    hits as f64 / RATE_RUNS as f64
}

const RATE_RUNS: u64 = 10_000;

#[test]
fn each_pct_run_hits_the_bug_at_least_as_often_as_the_bound_promises() {
    for race in [&DEPTH_2, &DEPTH_3] {
        let rate = hit_rate(race);
        let promised = 1.0 / race.pct_bound() as f64;
        println!(
            "{}: PCT hits in 1 run of {:.0}; the bound promises 1 of {}",
            race.name,
            1.0 / rate,
            race.pct_bound()
        );
        assert!(
            rate >= promised,
            "{}: rate {rate} below the bound {promised}",
            race.name
        );
    }
}
