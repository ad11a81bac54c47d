//! Helpers shared by the integration tests.

pub mod cluster;
pub mod http;

use std::path::PathBuf;
use std::process::Command;

/// The `faultline` binary built for these tests.
pub fn faultline() -> Command {
    Command::new(binary_path())
}

/// Path of the `faultline` binary built for these tests.
pub fn binary_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_faultline"))
}
