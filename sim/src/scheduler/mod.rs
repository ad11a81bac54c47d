//! Schedulers: which ready task the executor polls next.
//!
//! The executor tells a [`Scheduler`] when a task becomes ready
//! ([`push`](Scheduler::push)), asks it for the next one
//! ([`pop`](Scheduler::pop)), and tells it when a ready task is taken away
//! without running ([`withdraw`](Scheduler::withdraw): its node was killed)
//! and when a task is over ([`retire`](Scheduler::retire)). The scheduler owns
//! the ready set; the executor owns the tasks.
//!
//! * [`random`]: a uniformly random ready task at every step;
//! * [`pct`]: probabilistic concurrency testing with depth `d`;
//! * [`fifo`]: first ready, first polled (a baseline without randomness).
//!
//! Every scheduler draws only from the generator it is built with (the
//! seed's [`Purpose::Schedule`](crate::Purpose::Schedule) stream).

pub mod fifo;
pub mod pct;
pub mod random;

use crate::choices::SimRng;
use crate::config::ConfigError;
use crate::ids::TaskId;

pub use fifo::FifoScheduler;
pub use pct::PctScheduler;
pub use random::RandomScheduler;

/// Decides the order in which ready tasks are polled.
///
/// Preconditions the executor guarantees (a scheduler may assert them):
/// * `push(t)` is only called when `t` is not in the ready set;
/// * `withdraw(t)` is only called when `t` is in the ready set;
/// * `retire(t)` is only called once per task, when `t` is not in the
///   ready set and will never be pushed again;
/// * calls are made in the same order in every run of a seed, so a
///   scheduler that draws only from its own generator is deterministic.
pub trait Scheduler: Send {
    /// A short description for reports, with parameters (`pct(d=3,k=1000)`).
    fn describe(&self) -> String;

    /// `task` became ready to be polled.
    fn push(&mut self, task: TaskId);

    /// Remove and return the task to poll next. `None` if and only if the
    /// ready set is empty. Each `Some` is one step of the run.
    fn pop(&mut self) -> Option<TaskId>;

    /// Remove `task` from the ready set without polling it.
    fn withdraw(&mut self, task: TaskId);

    /// `task` is over; forget anything kept about it.
    fn retire(&mut self, _task: TaskId) {}

    /// How many tasks are ready.
    fn len(&self) -> usize;

    /// Whether no task is ready.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which scheduler a run uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SchedulerKind {
    /// A uniformly random ready task at every step.
    Random,
    /// Probabilistic concurrency testing: random task priorities and
    /// `depth − 1` priority change points over an estimated `steps_estimate`
    /// polls. See [`PctScheduler`] for the guarantee.
    Pct {
        /// The bug depth `d` targeted (1 = no change points).
        depth: u32,
        /// The estimated number of polls of one run, `k`.
        steps_estimate: u64,
    },
    /// First ready, first polled.
    Fifo,
}

impl SchedulerKind {
    /// Check the parameters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            SchedulerKind::Pct {
                depth,
                steps_estimate,
            } if depth == 0 || steps_estimate == 0 => Err(ConfigError::Pct {
                depth,
                steps_estimate,
            }),
            _ => Ok(()),
        }
    }

    /// Build the scheduler, drawing from `rng`.
    pub fn build(&self, rng: SimRng) -> Box<dyn Scheduler> {
        match *self {
            SchedulerKind::Random => Box::new(RandomScheduler::new(rng)),
            SchedulerKind::Pct {
                depth,
                steps_estimate,
            } => Box::new(PctScheduler::new(depth, steps_estimate, rng)),
            SchedulerKind::Fifo => Box::new(FifoScheduler::new()),
        }
    }

    /// Parse `random`, `fifo`, `pct` (depth 3, 10 000 steps) or
    /// `pct:D:K` / `pct:D`.
    pub fn parse(text: &str) -> Result<SchedulerKind, String> {
        let mut parts = text.split(':');
        let name = parts.next().unwrap_or_default();
        let numbers: Vec<&str> = parts.collect();
        let scheduler = match (name, numbers.as_slice()) {
            ("random", []) => SchedulerKind::Random,
            ("fifo", []) => SchedulerKind::Fifo,
            ("pct", rest) if rest.len() <= 2 => {
                let number = |index: usize, default: u64| -> Result<u64, String> {
                    rest.get(index).map_or(Ok(default), |value| {
                        value
                            .parse::<u64>()
                            .map_err(|_| format!("{value:?} is not a number in {text:?}"))
                    })
                };
                let depth = u32::try_from(number(0, 3)?)
                    .map_err(|_| format!("PCT depth too large in {text:?}"))?;
                SchedulerKind::Pct {
                    depth,
                    steps_estimate: number(1, 10_000)?,
                }
            }
            _ => {
                return Err(format!(
                    "unknown scheduler {text:?}: expected random, fifo, pct, pct:DEPTH or pct:DEPTH:STEPS"
                ))
            }
        };
        scheduler.validate().map_err(|error| error.to_string())?;
        Ok(scheduler)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_names_parse() {
        assert_eq!(SchedulerKind::parse("random"), Ok(SchedulerKind::Random));
        assert_eq!(SchedulerKind::parse("fifo"), Ok(SchedulerKind::Fifo));
        assert_eq!(
            SchedulerKind::parse("pct:2:50"),
            Ok(SchedulerKind::Pct {
                depth: 2,
                steps_estimate: 50
            })
        );
        assert!(SchedulerKind::parse("pct:0").is_err());
        assert!(SchedulerKind::parse("lifo").is_err());
        assert!(SchedulerKind::parse("pct:x").is_err());
    }
}
