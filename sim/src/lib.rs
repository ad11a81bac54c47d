//! faultline-sim: a seeded, single-threaded deterministic simulator that
//! implements faultline-core's runtime traits. It knows nothing of jobs.
//!
//! A [`Sim`] runs *nodes* (simulated processes). Each node runs futures as
//! tasks on a single-threaded executor built on `async-task`, reads a
//! virtual clock, talks to other nodes over a simulated network, and can be
//! killed, restarted, stalled, partitioned away or have its clock skewed.
//! Every random decision comes from the run's seed, so a run is a pure
//! function of `(program, configuration, seed, fault plan)`: the same inputs
//! give the same [trace hash](Trace::hash), in any process, on any thread.
//!
//! # Using it
//!
//! ```
//! use std::time::Duration;
//! use faultline_sim::{Sim, SimConfig, RunEnd};
//!
//! let mut sim = Sim::new(SimConfig::new(42)).expect("a valid configuration");
//! sim.add_node("sleeper", |node| {
//!     let runtime = node.runtime();
//!     Box::pin(async move {
//!         runtime.sleep(Duration::from_secs(3600)).await;
//!         tracing::info!("woke up");
//!     })
//! })
//! .expect("a new node name");
//! assert_eq!(sim.run(), Ok(RunEnd::Finished));
//! assert!(sim.now().as_secs_f64() >= 3600.0);
//! ```
//!
//! # The public API
//!
//! * Setting up: [`SimConfig`] (seed, [`SchedulerKind`], [`PollCost`],
//!   [`Limits`], [`QuiescencePolicy`], [`TraceConfig`], [`BuggifyConfig`],
//!   default [`LinkConfig`]); [`Sim::new`] (or [`Sim::with_scheduler`] for
//!   a [`Scheduler`] of your own); [`Sim::add_node`] with an init
//!   closure `Fn(NodeContext) -> BoxFuture<'static, ()>` that runs at start
//!   and after every restart; [`NodeContext`] gives the node's
//!   `Arc<dyn Runtime>`, `Arc<dyn Net>`, name and id; [`Sim::spawn`] starts
//!   extra tasks from outside.
//! * Driving: [`Sim::step`] (one poll, one planned fault, or one clock
//!   jump, as a [`Progress`]); [`Sim::run_until`] with a callback after
//!   every step that changed something (oracles); [`Sim::run_for`];
//!   [`Sim::run`] until no task is left; [`Sim::in_trace`] to create spans
//!   for futures spawned from outside.
//! * Faults, directly: [`Sim::kill`], [`Sim::restart`], [`Sim::stall`],
//!   [`Sim::skew`], [`Sim::partition`]/[`Sim::heal`],
//!   [`Sim::clog`]/[`Sim::unclog`], [`Sim::set_link`], [`Sim::reset`]; or
//!   through a [`FaultPlan`] applied at its planned times with
//!   [`Sim::apply_plan`] (generated from a seed and a [`FaultProfile`],
//!   loaded from TOML with file-and-line errors, printed, validated).
//! * Looking: [`Sim::now`], [`Sim::trace`] (hash, event count, text, Chrome
//!   JSON, last lines), [`Sim::tasks`] (live tasks with names and nodes, for
//!   hang reports and leak checks), [`Sim::nodes`], [`Sim::net_stats`],
//!   [`Sim::buggify_sites`]; [`Sim::workload_rng`] and [`Sim::choices`] for
//!   the caller's own seeded randomness.
//! * Failing: a deadlock (nothing ready, nothing pending, tasks waiting), a
//!   runaway past [`Limits`], or a panicking task ends the run with a
//!   [`Failure`] naming the tasks involved.
//! * Utilities: [`util::cancel_at_random_await`] drops a future at a seeded
//!   `.await` (a client disconnecting mid-request); [`util::yield_now`].
//! * Buggify: `Runtime::buggify(site)` — each site on or off per run from
//!   the seed, then firing with a small probability.
//!
//! # Modules
//!
//! * [`sim`]: the owner; with it, privately, the executor, the task table,
//!   the event queue and timers (`clock`), and the shared world; [`node`];
//! * [`choices`]: one ChaCha stream per purpose;
//! * [`scheduler`]: random, PCT, FIFO behind one trait;
//! * [`net`]: links, connections, partitions, clogs, resets;
//! * [`plan`]: fault plans; [`buggify`]; [`trace`]: capture, hash, export;
//! * [`disk`]: one durable key → bytes store per node that survives its
//!   kills, losing (or tearing) unsynced writes when it is killed
//!   ([`NodeContext::disk`], [`Sim::disk`], [`Sim::set_disk`]);
//! * [`failure`]: deadlock, runaway, panic; [`util`]; [`workloads`]: the
//!   simulator's own micro-workloads (benchmarks and self-tests).
//!
//! # Threads
//!
//! A `Sim` is `Send` and shares nothing with other `Sim`s: several runs can
//! go on in parallel on different threads of one process. The trace's
//! `tracing` subscriber is installed per poll with
//! `tracing::dispatcher::with_default` (thread-local), never globally.

pub mod buggify;
pub mod choices;
pub(crate) mod clock;
pub mod config;
pub mod disk;
mod executor;
pub mod failure;
mod faults;
pub mod ids;
pub mod net;
pub mod node;
pub mod plan;
mod report;
pub mod runtime;
pub mod scheduler;
pub mod sim;
mod task;
pub mod trace;
pub mod util;
pub mod workloads;
mod world;

pub use buggify::{BuggifyConfig, BuggifySite};
pub use choices::{Choices, Purpose, SimRng};
pub use config::{ConfigError, Limits, PollCost, QuiescencePolicy, SimConfig};
pub use disk::{CrashLoss, DiskConfig, DiskError, DiskStats, SimDisk};
pub use failure::{Failure, FailureClass, TaskInfo, TaskState};
pub use faults::FaultError;
pub use ids::{NodeId, TaskId};
pub use net::{Direction, Latency, LinkConfig, LossEffect, NetStats};
pub use node::{Life, NodeContext, NodeInfo};
pub use plan::{Fault, FaultEvent, FaultPlan, FaultProfile, PlanError};
pub use report::Trace;
pub use scheduler::{Scheduler, SchedulerKind};
pub use sim::{Progress, RunEnd, Sim};
pub use trace::{Source, TraceCapture, TraceConfig, TraceRecord};
