//! Logs: `tracing` to stderr, filtered by `FAULTLINE_LOG` (or `RUST_LOG`).
//!
//! Core opens a span per op carrying its context (job, run, agent,
//! situation); the formatter prints the spans around every event, so each
//! line says which op it belongs to.

use tracing_subscriber::EnvFilter;

use crate::cli::env;

/// Install the global subscriber, with `default_filter` when neither
/// variable is set. A second call does nothing.
pub fn init(default_filter: &str) {
    let filter = std::env::var(env::LOG)
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
