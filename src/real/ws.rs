//! Core's [`Connection`] over a WebSocket, for both ends of the agent link.
//!
//! The supervisor accepts agents on axum's WebSocket (`GET /v1/agent`); an
//! agent dials out with tokio-tungstenite through [`TokioNet`]. Both sockets
//! go through the same adapter:
//!
//! * the [`FrameSender`] puts frames on a bounded queue drained by a writer
//!   task, so sending never awaits (the contract of
//!   [`SendFrames::send`]). A peer that stops reading fills the queue; the
//!   connection is then reset rather than buffered without bound;
//! * the [`FrameReceiver`] reads the socket directly: binary and text
//!   messages are frames, pings and pongs are answered by the WebSocket layer
//!   and skipped, a close message ends the connection in order;
//! * frames larger than [`MAX_FRAME_BYTES`] are refused on send, and a peer
//!   that sends one is disconnected with close code 1009 and a logged reason.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use faultline_core::runtime::{
    BoxFuture, Connection, FrameReceiver, FrameSender, Listener, Net, NetError, RecvFrames,
    SendFrames, MAX_FRAME_BYTES,
};
use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite;

/// Frames a connection may have queued for its writer task. A peer that lets
/// this many pile up is not reading; its connection is reset.
pub const SEND_QUEUE_FRAMES_MAX: usize = 4096;

/// WebSocket close code for an orderly close.
const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code for a protocol violation.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// WebSocket close code for a message larger than the receiver accepts.
const CLOSE_TOO_BIG: u16 = 1009;

/// What the writer task is asked to do.
enum Outgoing {
    Frame(Vec<u8>),
    Close { code: u16, reason: &'static str },
}

/// One WebSocket message, as the adapter sees it.
enum Incoming {
    Data(Vec<u8>),
    Control,
    Close,
}

/// The two WebSocket libraries' message types, seen through one lens.
trait WsMessage: Send + Sized + 'static {
    fn binary(frame: Vec<u8>) -> Self;
    fn close(code: u16, reason: &'static str) -> Self;
    fn classify(self) -> Incoming;
}

impl WsMessage for axum::extract::ws::Message {
    fn binary(frame: Vec<u8>) -> Self {
        axum::extract::ws::Message::Binary(frame.into())
    }
    fn close(code: u16, reason: &'static str) -> Self {
        axum::extract::ws::Message::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: reason.into(),
        }))
    }
    fn classify(self) -> Incoming {
        use axum::extract::ws::Message;
        match self {
            Message::Binary(bytes) => Incoming::Data(bytes.to_vec()),
            Message::Text(text) => Incoming::Data(text.as_str().as_bytes().to_vec()),
            Message::Ping(_) | Message::Pong(_) => Incoming::Control,
            Message::Close(_) => Incoming::Close,
        }
    }
}

impl WsMessage for tungstenite::Message {
    fn binary(frame: Vec<u8>) -> Self {
        tungstenite::Message::Binary(frame.into())
    }
    fn close(code: u16, reason: &'static str) -> Self {
        tungstenite::Message::Close(Some(tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }))
    }
    fn classify(self) -> Incoming {
        use tungstenite::Message;
        match self {
            Message::Binary(bytes) => Incoming::Data(bytes.to_vec()),
            Message::Text(text) => Incoming::Data(text.as_str().as_bytes().to_vec()),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Incoming::Control,
            Message::Close(_) => Incoming::Close,
        }
    }
}

/// Connection state shared by the sender, the receiver and the writer task.
/// Moves only forward: open → closed or open → reset.
struct Shared {
    state: AtomicU8,
    peer: String,
    writer: OnceLock<AbortHandle>,
}

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const RESET: u8 = 2;

impl Shared {
    /// Move from open to `end`; false if the connection had already ended.
    fn end(&self, end: u8) -> bool {
        self.state
            .compare_exchange(OPEN, end, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn error(&self) -> Option<NetError> {
        match self.state.load(Ordering::Acquire) {
            OPEN => None,
            CLOSED => Some(NetError::Closed),
            _ => Some(NetError::Reset),
        }
    }

    /// Reset the connection at once: the writer stops where it is.
    fn reset(&self) {
        self.end(RESET);
        if let Some(writer) = self.writer.get() {
            writer.abort();
        }
    }
}

struct WsSender {
    queue: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

impl WsSender {
    /// Queue `outgoing` or, if the writer is hopelessly behind, reset.
    fn enqueue(&self, outgoing: Outgoing) -> Result<(), NetError> {
        match self.queue.try_send(outgoing) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    peer = %self.shared.peer,
                    queued_max = SEND_QUEUE_FRAMES_MAX,
                    "peer is not reading: send queue full, resetting the connection"
                );
                self.shared.reset();
                Err(NetError::Reset)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.end(RESET);
                Err(self.shared.error().unwrap_or(NetError::Reset))
            }
        }
    }
}

impl SendFrames for WsSender {
    fn send(&self, frame: Vec<u8>) -> Result<(), NetError> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(NetError::FrameTooLarge {
                size: frame.len(),
                limit: MAX_FRAME_BYTES,
            });
        }
        if let Some(error) = self.shared.error() {
            return Err(error);
        }
        self.enqueue(Outgoing::Frame(frame))
    }

    fn close(&self) {
        if self.shared.end(CLOSED) {
            // On a full queue `enqueue` resets instead: an orderly close is
            // impossible when the frames before it cannot be delivered.
            let _ = self.enqueue(Outgoing::Close {
                code: CLOSE_NORMAL,
                reason: "closed",
            });
        }
    }

    fn is_closed(&self) -> bool {
        self.shared.error().is_some()
    }
}

struct WsReceiver<S> {
    stream: SplitStream<S>,
    /// Asks the writer to send a close frame after a violation.
    queue: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    /// Set once the connection ended; returned forever after.
    ended: Option<NetError>,
}

impl<S, M, E> WsReceiver<S>
where
    S: Stream<Item = Result<M, E>> + Sink<M> + Send + Unpin + 'static,
    M: WsMessage,
    E: std::fmt::Display + Send + 'static,
{
    /// End the connection on a violation by the peer: log why, tell the
    /// peer with `code`, and report a reset from now on.
    fn refuse(&mut self, code: u16, reason: &'static str, detail: &str) -> NetError {
        tracing::warn!(peer = %self.shared.peer, detail, "closing connection: {reason}");
        let _ = self.queue.try_send(Outgoing::Close { code, reason });
        self.shared.end(RESET);
        self.ended = Some(NetError::Reset);
        NetError::Reset
    }

    async fn next_frame(&mut self) -> Result<Vec<u8>, NetError> {
        if let Some(error) = &self.ended {
            return Err(error.clone());
        }
        // Each turn consumes one message from the peer, so the loop is
        // bounded by what the peer sends; only control messages repeat it.
        loop {
            let message = match self.stream.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    let detail = error.to_string();
                    if detail.contains("without closing handshake") {
                        // The peer vanished (killed, network gone): not a violation.
                        tracing::debug!(peer = %self.shared.peer, "connection reset by the peer");
                        self.shared.end(RESET);
                        self.ended = Some(NetError::Reset);
                        return Err(NetError::Reset);
                    }
                    if detail.contains("Message too long")
                        || detail.contains("Space limit exceeded")
                    {
                        return Err(self.refuse(CLOSE_TOO_BIG, "frame too large", &detail));
                    }
                    return Err(self.refuse(CLOSE_PROTOCOL_ERROR, "transport error", &detail));
                }
                None => {
                    tracing::debug!(peer = %self.shared.peer, "connection dropped without a close");
                    self.shared.end(RESET);
                    self.ended = Some(NetError::Reset);
                    return Err(NetError::Reset);
                }
            };
            match message.classify() {
                Incoming::Data(frame) if frame.len() > MAX_FRAME_BYTES => {
                    let detail = format!("{} bytes, limit {MAX_FRAME_BYTES}", frame.len());
                    return Err(self.refuse(CLOSE_TOO_BIG, "frame too large", &detail));
                }
                Incoming::Data(frame) => return Ok(frame),
                Incoming::Control => continue,
                Incoming::Close => {
                    tracing::debug!(peer = %self.shared.peer, "peer closed the connection");
                    self.shared.end(CLOSED);
                    let error = self.shared.error().unwrap_or(NetError::Closed);
                    self.ended = Some(error.clone());
                    return Err(error);
                }
            }
        }
    }
}

impl<S, M, E> RecvFrames for WsReceiver<S>
where
    S: Stream<Item = Result<M, E>> + Sink<M> + Send + Unpin + 'static,
    M: WsMessage,
    E: std::fmt::Display + Send + 'static,
{
    fn recv(&mut self) -> BoxFuture<'_, Result<Vec<u8>, NetError>> {
        Box::pin(self.next_frame())
    }
}

/// Drain the queue into the socket until closed, dropped or broken.
async fn write_frames<S, M>(
    mut sink: SplitSink<S, M>,
    mut queue: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
) where
    S: Stream + Sink<M> + Send + 'static,
    M: WsMessage,
    <S as Sink<M>>::Error: std::fmt::Display,
{
    while let Some(outgoing) = queue.recv().await {
        match outgoing {
            Outgoing::Frame(frame) => {
                if let Err(error) = sink.send(M::binary(frame)).await {
                    tracing::debug!(peer = %shared.peer, %error, "write failed, connection reset");
                    shared.end(RESET);
                    return;
                }
            }
            Outgoing::Close { code, reason } => {
                let _ = sink.send(M::close(code, reason)).await;
                let _ = sink.close().await;
                return;
            }
        }
    }
    // Every sender is gone: nobody can write any more, so close in order.
    shared.end(CLOSED);
    let _ = sink
        .send(M::close(CLOSE_NORMAL, "connection dropped"))
        .await;
    let _ = sink.close().await;
}

/// Wrap an established WebSocket as a [`Connection`]. Spawns the writer
/// task, so it must be called inside a tokio runtime.
fn adapt<S, M, E>(socket: S, peer: String) -> Connection
where
    S: Stream<Item = Result<M, E>> + Sink<M> + Send + Unpin + 'static,
    <S as Sink<M>>::Error: std::fmt::Display,
    M: WsMessage,
    E: std::fmt::Display + Send + 'static,
{
    let (sink, stream) = socket.split();
    let (queue, queued) = mpsc::channel(SEND_QUEUE_FRAMES_MAX);
    let shared = Arc::new(Shared {
        state: AtomicU8::new(OPEN),
        peer: peer.clone(),
        writer: OnceLock::new(),
    });
    let writer = tokio::spawn(write_frames(sink, queued, Arc::clone(&shared)));
    shared
        .writer
        .set(writer.abort_handle())
        .expect("the writer handle is set once, right after the writer starts");
    let sender = WsSender {
        queue: queue.clone(),
        shared: Arc::clone(&shared),
    };
    let receiver = WsReceiver {
        stream,
        queue,
        shared,
        ended: None,
    };
    Connection {
        sender: FrameSender::new(Arc::new(sender)),
        receiver: FrameReceiver::new(Box::new(receiver)),
        peer,
    }
}

/// The supervisor's side: an upgraded axum WebSocket from an agent.
pub fn accept_socket(socket: axum::extract::ws::WebSocket, peer: String) -> Connection {
    adapt(socket, peer)
}

/// The WebSocket limits both ends enforce.
pub fn socket_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Core's [`Net`] on tokio, for agents: `connect` dials a supervisor's
/// WebSocket endpoint (`ws://host:port/v1/agent`).
///
/// `listen` is not offered: the supervisor accepts agents through its HTTP
/// server (axum), on the same port as the client API, and hands each
/// upgraded socket to core as a [`Connection`] (see [`accept_socket`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet;

impl Net for TokioNet {
    fn listen(&self, port: u16) -> Result<Box<dyn Listener>, NetError> {
        Err(NetError::Refused(format!(
            "port {port}: the tokio shell accepts connections through its HTTP server, not Net::listen"
        )))
    }

    fn connect(&self, addr: &str) -> BoxFuture<'static, Result<Connection, NetError>> {
        let url = addr.to_owned();
        Box::pin(async move {
            let (socket, _response) =
                tokio_tungstenite::connect_async_with_config(&url, Some(socket_config()), false)
                    .await
                    .map_err(|error| NetError::Refused(format!("{url}: {error}")))?;
            Ok(adapt(socket, url))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::extract::ws::WebSocketUpgrade;
    use axum::routing::get;

    /// A server that echoes every frame back, then the address to dial.
    async fn echo_server() -> String {
        async fn echo(mut connection: Connection) {
            while let Ok(frame) = connection.receiver.recv().await {
                if connection.sender.send(frame).is_err() {
                    return;
                }
            }
        }
        let app = axum::Router::new().route(
            "/v1/agent",
            get(|upgrade: WebSocketUpgrade| async move {
                upgrade
                    .max_message_size(MAX_FRAME_BYTES)
                    .on_upgrade(|socket| echo(accept_socket(socket, "test".into())))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("ws://{addr}/v1/agent")
    }

    #[tokio::test]
    async fn frames_round_trip_in_order() {
        let url = echo_server().await;
        let mut connection = TokioNet.connect(&url).await.expect("connect");
        for n in 0..50u8 {
            connection.sender.send(vec![n; 10]).expect("queue");
        }
        for n in 0..50u8 {
            assert_eq!(connection.receiver.recv().await, Ok(vec![n; 10]));
        }
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_sending() {
        let url = echo_server().await;
        let connection = TokioNet.connect(&url).await.expect("connect");
        let error = connection
            .sender
            .send(vec![0; MAX_FRAME_BYTES + 1])
            .expect_err("too large");
        assert!(matches!(error, NetError::FrameTooLarge { .. }));
        assert!(
            !connection.sender.is_closed(),
            "a refused frame is not fatal"
        );
    }

    #[tokio::test]
    async fn orderly_close_reaches_the_peer_as_closed() {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let (client, server) = tokio::join!(
            tokio_tungstenite::client_async("ws://local/v1/agent", client_end),
            tokio_tungstenite::accept_async(server_end),
        );
        let client = adapt(client.expect("client handshake").0, "client".into());
        let mut server = adapt(server.expect("server handshake"), "server".into());
        client.sender.send(b"last words".to_vec()).expect("queue");
        client.sender.close();
        assert!(client.sender.is_closed());
        assert_eq!(client.sender.send(vec![1]), Err(NetError::Closed));
        assert_eq!(server.receiver.recv().await, Ok(b"last words".to_vec()));
        assert_eq!(server.receiver.recv().await, Err(NetError::Closed));
        assert_eq!(server.receiver.recv().await, Err(NetError::Closed));
    }

    #[tokio::test]
    async fn a_peer_sending_an_oversized_frame_is_disconnected() {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let unlimited = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let (client, server) = tokio::join!(
            tokio_tungstenite::client_async_with_config("ws://local/", client_end, Some(unlimited)),
            tokio_tungstenite::accept_async_with_config(server_end, Some(socket_config())),
        );
        let mut raw_client = client.expect("client handshake").0;
        let mut server = adapt(server.expect("server handshake"), "server".into());
        let oversized = tungstenite::Message::Binary(vec![7u8; MAX_FRAME_BYTES + 1].into());
        // The server stops reading at the oversized header, so the client's
        // send may never finish: it runs on its own and is never awaited.
        let _sending = tokio::spawn(async move {
            let _ = raw_client.send(oversized).await;
            raw_client
        });
        assert_eq!(server.receiver.recv().await, Err(NetError::Reset));
        assert_eq!(server.receiver.recv().await, Err(NetError::Reset));
        assert!(server.sender.is_closed());
    }

    #[tokio::test]
    async fn dialing_nothing_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        let result = TokioNet.connect(&format!("ws://{addr}/v1/agent")).await;
        assert!(matches!(result, Err(NetError::Refused(_))));
    }
}
