//! Test doubles for code written against the runtime traits: a manual
//! executor with a virtual clock ([`ManualRuntime`]), an in-memory network
//! ([`FakeNet`], [`FakePeer`]) and a launcher whose processes end on command
//! ([`FakeLauncher`]).
//!
//! Compiled for this crate's own tests and, for other crates' tests, behind
//! the `testkit` feature:
//! `faultline-core = { workspace = true, features = ["testkit"] }` in
//! `[dev-dependencies]`.
//!
//! Everything here is single-threaded and deterministic: nothing runs until
//! the test calls [`ManualRuntime::run_until_idle`] or advances the clock,
//! and the same calls in the same order give the same interleaving. It is
//! the small brother of the simulator: no scheduling choices, no faults
//! beyond what the test does by hand (reset a connection, refuse connects,
//! end a process), which keeps unit tests short and exact.

mod launcher;
mod net;
mod runtime;

pub use launcher::{FakeLauncher, FakeProcess, KILL_SIGNAL};
pub use net::{FakeNet, FakePeer, FRAMES_IN_FLIGHT_MAX};
pub use runtime::{ManualRuntime, TaskResult, POLLS_PER_IDLE_MAX, TIMERS_PER_ADVANCE_MAX};
