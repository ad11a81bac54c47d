//! The real world: the runtime traits implemented on tokio, real sockets
//! (HTTP + WebSocket) and real processes.
//!
//! * [`runtime`]: core's `Runtime` on tokio; [`launcher`]: jobs as processes
//!   in their own process groups;
//! * [`http`]: the supervisor's HTTP API and agent endpoint (axum, one port),
//!   served by [`listener`]'s accept loop;
//! * [`ws`]: core's `Connection` over WebSockets, and `TokioNet` for agents;
//! * [`backend`]: the supervisor behind the HTTP layer;
//! * [`client`]: the HTTP client the CLI uses;
//! * [`config`]: the `serve` configuration file;
//! * [`datadir`]: the data directory (tokens, URL) and [`store`], the seam
//!   where the job store is opened; [`sqlite`], the SQLite job store;
//! * [`local_agents`]: agents started by `serve --local-agents`;
//! * [`logging`]: the tracing subscriber.

pub mod backend;
pub mod client;
pub mod config;
pub mod datadir;
pub mod http;
#[allow(dead_code)] // parts of the launcher are only reached from its tests
pub mod launcher;
pub mod listener;
pub mod local_agents;
pub mod logging;
#[allow(dead_code)] // parts of the runtime are only reached from its tests
pub mod runtime;
pub mod sqlite;
pub mod store;
pub mod ws;
