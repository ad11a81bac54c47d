//! The three peer workloads, defined once for every runtime.
//!
//! This file is shared word for word by the `peers` crate (turmoil and tokio
//! with paused time) and the `madsim-peer` crate (through `#[path]`), so the
//! sizes, the seeded sleep durations and the metrics cannot drift apart.
//!
//! - `ping-pong`: a client and a server, one small request and one reply per
//!   round trip, [`Size::round_trips`] round trips one after the other over a
//!   link with a fixed one-way latency of [`LINK_LATENCY`]. Metric: messages
//!   (two per round trip) per wall second.
//! - `sleepers`: [`Size::sleepers`] tasks each sleeping a duration drawn
//!   uniformly from [`SLEEP_MIN`, `SLEEP_MAX`] (millisecond resolution) from
//!   [`SLEEP_SEED`]. Metric: simulated seconds per wall second. (Tests shrink
//!   the upper bound through [`Size::sleep_max`].)
//! - `spawn-yield`: [`Size::yielders`] tasks each yielding
//!   [`Size::yields_per_task`] times. Metric: polls per wall second, counting
//!   one poll per yield plus the final one that completes the task.

use std::time::Duration;

/// One-way latency of the simulated link in `ping-pong`.
pub const LINK_LATENCY: Duration = Duration::from_millis(1);
/// Shortest sleep in `sleepers`.
pub const SLEEP_MIN: Duration = Duration::from_secs(1);
/// Longest sleep in `sleepers` (in [`Size::FULL`]).
pub const SLEEP_MAX: Duration = Duration::from_secs(3600);
/// Seed of the sleep durations in `sleepers`.
pub const SLEEP_SEED: u64 = 0x5eed_0001;

/// A workload of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Sequential request/response between two nodes.
    PingPong,
    /// Many tasks sleeping seeded random durations.
    Sleepers,
    /// Many tasks yielding repeatedly.
    SpawnYield,
}

impl Workload {
    /// Every workload, in the order they are printed.
    pub const ALL: [Workload; 3] = [Workload::PingPong, Workload::Sleepers, Workload::SpawnYield];

    /// The name used on the command line and in `RESULT` lines.
    pub fn name(self) -> &'static str {
        match self {
            Workload::PingPong => "ping-pong",
            Workload::Sleepers => "sleepers",
            Workload::SpawnYield => "spawn-yield",
        }
    }

    /// The unit of the workload's metric in `RESULT` lines.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::PingPong => "msgs/s",
            Workload::Sleepers => "sim_s/wall_s",
            Workload::SpawnYield => "polls/s",
        }
    }

    /// The workload with this name, if any.
    pub fn parse(name: &str) -> Option<Workload> {
        Workload::ALL
            .into_iter()
            .find(|workload| workload.name() == name)
    }
}

/// How big each workload is. [`Size::FULL`] is the benchmark; tests use
/// [`Size::SMALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Sequential round trips in `ping-pong`.
    pub round_trips: u64,
    /// Sleeping tasks in `sleepers`.
    pub sleepers: usize,
    /// Longest sleep in `sleepers`.
    pub sleep_max: Duration,
    /// Yielding tasks in `spawn-yield`.
    pub yielders: usize,
    /// Yields of each task in `spawn-yield`.
    pub yields_per_task: u64,
}

impl Size {
    /// The sizes the comparison is defined with.
    pub const FULL: Size = Size {
        round_trips: 50_000,
        sleepers: 10_000,
        sleep_max: SLEEP_MAX,
        yielders: 10_000,
        yields_per_task: 100,
    };

    /// Small enough for a unit test.
    #[cfg(test)]
    pub const SMALL: Size = Size {
        round_trips: 20,
        sleepers: 50,
        sleep_max: Duration::from_secs(20),
        yielders: 20,
        yields_per_task: 5,
    };

    /// The `sleepers` durations of this size, drawn from [`SLEEP_SEED`].
    pub fn sleep_durations(self) -> Vec<Duration> {
        sleep_durations(self.sleepers, self.sleep_max, SLEEP_SEED)
    }

    /// Yields `spawn-yield` makes in total.
    pub fn yields(self) -> u64 {
        let tasks = u64::try_from(self.yielders).expect("task count fits in u64");
        tasks * self.yields_per_task
    }

    /// Polls `spawn-yield` makes: each yield plus the completing poll.
    pub fn polls(self) -> u64 {
        let tasks = u64::try_from(self.yielders).expect("task count fits in u64");
        self.yields() + tasks
    }
}

/// What one run of a workload took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// Simulated time that passed during the run.
    pub simulated: Duration,
}

impl Measurement {
    /// The workload's metric for this run (see the module docs).
    pub fn throughput(self, workload: Workload, size: Size) -> f64 {
        let wall_s = self.wall.as_secs_f64().max(1e-9);
        match workload {
            Workload::PingPong => (2 * size.round_trips) as f64 / wall_s,
            Workload::Sleepers => self.simulated.as_secs_f64() / wall_s,
            Workload::SpawnYield => size.polls() as f64 / wall_s,
        }
    }
}

/// The machine-readable line for one result:
/// `RESULT <runtime> <workload> <value> <unit>`.
pub fn format_result(runtime: &str, workload: Workload, value: f64) -> String {
    format!(
        "RESULT {runtime} {} {value:.1} {}",
        workload.name(),
        workload.unit()
    )
}

/// `count` sleep durations, uniform over whole milliseconds in
/// [`SLEEP_MIN`, `max`], from a SplitMix64 stream seeded with `seed`.
pub fn sleep_durations(count: usize, max: Duration, seed: u64) -> Vec<Duration> {
    assert!(
        max >= SLEEP_MIN,
        "the longest sleep is at least the shortest"
    );
    let min_ms = u64::try_from(SLEEP_MIN.as_millis()).expect("SLEEP_MIN fits in u64 ms");
    let max_ms = u64::try_from(max.as_millis()).expect("the longest sleep fits in u64 ms");
    let span_ms = max_ms - min_ms + 1;
    let mut state = seed;
    (0..count)
        .map(|_| {
            // The modulo bias over a span of 3.6e6 out of 2^64 is negligible.
            Duration::from_millis(min_ms + split_mix64(&mut state) % span_ms)
        })
        .collect()
}

/// The longest of `durations` (what a run of `sleepers` must at least span).
pub fn longest(durations: &[Duration]) -> Duration {
    durations.iter().copied().max().unwrap_or(Duration::ZERO)
}

/// One step of SplitMix64.
fn split_mix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The workloads named by `--workload NAME` options (repeatable; `all` or no
/// option means every workload).
pub fn parse_workloads(values: &[String]) -> Result<Vec<Workload>, String> {
    if values.is_empty() || values.iter().any(|value| value == "all") {
        return Ok(Workload::ALL.to_vec());
    }
    values
        .iter()
        .map(|value| {
            Workload::parse(value).ok_or_else(|| {
                format!("unknown workload {value:?} (ping-pong, sleepers, spawn-yield or all)")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_durations_stay_within_bounds_and_repeat_for_a_seed() {
        let first = sleep_durations(10_000, SLEEP_MAX, SLEEP_SEED);
        let second = sleep_durations(10_000, SLEEP_MAX, SLEEP_SEED);
        assert_eq!(first, second);
        assert!(first.iter().all(|d| (SLEEP_MIN..=SLEEP_MAX).contains(d)));
        assert_ne!(first, sleep_durations(10_000, SLEEP_MAX, SLEEP_SEED + 1));
    }

    #[test]
    fn sleep_durations_spread_over_the_whole_range() {
        let durations = sleep_durations(10_000, SLEEP_MAX, SLEEP_SEED);
        assert!(longest(&durations) > Duration::from_secs(3500));
        let shortest = durations.iter().min().expect("10,000 durations");
        assert!(*shortest < Duration::from_secs(100));
    }

    #[test]
    fn result_line_names_runtime_workload_value_and_unit() {
        let line = format_result("turmoil", Workload::Sleepers, 1234.56);
        assert_eq!(line, "RESULT turmoil sleepers 1234.6 sim_s/wall_s");
    }

    #[test]
    fn throughput_counts_two_messages_per_round_trip_and_101_polls_per_task() {
        let one_second = Measurement {
            wall: Duration::from_secs(1),
            simulated: Duration::from_secs(7),
        };
        assert_eq!(
            one_second.throughput(Workload::PingPong, Size::FULL),
            100_000.0
        );
        assert_eq!(
            one_second.throughput(Workload::SpawnYield, Size::FULL),
            1_010_000.0
        );
        assert_eq!(one_second.throughput(Workload::Sleepers, Size::FULL), 7.0);
    }

    #[test]
    fn workloads_parse_by_name_and_all_selects_every_one() {
        assert_eq!(parse_workloads(&[]), Ok(Workload::ALL.to_vec()));
        assert_eq!(
            parse_workloads(&["sleepers".to_string()]),
            Ok(vec![Workload::Sleepers])
        );
        assert!(parse_workloads(&["sleep".to_string()]).is_err());
    }
}
