//! [`FakeNet`]: an in-memory [`Net`] whose far ends the test holds as
//! [`FakePeer`]s.
//!
//! A connection is two [`Pipe`]s, one per direction. Each pipe holds the
//! frames in flight and, once the connection is over, how it ended; a closed
//! pipe still delivers the frames queued before the close, a reset pipe
//! drops them. Frames are JSON in the [`codec`](crate::codec) envelope, so
//! tests exchange protocol messages with the code under test.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::runtime::lock;
use crate::codec;
use crate::runtime::{
    BoxFuture, Connection, FrameReceiver, FrameSender, Listener, Net, NetError, RecvFrames,
    SendFrames, MAX_FRAME_BYTES,
};

/// How many frames one direction of a fake connection may hold before the
/// test is declared broken (a peer that is never read from).
pub const FRAMES_IN_FLIGHT_MAX: usize = 10_000;

/// An in-memory network for unit tests.
///
/// * Outgoing: [`Net::connect`] to any address succeeds unless the test
///   refuses it ([`refuse_connections`](FakeNet::refuse_connections)); each
///   accepted connection's far end waits in
///   [`take_peer`](FakeNet::take_peer).
/// * Incoming: [`Net::listen`] registers a port; [`dial`](FakeNet::dial)
///   opens a connection to it and returns the test's end.
///
/// Cloning gives another handle on the same network.
#[derive(Clone, Default)]
pub struct FakeNet {
    state: Arc<Mutex<NetState>>,
}

#[derive(Default)]
struct NetState {
    refusing: bool,
    connects: Vec<String>,
    peers: VecDeque<FakePeer>,
    listeners: BTreeMap<u16, Arc<Mutex<Backlog>>>,
}

#[derive(Default)]
struct Backlog {
    connections: VecDeque<Connection>,
    waker: Option<Waker>,
    closed: bool,
}

impl FakeNet {
    /// A network that accepts every connect.
    pub fn new() -> FakeNet {
        FakeNet::default()
    }

    /// From now on, refuse (`true`) or accept (`false`) outgoing connects.
    pub fn refuse_connections(&self, refusing: bool) {
        lock(&self.state).refusing = refusing;
    }

    /// Every address passed to [`Net::connect`] so far, refused or not.
    pub fn connects(&self) -> Vec<String> {
        lock(&self.state).connects.clone()
    }

    /// The far end of the oldest accepted connection not yet taken.
    pub fn take_peer(&self) -> Option<FakePeer> {
        lock(&self.state).peers.pop_front()
    }

    /// Open a connection to the listener on `port`, as a remote node would.
    pub fn dial(&self, port: u16) -> Result<FakePeer, NetError> {
        let backlog = lock(&self.state)
            .listeners
            .get(&port)
            .cloned()
            .ok_or_else(|| NetError::Refused(format!("nothing listens on port {port}")))?;
        let mut backlog = lock(&backlog);
        if backlog.closed {
            return Err(NetError::Refused(format!(
                "listener on port {port} is gone"
            )));
        }
        let (connection, peer) = pair(format!("dialer:{port}"));
        backlog.connections.push_back(connection);
        if let Some(waker) = backlog.waker.take() {
            waker.wake();
        }
        Ok(peer)
    }
}

impl Net for FakeNet {
    fn listen(&self, port: u16) -> Result<Box<dyn Listener>, NetError> {
        let mut state = lock(&self.state);
        if state
            .listeners
            .get(&port)
            .is_some_and(|backlog| !lock(backlog).closed)
        {
            return Err(NetError::AddressInUse(format!("port {port}")));
        }
        let backlog = Arc::new(Mutex::new(Backlog::default()));
        state.listeners.insert(port, Arc::clone(&backlog));
        Ok(Box::new(FakeListener { backlog }))
    }

    fn connect(&self, addr: &str) -> BoxFuture<'static, Result<Connection, NetError>> {
        let mut state = lock(&self.state);
        state.connects.push(addr.to_owned());
        let result = if state.refusing {
            Err(NetError::Refused(format!("{addr} refuses connections")))
        } else {
            let (connection, peer) = pair(addr.to_owned());
            state.peers.push_back(peer);
            Ok(connection)
        };
        Box::pin(async move { result })
    }
}

struct FakeListener {
    backlog: Arc<Mutex<Backlog>>,
}

impl Listener for FakeListener {
    fn accept(&mut self) -> BoxFuture<'_, Result<Connection, NetError>> {
        Box::pin(futures::future::poll_fn(move |context| {
            let mut backlog = lock(&self.backlog);
            match backlog.connections.pop_front() {
                Some(connection) => Poll::Ready(Ok(connection)),
                None => {
                    backlog.waker = Some(context.waker().clone());
                    Poll::Pending
                }
            }
        }))
    }
}

impl Drop for FakeListener {
    fn drop(&mut self) {
        lock(&self.backlog).closed = true;
    }
}

/// One direction of a connection.
#[derive(Default)]
struct Pipe {
    frames: VecDeque<Vec<u8>>,
    end: Option<NetError>,
    waker: Option<Waker>,
}

impl Pipe {
    fn push(&mut self, frame: Vec<u8>) -> Result<(), NetError> {
        if let Some(end) = &self.end {
            return Err(end.clone());
        }
        if frame.len() > MAX_FRAME_BYTES {
            return Err(NetError::FrameTooLarge {
                size: frame.len(),
                limit: MAX_FRAME_BYTES,
            });
        }
        assert!(
            self.frames.len() < FRAMES_IN_FLIGHT_MAX,
            "fake connection holds {FRAMES_IN_FLIGHT_MAX} unread frames: nobody reads this end"
        );
        self.frames.push_back(frame);
        self.wake();
        Ok(())
    }

    fn pop(&mut self) -> Option<Result<Vec<u8>, NetError>> {
        match self.frames.pop_front() {
            Some(frame) => Some(Ok(frame)),
            None => self.end.clone().map(Err),
        }
    }

    fn end(&mut self, how: NetError) {
        if self.end.is_none() {
            if how == NetError::Reset {
                self.frames.clear();
            }
            self.end = Some(how);
        }
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Both directions, shared by the two ends.
struct Link {
    /// Frames from the connecting side to the accepting side.
    forward: Mutex<Pipe>,
    /// Frames from the accepting side to the connecting side.
    backward: Mutex<Pipe>,
}

impl Link {
    fn close(&self) {
        lock(&self.forward).end(NetError::Closed);
        lock(&self.backward).end(NetError::Closed);
    }

    fn reset(&self) {
        lock(&self.forward).end(NetError::Reset);
        lock(&self.backward).end(NetError::Reset);
    }
}

#[derive(Clone, Copy)]
enum Side {
    Connecting,
    Accepting,
}

struct End {
    link: Arc<Link>,
    side: Side,
}

impl End {
    fn outgoing(&self) -> &Mutex<Pipe> {
        match self.side {
            Side::Connecting => &self.link.forward,
            Side::Accepting => &self.link.backward,
        }
    }

    fn incoming(&self) -> &Mutex<Pipe> {
        match self.side {
            Side::Connecting => &self.link.backward,
            Side::Accepting => &self.link.forward,
        }
    }
}

impl SendFrames for End {
    fn send(&self, frame: Vec<u8>) -> Result<(), NetError> {
        lock(self.outgoing()).push(frame)
    }

    fn close(&self) {
        self.link.close();
    }

    fn is_closed(&self) -> bool {
        lock(self.outgoing()).end.is_some()
    }
}

impl RecvFrames for End {
    fn recv(&mut self) -> BoxFuture<'_, Result<Vec<u8>, NetError>> {
        Box::pin(futures::future::poll_fn(move |context| {
            let mut pipe = lock(self.incoming());
            match pipe.pop() {
                Some(result) => Poll::Ready(result),
                None => {
                    pipe.waker = Some(context.waker().clone());
                    Poll::Pending
                }
            }
        }))
    }
}

/// A connection for the code under test and the test's end of it.
fn pair(peer_name: String) -> (Connection, FakePeer) {
    let link = Arc::new(Link {
        forward: Mutex::new(Pipe::default()),
        backward: Mutex::new(Pipe::default()),
    });
    let end = |side| End {
        link: Arc::clone(&link),
        side,
    };
    let connection = Connection {
        sender: FrameSender::new(Arc::new(end(Side::Connecting))),
        receiver: FrameReceiver::new(Box::new(end(Side::Connecting))),
        peer: peer_name,
    };
    let peer = FakePeer {
        end: end(Side::Accepting),
    };
    (connection, peer)
}

/// The test's end of a fake connection: read what the code under test sent,
/// answer it, close or reset the connection. Never blocks.
pub struct FakePeer {
    end: End,
}

impl FakePeer {
    /// Every frame received so far, decoded as `T`. Panics on a frame that is
    /// not a `T`: the code under test spoke out of protocol.
    pub fn received<T: DeserializeOwned>(&self) -> Vec<T> {
        let mut pipe = lock(self.end.incoming());
        pipe.frames
            .drain(..)
            .map(|frame| {
                codec::decode(&frame).unwrap_or_else(|error| {
                    panic!(
                        "undecodable frame {:?}: {error}",
                        String::from_utf8_lossy(&frame)
                    )
                })
            })
            .collect()
    }

    /// Send `message`, encoded by the codec.
    pub fn send<T: Serialize>(&self, message: &T) -> Result<(), NetError> {
        self.send_frame(codec::encode(message))
    }

    /// Send raw bytes (to exercise decode errors).
    pub fn send_frame(&self, frame: Vec<u8>) -> Result<(), NetError> {
        lock(self.end.outgoing()).push(frame)
    }

    /// Close in order: frames already sent are still delivered.
    pub fn close(&self) {
        self.end.link.close();
    }

    /// Reset: frames in flight are lost and both ends see `Reset`.
    pub fn reset(&self) {
        self.end.link.reset();
    }

    /// Whether the connection is over (closed or reset by either end).
    pub fn is_closed(&self) -> bool {
        lock(self.end.incoming()).end.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AgentMessage, SupervisorMessage};
    use crate::testkit::ManualRuntime;

    #[test]
    fn frames_travel_both_ways_and_close_delivers_queued_frames_first() {
        let runtime = ManualRuntime::new(1);
        let net = FakeNet::new();
        let connecting = runtime.start("connect", net.connect("sup:1"));
        runtime.run_until_idle();
        let mut connection = connecting
            .take()
            .expect("connect resolved")
            .expect("accepted");
        let peer = net.take_peer().expect("far end");
        assert_eq!(net.connects(), ["sup:1"]);

        connection
            .sender
            .send(codec::encode(&AgentMessage::Heartbeat { seq: 4 }))
            .expect("send");
        assert_eq!(
            peer.received::<AgentMessage>(),
            [AgentMessage::Heartbeat { seq: 4 }]
        );

        peer.send(&SupervisorMessage::HeartbeatAck { seq: 4 })
            .expect("send");
        peer.close();
        let received = runtime.start("recv", async move {
            let first = connection.receiver.recv().await;
            let second = connection.receiver.recv().await;
            (first, second)
        });
        runtime.run_until_idle();
        let (first, second) = received.take().expect("both receives resolved");
        let ack: SupervisorMessage = codec::decode(&first.expect("queued frame")).expect("decode");
        assert_eq!(ack, SupervisorMessage::HeartbeatAck { seq: 4 });
        assert_eq!(second, Err(NetError::Closed));
    }

    #[test]
    fn reset_loses_frames_in_flight_and_fails_later_sends() {
        let net = FakeNet::new();
        let runtime = ManualRuntime::new(1);
        let connecting = runtime.start("connect", net.connect("sup:1"));
        runtime.run_until_idle();
        let connection = connecting.take().expect("resolved").expect("accepted");
        let peer = net.take_peer().expect("far end");
        connection.sender.send(b"lost".to_vec()).expect("send");
        peer.reset();
        assert!(peer.received::<AgentMessage>().is_empty());
        assert!(connection.sender.is_closed());
        assert_eq!(connection.sender.send(b"x".to_vec()), Err(NetError::Reset));
    }

    #[test]
    fn refused_connects_are_recorded_and_fail() {
        let net = FakeNet::new();
        net.refuse_connections(true);
        let runtime = ManualRuntime::new(1);
        let connecting = runtime.start("connect", net.connect("sup:1"));
        runtime.run_until_idle();
        assert!(matches!(connecting.take(), Some(Err(NetError::Refused(_)))));
        assert_eq!(net.connects(), ["sup:1"]);
        assert!(net.take_peer().is_none());
    }

    #[test]
    fn dial_reaches_a_listener_and_a_second_listen_is_refused() {
        let net = FakeNet::new();
        let runtime = ManualRuntime::new(1);
        let mut listener = net.listen(7).expect("free port");
        assert!(matches!(net.listen(7), Err(NetError::AddressInUse(_))));
        assert!(matches!(net.dial(8), Err(NetError::Refused(_))));
        let peer = net.dial(7).expect("listening");
        let accepted = runtime.start("accept", async move {
            let connection = listener.accept().await.expect("accepted");
            connection
                .sender
                .send(codec::encode(&SupervisorMessage::HeartbeatAck { seq: 1 }))
        });
        runtime.run_until_idle();
        assert_eq!(accepted.take(), Some(Ok(())));
        assert_eq!(
            peer.received::<SupervisorMessage>(),
            [SupervisorMessage::HeartbeatAck { seq: 1 }]
        );
    }
}
