//! faultline-scenarios: the supervisor's world on the simulator.
//!
//! A [`Scenario`] (TOML, `catalogue/*.toml`) names a topology, a workload
//! profile, a fault profile, a scheduler and timing. [`run`] builds the
//! world for one seed, a supervisor node, agent nodes and client nodes on
//! the simulator, plays the workload and the fault plan (both generated up
//! front from the seed, or given explicitly), checks the oracles after
//! every step, and reports a [`RunReport`].
//!
//! * [`scenario`]: scenario files — topology, workload, faults, timing;
//! * [`topology`]: node names, ports, tokens, supervisor and agent configs;
//! * [`workload`]: the clients' timed actions ([`generate_workload`]);
//! * [`fault_plan`]: fault plans with swarm testing ([`generate_fault_plan`]);
//! * [`world`]: the nodes, the simulated launcher and execution ledger,
//!   the clients and what they observed;
//! * [`oracle`]: safety after every step, liveness after heal, durability,
//!   leaks;
//! * [`probes`]: the named sometimes-probes ([`PROBES`]);
//! * [`report`]: [`RunOptions`], [`RunReport`], [`Outcome`], [`Failure`];
//! * [`catalogue`]: the shipped scenarios ([`catalogue_dir`],
//!   [`load_catalogue`]);
//! * [`shrink`]: delta debugging of a failing run's explicit events;
//! * [`store`]: core's `Store` on the simulator's disk (`SimStore`);
//! * [`testing`]: seeds in `cargo test` for any scenario, from `FAULTLINE_SEED*`.

pub mod catalogue;
pub mod fault_plan;
pub mod oracle;
pub mod probes;
pub mod report;
mod run;
pub mod scenario;
pub mod shrink;
pub mod store;
pub mod testing;
pub mod topology;
pub mod workload;
pub mod world;

pub use catalogue::{catalogue_dir, find_scenario, load_catalogue};
pub use fault_plan::{generate_fault_plan, generate_faults, GeneratedFaults};
pub use probes::PROBES;
pub use report::{Failure, FailureKind, Outcome, RunOptions, RunReport, TraceMode};
pub use run::{check_plan, run, scheduler_kind};
pub use scenario::{parse_scheduler, Scenario, ScenarioError, SchedulerChoice};
pub use workload::{generate_workload, Action, ClientAction, Workload, WorkloadError};
