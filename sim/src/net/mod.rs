//! The simulated network: message-framed connections between nodes over
//! directed links, with latency, loss, duplication, reordering, partitions,
//! clogs and resets.
//!
//! * `link`: link configuration, partition and clog state, and how a
//!   message crosses a link (the fault decisions);
//! * `conn`: connection ends, delivery, close and reset;
//! * `handle`: `SimNet`, the `Net` implementation handed to node code.
//!
//! # Semantics (each has a test in `sim/tests/network.rs`)
//!
//! * A frame crosses the link `sender → receiver` with a latency drawn from
//!   the link's distribution. A frame never overtakes an earlier frame of
//!   the same connection, unless the link's `reorder` chance picks it: then
//!   it arrives after its own latency and may overtake frames sent before.
//! * **Loss**: a lost frame is never delivered (with
//!   [`LossEffect::ResetConnection`] its connection is also reset on both
//!   ends at once). **Duplication**: a duplicated frame is delivered twice.
//!   Both are decided at send time.
//! * **Partition** of `a → b`: frames (and close or reset notices) from `a`
//!   to `b` are dropped, whether sent during the partition or in flight
//!   when it starts; new connections across it are refused at once. Frames
//!   sent after the heal are delivered. Loopback is never partitioned. On a
//!   link with [`LossEffect::ResetConnection`] a dropped frame also resets
//!   its connection, as a loss does.
//! * **Clog** of `a → b`: frames are held, not dropped, and delivered in
//!   order when the link is unclogged.
//! * **Reset** between `a` and `b`: every connection between them is reset
//!   at once on both ends; frames in flight are dropped.
//! * **Kill** of a node: its connections are gone; peers receive a reset one
//!   link latency later (unless the link is partitioned: then they never
//!   learn, as with a real half-open connection); frames sent to the killed
//!   node are lost. Its listeners disappear.
//! * **Connect** sends a request across the link; it is accepted if the
//!   destination is alive and listening when the request arrives, else
//!   refused. The answer always reaches the caller (a connection attempt
//!   never hangs).

pub(crate) mod conn;
pub(crate) mod handle;
pub(crate) mod link;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::choices::SimRng;
use crate::config::ConfigError;
use crate::ids::NodeId;

pub(crate) use conn::Conn;
pub use handle::SimNet;
pub(crate) use link::LinkState;

/// How long a message takes to cross a link. Sampling uses only integer
/// arithmetic and float multiplication, so it is the same on every platform.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniform between `min` and `max`.
    Uniform {
        /// Fastest.
        min: Duration,
        /// Slowest.
        max: Duration,
    },
    /// Mostly near `min`, sometimes up to `max`: `min + (max − min)·u⁴` for
    /// `u` uniform in `[0, 1)` (median `min + (max − min)/16`).
    LongTail {
        /// Fastest.
        min: Duration,
        /// Slowest.
        max: Duration,
    },
}

/// What a lost frame does to its connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LossEffect {
    /// The frame vanishes and the connection goes on (message semantics:
    /// what the `Net` contract allows under faults).
    DropFrame,
    /// The connection breaks: both ends are reset at once (stream
    /// semantics: a TCP or WebSocket connection never skips a frame, it
    /// fails).
    ResetConnection,
}

/// The behaviour of one directed link.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct LinkConfig {
    /// One-way latency.
    pub latency: Latency,
    /// Chance that a frame is lost.
    pub loss: f64,
    /// What a loss does.
    pub loss_effect: LossEffect,
    /// Chance that a frame is delivered twice.
    pub duplicate: f64,
    /// Chance that a frame ignores the order of its connection: it arrives
    /// after its own latency, possibly before frames sent earlier.
    pub reorder: f64,
}

impl Default for LinkConfig {
    fn default() -> LinkConfig {
        LinkConfig {
            latency: Latency::Uniform {
                min: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
            loss: 0.0,
            loss_effect: LossEffect::DropFrame,
            duplicate: 0.0,
            reorder: 0.0,
        }
    }
}

impl LinkConfig {
    /// A link with a fixed latency and no faults.
    pub fn fixed(latency: Duration) -> LinkConfig {
        LinkConfig {
            latency: Latency::Fixed(latency),
            ..LinkConfig::default()
        }
    }

    /// Check probabilities and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (what, value) in [
            ("link loss", self.loss),
            ("link duplication", self.duplicate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::Probability { what, value });
            }
        }
        match self.latency {
            Latency::Uniform { min, max } | Latency::LongTail { min, max } if min > max => {
                Err(ConfigError::Latency { min, max })
            }
            _ => Ok(()),
        }
    }
}

/// Which way a partition cuts.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Nothing crosses between the two groups.
    Both,
    /// Only messages from the first group to the second are cut.
    OneWay,
}

/// Counters of what the network did with frames (data only, not close or
/// reset notices).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct NetStats {
    /// Frames accepted by `send`.
    pub frames_sent: u64,
    /// Frames put in a receiver's queue (a duplicate counts twice).
    pub frames_delivered: u64,
    /// Frames lost by a link's loss probability.
    pub frames_lost: u64,
    /// Extra copies made by a link's duplication probability.
    pub frames_duplicated: u64,
    /// Frames dropped by a partition.
    pub frames_cut: u64,
    /// Frames that arrived at a reset, closed or killed end.
    pub frames_dropped: u64,
    /// Connections established.
    pub connections_opened: u64,
    /// Connection attempts refused.
    pub connections_refused: u64,
}

/// A message in flight.
pub(crate) enum Delivery {
    /// Data for end `side` of `conn`.
    Frame {
        conn: u64,
        side: usize,
        frame: Vec<u8>,
    },
    /// The peer closed in order.
    Close { conn: u64, side: usize },
    /// The peer's end is gone.
    Reset { conn: u64, side: usize },
    /// A connection request from `from` to `to:port`.
    Connect {
        request: u64,
        from: NodeId,
        from_incarnation: u32,
        to: NodeId,
        port: u16,
    },
    /// The answer to a connection request, back at the caller.
    Answer {
        request: u64,
        result: Result<u64, faultline_core::runtime::NetError>,
    },
}

/// A listener registered on `node:port`.
pub(crate) struct ListenerState {
    /// Distinguishes successive listeners on the same port.
    pub id: u64,
    /// Accepted connections not yet taken by `accept`.
    pub queue: std::collections::VecDeque<u64>,
    pub waker: Option<std::task::Waker>,
}

/// A connection request whose caller is waiting.
pub(crate) struct PendingConnect {
    pub node: NodeId,
    pub peer: String,
    pub result: Option<Result<u64, faultline_core::runtime::NetError>>,
    pub waker: Option<std::task::Waker>,
}

/// The whole network's state.
pub(crate) struct NetState {
    pub link_default: LinkConfig,
    /// Links with a setting or state other than the default, by
    /// `(from, to)`.
    pub links: BTreeMap<(NodeId, NodeId), LinkState>,
    pub conns: BTreeMap<u64, Conn>,
    pub listeners: BTreeMap<(NodeId, u16), ListenerState>,
    pub connects: BTreeMap<u64, PendingConnect>,
    /// Next id of a connection, listener or connection request.
    pub id_next: u64,
    pub rng: SimRng,
    pub stats: NetStats,
}

impl NetState {
    pub fn new(link_default: LinkConfig, rng: SimRng) -> NetState {
        NetState {
            link_default,
            links: BTreeMap::new(),
            conns: BTreeMap::new(),
            listeners: BTreeMap::new(),
            connects: BTreeMap::new(),
            id_next: 1,
            rng,
            stats: NetStats::default(),
        }
    }

    pub fn next_id(&mut self) -> u64 {
        let id = self.id_next;
        self.id_next += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_probabilities_and_ranges_are_checked() {
        let mut link = LinkConfig::default();
        assert_eq!(link.validate(), Ok(()));
        link.loss = 1.5;
        assert!(link.validate().is_err());
        let link = LinkConfig {
            latency: Latency::Uniform {
                min: Duration::from_millis(5),
                max: Duration::from_millis(1),
            },
            ..LinkConfig::default()
        };
        assert!(matches!(link.validate(), Err(ConfigError::Latency { .. })));
    }
}
