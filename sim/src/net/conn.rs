//! Connections: two ends, each with a queue of delivered frames, and what
//! happens when a message reaches an end.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use faultline_core::runtime::{Instant, NetError, MAX_FRAME_BYTES};
use tracing::Level;

use super::link::Traffic;
use super::Delivery;
use crate::ids::NodeId;
use crate::world::World;

/// The state of one end of a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum EndState {
    /// Sending and receiving.
    Open,
    /// This end closed: sends fail, `recv` reports `Closed`.
    Closed,
    /// The peer closed in order: queued frames can still be received, then
    /// `Closed`; sends fail with `Closed`.
    PeerClosed,
    /// Reset (fault or peer killed): everything fails with `Reset`.
    Reset,
    /// This end's node was killed, or nobody will ever hold this end.
    Gone,
}

/// One end of a connection.
pub(crate) struct End {
    pub node: NodeId,
    /// Frames delivered and not yet received, in arrival order.
    pub inbox: VecDeque<Vec<u8>>,
    pub state: EndState,
    /// The task waiting in `recv`.
    pub waker: Option<Waker>,
    /// The latest arrival time scheduled towards this end (keeps FIFO).
    pub arrival_last: Instant,
    /// Handle objects alive for this end: its sender and its receiver (2
    /// from creation until handed out, then counted down as they drop).
    pub handles: u8,
}

impl End {
    fn new(node: NodeId) -> End {
        End {
            node,
            inbox: VecDeque::new(),
            state: EndState::Open,
            waker: None,
            arrival_last: Instant::ZERO,
            handles: 2,
        }
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Reset this end now: queued frames are discarded.
    fn reset(&mut self) {
        if matches!(
            self.state,
            EndState::Open | EndState::Closed | EndState::PeerClosed
        ) {
            self.state = EndState::Reset;
            self.inbox.clear();
            self.wake();
        }
    }
}

/// A connection: `ends[0]` is the side that connected, `ends[1]` the side
/// that accepted.
pub(crate) struct Conn {
    pub ends: [End; 2],
}

impl World {
    /// Create a connection between `client` and `server`.
    pub fn open_conn(&mut self, client: (NodeId, u32), server: (NodeId, u32)) -> u64 {
        let id = self.net.next_id();
        self.net.conns.insert(
            id,
            Conn {
                ends: [End::new(client.0), End::new(server.0)],
            },
        );
        self.net.stats.connections_opened += 1;
        id
    }

    fn end_mut(&mut self, conn: u64, side: usize) -> Option<&mut End> {
        self.net
            .conns
            .get_mut(&conn)
            .map(|conn| &mut conn.ends[side])
    }

    /// `send` on end `side` of `conn`.
    pub fn send_frame(&mut self, conn: u64, side: usize, frame: Vec<u8>) -> Result<(), NetError> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(NetError::FrameTooLarge {
                size: frame.len(),
                limit: MAX_FRAME_BYTES,
            });
        }
        let connection = self.net.conns.get(&conn).ok_or(NetError::Reset)?;
        let (end, peer) = (&connection.ends[side], &connection.ends[1 - side]);
        match end.state {
            EndState::Open => {}
            EndState::Closed | EndState::PeerClosed => return Err(NetError::Closed),
            EndState::Reset | EndState::Gone => return Err(NetError::Reset),
        }
        let (from, to) = (end.node, peer.node);
        self.net.stats.frames_sent += 1;
        let delivery = Delivery::Frame {
            conn,
            side: 1 - side,
            frame,
        };
        self.transmit(from, to, delivery, Traffic::Data);
        Ok(())
    }

    /// `recv` on end `side` of `conn`.
    pub fn poll_recv(
        &mut self,
        conn: u64,
        side: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Vec<u8>, NetError>> {
        let Some(end) = self.end_mut(conn, side) else {
            return Poll::Ready(Err(NetError::Reset));
        };
        match end.state {
            EndState::Open | EndState::PeerClosed => {
                if let Some(frame) = end.inbox.pop_front() {
                    Poll::Ready(Ok(frame))
                } else if end.state == EndState::PeerClosed {
                    Poll::Ready(Err(NetError::Closed))
                } else {
                    if !end
                        .waker
                        .as_ref()
                        .is_some_and(|waker| waker.will_wake(cx.waker()))
                    {
                        end.waker = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
            EndState::Closed => Poll::Ready(Err(NetError::Closed)),
            EndState::Reset | EndState::Gone => Poll::Ready(Err(NetError::Reset)),
        }
    }

    /// Whether end `side` of `conn` knows the connection is over.
    pub fn is_end_closed(&self, conn: u64, side: usize) -> bool {
        self.net
            .conns
            .get(&conn)
            .is_none_or(|connection| connection.ends[side].state != EndState::Open)
    }

    /// Close end `side` of `conn` in order.
    pub fn close_end(&mut self, conn: u64, side: usize) {
        let Some(connection) = self.net.conns.get_mut(&conn) else {
            return;
        };
        let peer_node = connection.ends[1 - side].node;
        let end = &mut connection.ends[side];
        let notify = match end.state {
            EndState::Open => true,
            EndState::PeerClosed => false,
            EndState::Closed | EndState::Reset | EndState::Gone => return,
        };
        end.state = EndState::Closed;
        end.wake();
        let from = end.node;
        if notify {
            let delivery = Delivery::Close {
                conn,
                side: 1 - side,
            };
            self.transmit(from, peer_node, delivery, Traffic::Notice);
        }
    }

    /// One handle object of end `side` was dropped. The last one closes the
    /// end in order; once neither end has handles the connection is gone.
    pub fn release_handle(&mut self, conn: u64, side: usize) {
        let Some(end) = self.end_mut(conn, side) else {
            return;
        };
        assert!(end.handles > 0, "a handle is released at most once");
        end.handles -= 1;
        if end.handles == 0 {
            self.close_end(conn, side);
            self.collect_conn(conn);
        }
    }

    /// Nobody will ever hold end `side` (its connector gave up, or its
    /// listener is gone): the end is gone and the peer is reset.
    pub fn abandon_end(&mut self, conn: u64, side: usize) {
        let Some(connection) = self.net.conns.get_mut(&conn) else {
            return;
        };
        let peer = &connection.ends[1 - side];
        let (peer_node, peer_live) = (peer.node, peer.state != EndState::Gone);
        let end = &mut connection.ends[side];
        end.handles = 0;
        end.state = EndState::Gone;
        end.inbox.clear();
        let from = end.node;
        if peer_live {
            let delivery = Delivery::Reset {
                conn,
                side: 1 - side,
            };
            self.transmit(from, peer_node, delivery, Traffic::Notice);
        }
        self.collect_conn(conn);
    }

    fn collect_conn(&mut self, conn: u64) {
        if self
            .net
            .conns
            .get(&conn)
            .is_some_and(|connection| connection.ends.iter().all(|end| end.handles == 0))
        {
            self.net.conns.remove(&conn);
        }
    }

    /// Reset both ends of `conn` now.
    pub fn reset_conn(&mut self, conn: u64) {
        if let Some(connection) = self.net.conns.get_mut(&conn) {
            for end in &mut connection.ends {
                end.reset();
            }
        }
    }

    /// Reset every connection between `a` and `b` (every connection of `a`
    /// if `b` is `None`) on both ends, now. Returns how many were reset.
    pub fn reset_conns(&mut self, a: NodeId, b: Option<NodeId>) -> usize {
        let mut count = 0;
        for connection in self.net.conns.values_mut() {
            let nodes = (connection.ends[0].node, connection.ends[1].node);
            let hit = match b {
                None => nodes.0 == a || nodes.1 == a,
                Some(b) => nodes == (a, b) || nodes == (b, a),
            };
            if hit {
                count += 1;
                for end in &mut connection.ends {
                    end.reset();
                }
            }
        }
        count
    }

    /// `node` was killed: its ends are gone, its peers get a reset notice,
    /// its listeners and pending connection requests disappear.
    pub fn drop_node_connections(&mut self, node: NodeId) {
        let mut notices = Vec::new();
        for (id, connection) in &mut self.net.conns {
            for side in 0..2 {
                if connection.ends[side].node != node
                    || connection.ends[side].state == EndState::Gone
                {
                    continue;
                }
                let end = &mut connection.ends[side];
                end.state = EndState::Gone;
                end.inbox.clear();
                end.waker = None;
                let peer = &connection.ends[1 - side];
                if peer.node != node
                    && matches!(
                        peer.state,
                        EndState::Open | EndState::Closed | EndState::PeerClosed
                    )
                {
                    notices.push((
                        peer.node,
                        Delivery::Reset {
                            conn: *id,
                            side: 1 - side,
                        },
                    ));
                }
            }
        }
        for (peer, delivery) in notices {
            self.transmit(node, peer, delivery, Traffic::Notice);
        }
        let ports: Vec<(NodeId, u16)> = self
            .net
            .listeners
            .keys()
            .filter(|(owner, _)| *owner == node)
            .copied()
            .collect();
        for key in ports {
            let listener = self.net.listeners.remove(&key).expect("listed above");
            for conn in listener.queue {
                self.abandon_end(conn, 1);
            }
        }
        self.net.connects.retain(|_, pending| pending.node != node);
    }

    /// A message reached its destination.
    pub fn deliver(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Frame { conn, side, .. }
            | Delivery::Close { conn, side }
            | Delivery::Reset { conn, side } => self.deliver_to_end(conn, side, delivery),
            Delivery::Connect {
                request,
                from,
                from_incarnation,
                to,
                port,
            } => self.arrive_connect(request, (from, from_incarnation), to, port),
            Delivery::Answer { request, result } => {
                if let Some(pending) = self.net.connects.get_mut(&request) {
                    pending.result = Some(result);
                    if let Some(waker) = pending.waker.take() {
                        waker.wake();
                    }
                } else if let Ok(conn) = result {
                    // The caller stopped waiting: nobody will hold its end.
                    self.abandon_end(conn, 0);
                }
            }
        }
    }

    fn deliver_to_end(&mut self, conn: u64, side: usize, delivery: Delivery) {
        let Some(connection) = self.net.conns.get(&conn) else {
            if matches!(delivery, Delivery::Frame { .. }) {
                self.net.stats.frames_dropped += 1;
            }
            return;
        };
        let (from, to) = (connection.ends[1 - side].node, connection.ends[side].node);
        if self.is_cut(from, to) {
            self.note_cut(from, to, &delivery);
            self.break_if_stream(from, to, &delivery);
            return;
        }
        if self.is_clogged(from, to) {
            let now = self.now();
            self.hold(from, to, now, delivery);
            return;
        }
        let end = &mut self.net.conns.get_mut(&conn).expect("looked up above").ends[side];
        match delivery {
            Delivery::Frame { frame, .. } => {
                if end.state == EndState::Open {
                    end.inbox.push_back(frame);
                    end.wake();
                    self.net.stats.frames_delivered += 1;
                } else {
                    self.net.stats.frames_dropped += 1;
                }
            }
            Delivery::Close { .. } => {
                if end.state == EndState::Open {
                    end.state = EndState::PeerClosed;
                    end.wake();
                }
            }
            Delivery::Reset { .. } => end.reset(),
            Delivery::Connect { .. } | Delivery::Answer { .. } => {
                unreachable!("connection requests are not addressed to an end")
            }
        }
    }

    fn arrive_connect(&mut self, request: u64, from: (NodeId, u32), to: NodeId, port: u16) {
        if !self.is_current(from.0, from.1) {
            return; // the caller was killed; its request died with it
        }
        let target = self.node(to);
        let result = if !target.is_alive() {
            Err(NetError::Refused(format!("{} is down", target.name)))
        } else if self.is_cut(from.0, to) || self.is_cut(to, from.0) {
            Err(NetError::Refused(format!("{} is unreachable", target.name)))
        } else if self.net.listeners.contains_key(&(to, port)) {
            let server = (to, target.incarnation);
            let conn = self.open_conn(from, server);
            let listener = self
                .net
                .listeners
                .get_mut(&(to, port))
                .expect("checked above");
            listener.queue.push_back(conn);
            if let Some(waker) = listener.waker.take() {
                waker.wake();
            }
            Ok(conn)
        } else {
            Err(NetError::Refused(format!(
                "nothing listens on {}:{port}",
                target.name
            )))
        };
        if let Err(error) = &result {
            self.net.stats.connections_refused += 1;
            self.trace.record_simulator(
                self.now(),
                Some(from.0),
                Level::DEBUG,
                format_args!("connection request {request} refused: {error}"),
            );
        }
        self.transmit(
            to,
            from.0,
            Delivery::Answer { request, result },
            Traffic::Signal,
        );
    }
}
