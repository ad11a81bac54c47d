//! Seed ranges, shards and the thread pool that runs simulations in parallel.
//!
//! Work is a sequence of *units* (a scenario and a seed) numbered from 0.
//! Workers take the next unit number from one atomic counter, so the split is
//! dynamic (a slow seed never holds up the rest) while the set of units run
//! depends only on the arguments, never on timing — except with a wall-clock
//! budget (`--time`), where it is the count that varies, never which seeds.
//!
//! Sharding (`--shard I/N`) keeps the seeds whose offset from `--start` is
//! `I` modulo `N`: N machines given shards 0..N cover the range exactly once.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One slice of the seed space: `--shard I/N`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: u64,
    /// Number of shards.
    pub count: u64,
}

impl Shard {
    /// The `n`-th seed (0-based) that belongs to this shard, counting from `start`.
    pub fn seed(&self, start: u64, n: u64) -> u64 {
        start
            .wrapping_add(n.wrapping_mul(self.count))
            .wrapping_add(self.index)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(text: &str) -> Result<Shard, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("invalid shard `{text}`: expected I/N, e.g. 3/8"))?;
        let index: u64 = index
            .trim()
            .parse()
            .map_err(|_| format!("invalid shard `{text}`: `{index}` is not a number"))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| format!("invalid shard `{text}`: `{count}` is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("invalid shard `{text}`: need 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }
}

/// When a pool stops taking new units.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// After this many units.
    Units(u64),
    /// After this much wall-clock time (units already started finish).
    Time(Duration),
}

/// Run `work(unit)` for unit numbers 0, 1, 2, … on `jobs` threads until the
/// budget is spent or `stop` is set. `on_result` runs on the calling thread,
/// in completion order, and may set `stop` (e.g. first failure wanted).
pub fn run_units<R: Send>(
    jobs: usize,
    budget: Budget,
    stop: &AtomicBool,
    work: impl Fn(u64) -> R + Sync,
    mut on_result: impl FnMut(u64, R),
) {
    let next = AtomicU64::new(0);
    let started = Instant::now();
    let take = || -> Option<u64> {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        match budget {
            Budget::Units(limit) => {
                let unit = next.fetch_add(1, Ordering::Relaxed);
                (unit < limit).then_some(unit)
            }
            Budget::Time(limit) => {
                (started.elapsed() < limit).then(|| next.fetch_add(1, Ordering::Relaxed))
            }
        }
    };
    // Bounded: workers wait for the caller, so `stop` takes effect promptly.
    let (sender, receiver) = mpsc::sync_channel::<(u64, R)>(jobs.max(1) * 2);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let sender = sender.clone();
            let (take, work) = (&take, &work);
            scope.spawn(move || {
                while let Some(unit) = take() {
                    if sender.send((unit, work(unit))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        for (unit, result) in receiver {
            on_result(unit, result);
        }
    });
}

/// The default number of worker threads: every core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_seed_space_exactly() {
        let mut seen = Vec::new();
        for index in 0..4 {
            let shard = Shard { index, count: 4 };
            seen.extend((0..25).map(|n| shard.seed(1_000, n)));
        }
        seen.sort_unstable();
        assert_eq!(seen, (1_000..1_100).collect::<Vec<u64>>());
    }

    #[test]
    fn bad_shards_are_refused_with_the_reason() {
        assert_eq!("3/8".parse::<Shard>(), Ok(Shard { index: 3, count: 8 }));
        assert!("8/8"
            .parse::<Shard>()
            .expect_err("index too big")
            .contains("0 <= I < N"));
        assert!("1-2".parse::<Shard>().expect_err("syntax").contains("I/N"));
        assert!("x/2"
            .parse::<Shard>()
            .expect_err("not a number")
            .contains("`x`"));
    }

    #[test]
    fn every_unit_runs_once_and_stop_ends_early() {
        let stop = AtomicBool::new(false);
        let mut units = Vec::new();
        run_units(
            3,
            Budget::Units(100),
            &stop,
            |unit| unit * 2,
            |unit, doubled| {
                assert_eq!(doubled, unit * 2);
                units.push(unit);
            },
        );
        units.sort_unstable();
        assert_eq!(units, (0..100).collect::<Vec<u64>>());

        let stop = AtomicBool::new(false);
        let mut count = 0;
        run_units(
            2,
            Budget::Units(1_000_000),
            &stop,
            |unit| unit,
            |_, _| {
                count += 1;
                if count == 10 {
                    stop.store(true, Ordering::Relaxed);
                }
            },
        );
        assert!(count < 1_000, "stop must end the pool early, ran {count}");
    }
}
