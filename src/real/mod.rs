//! The real world: the runtime traits implemented on tokio, real sockets
//! (HTTP + WebSocket) and real processes.

// Used by the `serve` and `agent` commands as they are wired up; until then
// parts of them are only reached from tests.
#[allow(dead_code)]
pub mod launcher;
#[allow(dead_code)]
pub mod runtime;
