//! faultline-core: the job supervisor and its agent, written against the
//! runtime traits in [`runtime`] so the same code runs on tokio in production
//! and inside the deterministic simulator (`faultline-sim`).
//!
//! * [`runtime`]: the `Runtime`, `Net` and `Launcher` traits and their contracts;
//! * [`protocol`] and [`codec`]: the versioned wire messages and their one codec.
//!
//! `core` has no tokio runtime, no sockets, no clock and no randomness of its
//! own; `clippy.toml` in this crate forbids the APIs that would bring them in.

pub mod agent;
pub mod codec;
pub mod duration;
pub mod protocol;
pub mod runtime;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
