//! faultline-sim: a seeded, single-threaded deterministic simulator that
//! implements faultline-core's runtime traits. It knows nothing of jobs.
