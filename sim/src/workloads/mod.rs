//! The simulator's own micro-workloads, for `faultline sim bench` and the
//! self-tests.
