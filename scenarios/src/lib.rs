//! faultline-scenarios: the supervisor's world on the simulator.
//!
//! * [`scenario`]: scenario files (TOML) — topology, workload, faults, timing;
//! * [`shrink`]: delta debugging of a failing run's explicit events.

pub mod scenario;
pub mod shrink;
