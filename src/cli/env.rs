//! Every environment variable faultline reads, in one place.
//!
//! | variable | used by | meaning |
//! |---|---|---|
//! | `FAULTLINE_URL` | `job`, `status` | the supervisor's URL (`--url`) |
//! | `FAULTLINE_TOKEN` | `job`, `status` | the user's token (`--token`) |
//! | `FAULTLINE_AGENT_TOKEN` | `agent` | the agent's token (`--token`) |
//! | `FAULTLINE_DATA` | `serve`, `job`, `status` | the data directory (`--data`) |
//! | `FAULTLINE_LOG` | every command | log filter (`info`, `faultline=debug`); falls back to `RUST_LOG` |

/// The supervisor's URL for the client commands.
pub const URL: &str = "FAULTLINE_URL";
/// The user's token for the client commands.
pub const TOKEN: &str = "FAULTLINE_TOKEN";
/// The agent's token.
pub const AGENT_TOKEN: &str = "FAULTLINE_AGENT_TOKEN";
/// The data directory.
pub const DATA: &str = "FAULTLINE_DATA";
/// The log filter.
pub const LOG: &str = "FAULTLINE_LOG";
