//! How a run is set up: seed, scheduler, poll cost, bounds, trace capture,
//! buggify and the default network link. [`Sim::new`](crate::Sim::new)
//! validates a [`SimConfig`] and rejects contradictions.

use std::time::Duration;

use crate::buggify::BuggifyConfig;
use crate::net::LinkConfig;
use crate::scheduler::SchedulerKind;
use crate::trace::TraceConfig;

/// Everything that shapes a run besides the program itself. Start from
/// [`SimConfig::new`] and change fields; every default is documented on its
/// field.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed every random choice of the run derives from.
    pub seed: u64,
    /// Which scheduler picks the next ready task. Default: uniform random.
    pub scheduler: SchedulerKind,
    /// The virtual time one poll of a task costs, drawn uniformly from this
    /// range for each poll. Default: 1 µs to 20 µs.
    pub poll_cost: PollCost,
    /// Bounds past which the run is a reported failure.
    pub limits: Limits,
    /// What happens when nothing can run and nothing is pending while tasks
    /// still wait. Default: [`QuiescencePolicy::Deadlock`].
    pub quiescence: QuiescencePolicy,
    /// What the trace keeps besides its fingerprint. Default: hash and the
    /// last lines only.
    pub trace: TraceConfig,
    /// Buggify sites. Default: sites enabled with probability 1/4, firing
    /// with probability 1/20.
    pub buggify: BuggifyConfig,
    /// The network link between any two nodes unless set otherwise with
    /// [`Sim::set_link`](crate::Sim::set_link). Default: 1–5 ms latency, no
    /// loss, no duplication, no reordering.
    pub link_default: LinkConfig,
}

impl SimConfig {
    /// The defaults, with `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            scheduler: SchedulerKind::Random,
            poll_cost: PollCost::default(),
            limits: Limits::default(),
            quiescence: QuiescencePolicy::Deadlock,
            trace: TraceConfig::default(),
            buggify: BuggifyConfig::default(),
            link_default: LinkConfig::default(),
        }
    }

    /// Check the configuration for contradictions.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.poll_cost.min > self.poll_cost.max {
            return Err(ConfigError::PollCost {
                min: self.poll_cost.min,
                max: self.poll_cost.max,
            });
        }
        if self.limits.steps_max == 0 {
            return Err(ConfigError::ZeroStepLimit);
        }
        if self.limits.time_max.is_zero() {
            return Err(ConfigError::ZeroTimeLimit);
        }
        self.scheduler.validate()?;
        self.buggify.validate()?;
        self.link_default.validate()?;
        Ok(())
    }
}

/// The range of virtual time one poll costs. `min == max` draws nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PollCost {
    /// Cheapest poll.
    pub min: Duration,
    /// Dearest poll.
    pub max: Duration,
}

impl Default for PollCost {
    fn default() -> PollCost {
        PollCost {
            min: Duration::from_micros(1),
            max: Duration::from_micros(20),
        }
    }
}

impl PollCost {
    /// Every poll costs exactly `cost`.
    pub fn fixed(cost: Duration) -> PollCost {
        PollCost {
            min: cost,
            max: cost,
        }
    }
}

/// Bounds of a run. Passing one is a reported failure (a runaway), never a
/// hang.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Limits {
    /// Most polls and applied faults. Default: 50 million.
    pub steps_max: u64,
    /// Latest virtual time (since the start of the run). Default: 30 days.
    pub time_max: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            steps_max: 50_000_000,
            time_max: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What a quiescent run means: no task is ready, no timer, delivery, stall
/// or planned fault is pending, yet some tasks are still alive (waiting for
/// something that can never happen).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QuiescencePolicy {
    /// A deadlock: the run fails with
    /// [`Failure::Deadlock`](crate::Failure::Deadlock), naming every task
    /// still blocked.
    Deadlock,
    /// Normal (servers waiting for requests nobody will send): the run is
    /// idle; `run_until` jumps to its deadline and `run` returns
    /// [`RunEnd::Quiescent`](crate::RunEnd::Quiescent).
    Idle,
}

/// A contradiction in a [`SimConfig`] or in a value given to the simulator.
#[derive(Clone, PartialEq, Debug, thiserror::Error)]
pub enum ConfigError {
    /// The poll cost range is empty.
    #[error("poll cost minimum {min:?} exceeds its maximum {max:?}")]
    PollCost {
        /// The minimum given.
        min: Duration,
        /// The maximum given.
        max: Duration,
    },
    /// A run of zero steps cannot do anything.
    #[error("the step limit must be at least 1")]
    ZeroStepLimit,
    /// A run of zero virtual time cannot do anything.
    #[error("the virtual time limit must be positive")]
    ZeroTimeLimit,
    /// A probability outside `[0, 1]`.
    #[error("{what} must be a probability in [0, 1], not {value}")]
    Probability {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// A latency range whose minimum exceeds its maximum.
    #[error("latency minimum {min:?} exceeds its maximum {max:?}")]
    Latency {
        /// The minimum given.
        min: Duration,
        /// The maximum given.
        max: Duration,
    },
    /// PCT needs a depth of at least 1 and an estimate of at least 1 step.
    #[error("PCT needs depth >= 1 and steps_estimate >= 1 (got depth {depth}, steps_estimate {steps_estimate})")]
    Pct {
        /// The depth given.
        depth: u32,
        /// The step estimate given.
        steps_estimate: u64,
    },
    /// Two nodes with the same name.
    #[error("a node named {0:?} already exists")]
    DuplicateNode(String),
    /// A node name that cannot be part of an address.
    #[error("node name {0:?} must be non-empty and contain no ':' or whitespace")]
    NodeName(String),
    /// A node name that is not part of the simulation.
    #[error("no node named {0:?}")]
    UnknownNode(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(SimConfig::new(1).validate(), Ok(()));
    }

    #[test]
    fn inverted_poll_cost_is_rejected() {
        let mut config = SimConfig::new(1);
        config.poll_cost = PollCost {
            min: Duration::from_micros(5),
            max: Duration::from_micros(1),
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::PollCost { .. })
        ));
    }

    #[test]
    fn zero_limits_are_rejected() {
        let mut config = SimConfig::new(1);
        config.limits.steps_max = 0;
        assert_eq!(config.validate(), Err(ConfigError::ZeroStepLimit));
        let mut config = SimConfig::new(1);
        config.limits.time_max = Duration::ZERO;
        assert_eq!(config.validate(), Err(ConfigError::ZeroTimeLimit));
    }
}
