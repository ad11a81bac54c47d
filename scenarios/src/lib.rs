//! faultline-scenarios: the supervisor's world on the simulator.
//!
//! * [`scenario`]: scenario files (TOML) — topology, workload, faults, timing;
//! * [`shrink`]: delta debugging of a failing run's explicit events;
//! * [`store`]: core's `Store` on the simulator's disk (`SimStore`).

pub mod scenario;
pub mod shrink;
pub mod store;
