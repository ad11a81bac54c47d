//! The real world: the runtime traits implemented on tokio, real sockets
//! (HTTP + WebSocket) and real processes.
