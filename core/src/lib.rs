//! faultline-core: the job supervisor and its agent, written against the
//! runtime traits in [`runtime`] so the same code runs on tokio in production
//! and inside the deterministic simulator (`faultline-sim`).
//!
//! * [`runtime`]: the `Runtime`, `Net` and `Launcher` traits and their contracts;
//! * [`protocol`] and [`codec`]: the versioned wire messages and their one codec;
//! * [`config`]: the supervisor's configuration (pools, plans, users, agents, timeouts);
//! * [`duration`]: the one human-readable duration format (`90s`, `5m`, `2h`);
//! * [`job`], [`slots`], [`ops`], [`agents`]: the supervisor's pure state
//!   machines (job status, slot pools with RAII permits, op lifecycle with
//!   situations, agent sessions);
//! * [`store`]: durability of job records (`Store`, `MemoryStore`);
//!   `store_contract` (tests and feature `testkit`) is the suite every
//!   store implementation runs;
//! * [`supervisor`]: the async supervisor that drives those machines;
//! * [`client`]: one client call over `Net` (the simulator's clients);
//! * [`flaws`]: switches that re-introduce known bug classes (feature `flaws`).
//!
//! `core` has no tokio runtime, no sockets, no clock and no randomness of its
//! own; `clippy.toml` in this crate forbids the APIs that would bring them in.

pub mod agent;
pub mod agents;
pub mod client;
pub mod codec;
pub mod config;
pub mod duration;
pub mod flaws;
pub mod job;
pub mod ops;
pub mod protocol;
pub mod runtime;
pub mod slots;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod store_contract;
pub mod supervisor;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
