//! [`SimNet`]: `faultline_core::runtime::Net` for one node of the
//! simulation, and the listener, sender and receiver objects it hands out.
//!
//! Addresses are `node:port`. Handle objects hold only ids; every operation
//! locks the world briefly. Dropping the last sender and the receiver of an
//! end closes it in order; dropping a listener resets the connections it
//! had accepted but not yet handed out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use faultline_core::runtime::{
    BoxFuture, Connection, FrameReceiver, FrameSender, Listener, Net, NetError, RecvFrames,
    SendFrames,
};

use super::link::Traffic;
use super::{Delivery, ListenerState, PendingConnect};
use crate::ids::NodeId;
use crate::world::Shared;

/// The simulator's `Net` for one node incarnation.
pub struct SimNet {
    shared: Arc<Shared>,
    node: NodeId,
    incarnation: u32,
}

impl SimNet {
    pub(crate) fn new(shared: Arc<Shared>, node: NodeId, incarnation: u32) -> SimNet {
        SimNet {
            shared,
            node,
            incarnation,
        }
    }
}

/// Split `node:port`.
fn parse_address(address: &str) -> Result<(&str, u16), NetError> {
    let refused = || NetError::Refused(format!("{address:?} is not a node:port address"));
    let (node, port) = address.rsplit_once(':').ok_or_else(refused)?;
    let port = port.parse::<u16>().map_err(|_| refused())?;
    if node.is_empty() {
        return Err(refused());
    }
    Ok((node, port))
}

impl Net for SimNet {
    fn listen(&self, port: u16) -> Result<Box<dyn Listener>, NetError> {
        let mut world = self.shared.world();
        if !world.is_current(self.node, self.incarnation) {
            return Err(NetError::Refused(format!(
                "{} is down",
                world.node(self.node).name
            )));
        }
        if world.net.listeners.contains_key(&(self.node, port)) {
            return Err(NetError::AddressInUse(format!(
                "{}:{port}",
                world.node(self.node).name
            )));
        }
        let id = world.net.next_id();
        world.net.listeners.insert(
            (self.node, port),
            ListenerState {
                id,
                queue: Default::default(),
                waker: None,
            },
        );
        Ok(Box::new(SimListener {
            shared: Arc::clone(&self.shared),
            node: self.node,
            port,
            id,
        }))
    }

    fn connect(&self, address: &str) -> BoxFuture<'static, Result<Connection, NetError>> {
        let shared = Arc::clone(&self.shared);
        let request = self.request_connection(address);
        Box::pin(ConnectFuture {
            shared,
            state: match request {
                Ok(request) => ConnectState::Waiting(request),
                Err(error) => ConnectState::Failed(Some(error)),
            },
        })
    }
}

impl SimNet {
    /// Send a connection request towards `address`; refuse at once what can
    /// be refused without crossing the network.
    fn request_connection(&self, address: &str) -> Result<u64, NetError> {
        let (name, port) = parse_address(address)?;
        let mut world = self.shared.world();
        if !world.is_current(self.node, self.incarnation) {
            return Err(NetError::Refused("the connecting node is down".to_owned()));
        }
        let target = world
            .node_named(name)
            .ok_or_else(|| NetError::Refused(format!("no node named {name:?}")))?;
        if world.is_cut(self.node, target) || world.is_cut(target, self.node) {
            world.net.stats.connections_refused += 1;
            return Err(NetError::Refused(format!("{name} is unreachable")));
        }
        let request = world.net.next_id();
        world.net.connects.insert(
            request,
            PendingConnect {
                node: self.node,
                peer: address.to_owned(),
                result: None,
                waker: None,
            },
        );
        let delivery = Delivery::Connect {
            request,
            from: self.node,
            from_incarnation: self.incarnation,
            to: target,
            port,
        };
        world.transmit(self.node, target, delivery, Traffic::Signal);
        Ok(request)
    }
}

/// Build the handle objects of end `side` of `conn`.
fn connection(shared: &Arc<Shared>, conn: u64, side: usize, peer: String) -> Connection {
    Connection {
        sender: FrameSender::new(Arc::new(SimSender {
            shared: Arc::clone(shared),
            conn,
            side,
        })),
        receiver: FrameReceiver::new(Box::new(SimReceiver {
            shared: Arc::clone(shared),
            conn,
            side,
        })),
        peer,
    }
}

enum ConnectState {
    Waiting(u64),
    Failed(Option<NetError>),
    Done,
}

struct ConnectFuture {
    shared: Arc<Shared>,
    state: ConnectState,
}

impl Future for ConnectFuture {
    type Output = Result<Connection, NetError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let request = match &mut self.state {
            ConnectState::Waiting(request) => *request,
            ConnectState::Failed(error) => {
                let error = error
                    .take()
                    .expect("a connect future is not polled after completion");
                self.state = ConnectState::Done;
                return Poll::Ready(Err(error));
            }
            ConnectState::Done => panic!("a connect future is not polled after completion"),
        };
        let mut world = self.shared.world();
        let Some(pending) = world.net.connects.get_mut(&request) else {
            // Only a future kept outside its node's tasks outlives a kill.
            drop(world);
            self.state = ConnectState::Done;
            return Poll::Ready(Err(NetError::Reset));
        };
        let Some(result) = pending.result.take() else {
            pending.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let pending = world.net.connects.remove(&request).expect("present above");
        drop(world);
        self.state = ConnectState::Done;
        Poll::Ready(result.map(|conn| connection(&self.shared, conn, 0, pending.peer)))
    }
}

impl Drop for ConnectFuture {
    fn drop(&mut self) {
        let ConnectState::Waiting(request) = self.state else {
            return;
        };
        let mut world = self.shared.world();
        if let Some(pending) = world.net.connects.remove(&request) {
            if let Some(Ok(conn)) = pending.result {
                world.abandon_end(conn, 0);
            }
        }
    }
}

struct SimListener {
    shared: Arc<Shared>,
    node: NodeId,
    port: u16,
    id: u64,
}

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, Result<Connection, NetError>> {
        Box::pin(std::future::poll_fn(move |cx| self.poll_accept(cx)))
    }
}

impl SimListener {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<Connection, NetError>> {
        let mut world = self.shared.world();
        let Some(listener) = world
            .net
            .listeners
            .get_mut(&(self.node, self.port))
            .filter(|listener| listener.id == self.id)
        else {
            return Poll::Ready(Err(NetError::Reset));
        };
        let Some(conn) = listener.queue.pop_front() else {
            listener.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let client = world
            .net
            .conns
            .get(&conn)
            .map(|connection| connection.ends[0].node);
        let peer = client.map_or_else(String::new, |client| world.node(client).name.to_string());
        drop(world);
        Poll::Ready(Ok(connection(&self.shared, conn, 1, peer)))
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let mut world = self.shared.world();
        let key = (self.node, self.port);
        if world
            .net
            .listeners
            .get(&key)
            .is_some_and(|listener| listener.id == self.id)
        {
            let listener = world.net.listeners.remove(&key).expect("checked above");
            for conn in listener.queue {
                world.abandon_end(conn, 1);
            }
        }
    }
}

struct SimSender {
    shared: Arc<Shared>,
    conn: u64,
    side: usize,
}

impl SendFrames for SimSender {
    fn send(&self, frame: Vec<u8>) -> Result<(), NetError> {
        self.shared.world().send_frame(self.conn, self.side, frame)
    }

    fn close(&self) {
        self.shared.world().close_end(self.conn, self.side);
    }

    fn is_closed(&self) -> bool {
        self.shared.world().is_end_closed(self.conn, self.side)
    }
}

impl Drop for SimSender {
    fn drop(&mut self) {
        self.shared.world().release_handle(self.conn, self.side);
    }
}

struct SimReceiver {
    shared: Arc<Shared>,
    conn: u64,
    side: usize,
}

impl RecvFrames for SimReceiver {
    fn recv(&mut self) -> BoxFuture<'_, Result<Vec<u8>, NetError>> {
        Box::pin(std::future::poll_fn(move |cx| {
            self.shared.world().poll_recv(self.conn, self.side, cx)
        }))
    }
}

impl Drop for SimReceiver {
    fn drop(&mut self) {
        self.shared.world().release_handle(self.conn, self.side);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_node_colon_port() {
        assert_eq!(parse_address("sup:7070"), Ok(("sup", 7070)));
        assert!(parse_address("sup").is_err());
        assert!(parse_address(":1").is_err());
        assert!(parse_address("sup:99999").is_err());
    }
}
