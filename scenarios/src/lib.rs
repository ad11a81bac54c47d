//! faultline-scenarios: the supervisor's world on the simulator.
//!
//! * [`scenario`]: scenario files (TOML) — topology, workload, faults, timing.
pub mod scenario;
