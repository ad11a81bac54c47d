//! The real world: the runtime traits implemented on tokio, real sockets
//! (HTTP + WebSocket) and real processes.
//!
//! * [`http`]: the supervisor's HTTP API and agent endpoint (axum, one port);
//! * [`ws`]: core's `Connection` over WebSockets, and `TokioNet` for agents;
//! * [`client`]: the HTTP client the CLI uses;
//! * [`config`]: the `serve` configuration file;
//! * [`datadir`]: the data directory (tokens, URL) and [`store`], the seam
//!   where the job store is opened;
//! * [`logging`]: the tracing subscriber.
#![allow(dead_code)] // parts are wired into the CLI as the supervisor and agent land

pub mod client;
pub mod config;
pub mod datadir;
pub mod http;
pub mod logging;
pub mod store;
pub mod ws;
