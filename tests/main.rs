//! Integration tests of the whole workspace, in one binary.
//! Each module under `tests/` covers one area; `support/` holds shared helpers.

mod catalogue;
mod cli;
mod e2e;
mod e2e_agents;
mod e2e_local;
mod e2e_restart;
mod e2e_security;
mod harness;
mod harness_flaws;
mod sim;
mod store;
mod store_cluster;
mod support;
