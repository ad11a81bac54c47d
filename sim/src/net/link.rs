//! Links: the directed path between two nodes, its configuration, its
//! partition and clog state, and how a message crosses it.

use std::time::Duration;

use faultline_core::runtime::Instant;
use rand::Rng;
use tracing::Level;

use super::{Delivery, Latency, LinkConfig, LossEffect};
use crate::choices::chance;
use crate::clock::Event;
use crate::ids::NodeId;
use crate::world::World;

/// A link's state when it differs from the default.
#[derive(Default)]
pub(crate) struct LinkState {
    /// A configuration other than the network's default.
    pub config: Option<LinkConfig>,
    /// Partitioned: messages on this link are dropped.
    pub cut: bool,
    /// Clogged: messages are held until the link is unclogged.
    pub clogged: bool,
    /// Messages held by a clog, with the time they would have arrived, in
    /// the order they reached the clog.
    pub held: Vec<(Instant, Delivery)>,
}

/// What kind of message crosses a link, which decides the faults that apply.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Traffic {
    /// A data frame: loss, duplication, partition and clog apply.
    Data,
    /// A close or reset notice: partition and clog apply, never loss or
    /// duplication.
    Notice,
    /// A connection request or its answer: crosses regardless (the request
    /// checks the partition when it arrives).
    Signal,
}

impl World {
    /// The configuration of the link `from → to`.
    pub fn link_config(&self, from: NodeId, to: NodeId) -> LinkConfig {
        self.net
            .links
            .get(&(from, to))
            .and_then(|link| link.config)
            .unwrap_or(self.net.link_default)
    }

    /// Whether the link `from → to` is partitioned. Loopback never is.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        from != to && self.net.links.get(&(from, to)).is_some_and(|link| link.cut)
    }

    /// Whether the link `from → to` is clogged.
    pub fn is_clogged(&self, from: NodeId, to: NodeId) -> bool {
        self.net
            .links
            .get(&(from, to))
            .is_some_and(|link| link.clogged)
    }

    /// Set or clear a partition of the link `from → to`.
    pub fn set_cut(&mut self, from: NodeId, to: NodeId, cut: bool) {
        self.net.links.entry((from, to)).or_default().cut = cut;
    }

    /// Clog or unclog the link `from → to`. Unclogging releases the held
    /// messages, in order, each at the later of now and its original
    /// arrival time.
    pub fn set_clogged(&mut self, from: NodeId, to: NodeId, clogged: bool) {
        let link = self.net.links.entry((from, to)).or_default();
        link.clogged = clogged;
        if clogged {
            return;
        }
        let held = std::mem::take(&mut link.held);
        let now = self.now();
        for (arrival, delivery) in held {
            self.events
                .schedule(arrival.max(now), Event::Deliver(delivery));
        }
    }

    /// Hold `delivery` at the clog of `from → to`.
    pub fn hold(&mut self, from: NodeId, to: NodeId, arrival: Instant, delivery: Delivery) {
        self.net
            .links
            .entry((from, to))
            .or_default()
            .held
            .push((arrival, delivery));
    }

    /// Send `delivery` from `from` to `to`, applying the link's faults for
    /// `traffic`.
    pub fn transmit(&mut self, from: NodeId, to: NodeId, delivery: Delivery, traffic: Traffic) {
        if traffic != Traffic::Signal && self.is_cut(from, to) {
            self.note_cut(from, to, &delivery);
            self.break_if_stream(from, to, &delivery);
            return;
        }
        let config = self.link_config(from, to);
        let mut copies = 1;
        if traffic == Traffic::Data {
            if chance(&mut self.net.rng, config.loss) {
                self.net.stats.frames_lost += 1;
                self.note(from, to, "lost", &delivery);
                if let (LossEffect::ResetConnection, Some((conn, _))) =
                    (config.loss_effect, delivery.end())
                {
                    self.reset_conn(conn);
                }
                return;
            }
            if chance(&mut self.net.rng, config.duplicate) {
                self.net.stats.frames_duplicated += 1;
                self.note(from, to, "duplicated", &delivery);
                copies = 2;
            }
        }
        let mut delivery = Some(delivery);
        for copy in (0..copies).rev() {
            let current = if copy == 0 {
                delivery.take().expect("the last copy takes the original")
            } else {
                delivery
                    .as_ref()
                    .expect("the original is kept until the last copy")
                    .duplicate()
            };
            self.schedule_arrival(from, to, current, traffic, config);
        }
    }

    fn schedule_arrival(
        &mut self,
        from: NodeId,
        to: NodeId,
        delivery: Delivery,
        traffic: Traffic,
        config: LinkConfig,
    ) {
        let latency = sample_latency(config.latency, &mut self.net.rng);
        let mut arrival = self.now() + latency;
        let in_order = traffic != Traffic::Data || !chance(&mut self.net.rng, config.reorder);
        if let Some((conn, side)) = delivery.end() {
            if let Some(end) = self
                .net
                .conns
                .get_mut(&conn)
                .map(|conn| &mut conn.ends[side])
            {
                if in_order {
                    arrival = arrival.max(end.arrival_last);
                }
                end.arrival_last = end.arrival_last.max(arrival);
            }
        }
        if traffic != Traffic::Signal && self.is_clogged(from, to) {
            self.hold(from, to, arrival, delivery);
        } else {
            self.events.schedule(arrival, Event::Deliver(delivery));
        }
    }

    /// A message of a connection was lost to a partition: on a link whose
    /// losses reset connections (stream semantics), its connection breaks,
    /// as a TCP or WebSocket connection fails rather than skip a frame.
    pub fn break_if_stream(&mut self, from: NodeId, to: NodeId, delivery: &Delivery) {
        if let (LossEffect::ResetConnection, Some((conn, _))) =
            (self.link_config(from, to).loss_effect, delivery.end())
        {
            self.reset_conn(conn);
        }
    }

    /// A message dropped by a partition.
    pub fn note_cut(&mut self, from: NodeId, to: NodeId, delivery: &Delivery) {
        if matches!(delivery, Delivery::Frame { .. }) {
            self.net.stats.frames_cut += 1;
        }
        self.note(from, to, "cut by partition", delivery);
    }

    fn note(&self, from: NodeId, to: NodeId, what: &str, delivery: &Delivery) {
        self.trace.record_simulator(
            self.now(),
            Some(from),
            Level::DEBUG,
            format_args!(
                "{} {} → {}: {what}",
                delivery.describe(),
                self.node(from).name,
                self.node(to).name
            ),
        );
    }
}

impl Delivery {
    /// The connection end it is addressed to, if any.
    fn end(&self) -> Option<(u64, usize)> {
        match *self {
            Delivery::Frame { conn, side, .. }
            | Delivery::Close { conn, side }
            | Delivery::Reset { conn, side } => Some((conn, side)),
            Delivery::Connect { .. } | Delivery::Answer { .. } => None,
        }
    }

    /// A copy (only data frames are ever duplicated).
    fn duplicate(&self) -> Delivery {
        match self {
            Delivery::Frame { conn, side, frame } => Delivery::Frame {
                conn: *conn,
                side: *side,
                frame: frame.clone(),
            },
            _ => unreachable!("only data frames are duplicated"),
        }
    }

    /// A short description for the trace.
    pub fn describe(&self) -> String {
        match self {
            Delivery::Frame { conn, frame, .. } => {
                format!("frame of {} bytes on connection {conn}", frame.len())
            }
            Delivery::Close { conn, .. } => format!("close of connection {conn}"),
            Delivery::Reset { conn, .. } => format!("reset of connection {conn}"),
            Delivery::Connect { request, .. } => format!("connection request {request}"),
            Delivery::Answer { request, .. } => format!("answer to connection request {request}"),
        }
    }
}

/// Draw a latency from `latency`.
pub(crate) fn sample_latency(latency: Latency, rng: &mut crate::choices::SimRng) -> Duration {
    match latency {
        Latency::Fixed(duration) => duration,
        Latency::Uniform { min, max } => {
            let span = nanos(max.saturating_sub(min));
            min + Duration::from_nanos(if span == 0 {
                0
            } else {
                rng.gen_range(0..=span)
            })
        }
        Latency::LongTail { min, max } => {
            let span = nanos(max.saturating_sub(min));
            let fraction: f64 = rng.gen();
            let tail = fraction * fraction * fraction * fraction;
            min + Duration::from_nanos((span as f64 * tail) as u64)
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choices::{Choices, Purpose};

    #[test]
    fn latencies_stay_in_their_range() {
        let mut rng = Choices::new(4).stream(Purpose::Network);
        let min = Duration::from_millis(2);
        let max = Duration::from_millis(40);
        for latency in [
            Latency::Uniform { min, max },
            Latency::LongTail { min, max },
        ] {
            for _ in 0..1000 {
                let sample = sample_latency(latency, &mut rng);
                assert!(
                    (min..=max).contains(&sample),
                    "{sample:?} outside {latency:?}"
                );
            }
        }
        assert_eq!(sample_latency(Latency::Fixed(min), &mut rng), min);
    }

    #[test]
    fn long_tail_latency_is_mostly_short() {
        let mut rng = Choices::new(4).stream(Purpose::Network);
        let latency = Latency::LongTail {
            min: Duration::ZERO,
            max: Duration::from_millis(160),
        };
        let short = (0..1000)
            .filter(|_| sample_latency(latency, &mut rng) < Duration::from_millis(20))
            .count();
        assert!(
            short > 500,
            "only {short} of 1000 under a eighth of the range"
        );
    }
}
