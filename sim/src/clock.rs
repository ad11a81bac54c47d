//! Virtual time: the event queue, timers and each node's clock.
//!
//! There is one global virtual clock (nanoseconds since the start of the
//! run). It advances by the cost of each poll and, when nothing is ready,
//! jumps to the next event. Everything that happens at a time (a timer, a
//! network delivery, the end of a stall, a planned fault) is an [`Event`] in
//! one [`EventQueue`] ordered by `(time, sequence)`, so simultaneous events
//! happen in the order they were scheduled, in every run.
//!
//! A node reads the global clock through its [`NodeClock`]: shifted by the
//! node's skew, and never going backwards.
//!
//! The [`Timeline`] holds what the executor needs at every step without the
//! world lock: the global clock as the executor last published it (what
//! handles read) and the time of the next pending event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;

use faultline_core::runtime::Instant;

use crate::ids::NodeId;
use crate::net::Delivery;

mod events;

pub(crate) use events::{EventKey, EventQueue};

/// Something that happens at a virtual time.
pub(crate) enum Event {
    /// A timer of [`Timers`] is due.
    Timer(u64),
    /// A frame, close, reset or connection message reaches its destination.
    Deliver(Delivery),
    /// A node's stall may be over (it is, unless it was extended).
    StallEnd(NodeId),
    /// The planned fault with this index is due.
    Fault(usize),
}

/// The global clock and the next event's time, shared by the executor,
/// the world and its event queue, read and written without the world lock
/// (the run is single-threaded; the atomics only make the sharing safe).
#[derive(Debug)]
pub(crate) struct Timeline {
    /// The global clock as last published by the executor, in nanoseconds.
    now_nanos: AtomicU64,
    /// The time of the first pending event, `u64::MAX` if none. Invariant:
    /// kept equal to the event queue's first key by the queue.
    next_event_nanos: AtomicU64,
}

impl Default for Timeline {
    fn default() -> Timeline {
        Timeline {
            now_nanos: AtomicU64::new(0),
            next_event_nanos: AtomicU64::new(u64::MAX),
        }
    }
}

impl Timeline {
    /// The global clock as last published.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.now_nanos.load(Ordering::Acquire))
    }

    /// Publish the global clock.
    pub fn publish(&self, now: Instant) {
        self.now_nanos.store(now.as_nanos(), Ordering::Release);
    }

    /// Whether an event is due at or before `now`.
    pub fn event_due(&self, now: Instant) -> bool {
        self.next_event_nanos.load(Ordering::Acquire) <= now.as_nanos()
    }
}

/// One node's view of the global clock: `max(floor, global + offset)`.
///
/// A skew step changes `offset`; `floor` is the node's reading at that
/// moment, so a step backwards freezes the node's clock until the global
/// clock catches up instead of making it go backwards.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct NodeClock {
    /// Offset from the global clock, in nanoseconds.
    offset_nanos: i64,
    /// The node's clock never reads less than this.
    floor_nanos: u64,
}

impl NodeClock {
    /// The node's reading when the global clock reads `global`.
    pub fn local(&self, global: Instant) -> Instant {
        let shifted = global.as_nanos().saturating_add_signed(self.offset_nanos);
        Instant::from_nanos(shifted.max(self.floor_nanos))
    }

    /// The earliest global time, not before `now`, at which the node's
    /// clock reads at least `local_deadline`.
    pub fn global_for(&self, local_deadline: Instant, now: Instant) -> Instant {
        if local_deadline <= self.local(now) {
            return now;
        }
        let global = local_deadline
            .as_nanos()
            .saturating_add_signed(self.offset_nanos.saturating_neg());
        Instant::from_nanos(global.max(now.as_nanos()))
    }

    /// Set the offset to `offset_nanos` at global time `now`, keeping the
    /// clock monotone.
    pub fn set_offset(&mut self, offset_nanos: i64, now: Instant) {
        self.floor_nanos = self.local(now).as_nanos();
        self.offset_nanos = offset_nanos;
    }

    /// The current offset.
    pub fn offset_nanos(&self) -> i64 {
        self.offset_nanos
    }
}

/// A timer created by `Runtime::sleep`.
pub(crate) struct Timer {
    /// The node whose clock the deadline is on.
    pub node: NodeId,
    /// The deadline on the node's clock.
    pub local_deadline: Instant,
    /// The timer's event, while it has not fired.
    pub key: EventKey,
    /// Who to wake when it fires.
    pub waker: Option<Waker>,
    /// Whether the deadline has passed.
    pub fired: bool,
}

/// Every live timer, by id. An id is an index into `entries`, reused once
/// its timer is removed (no event or `Sleep` refers to it by then).
#[derive(Default)]
pub(crate) struct Timers {
    entries: Vec<Option<Timer>>,
    /// Ids of removed timers, reused last-freed first.
    ids_free: Vec<u64>,
}

impl Timers {
    /// Register a timer of `node` due at `local_deadline` on its clock.
    pub fn create(
        &mut self,
        events: &mut EventQueue,
        node: NodeId,
        clock: &NodeClock,
        local_deadline: Instant,
        now: Instant,
    ) -> u64 {
        let id = self.ids_free.pop().unwrap_or(self.entries.len() as u64);
        let key = events.schedule(clock.global_for(local_deadline, now), Event::Timer(id));
        let timer = Timer {
            node,
            local_deadline,
            key,
            waker: None,
            fired: false,
        };
        let index = Timers::index(id);
        if index == self.entries.len() {
            self.entries.push(Some(timer));
        } else {
            let previous = self.entries[index].replace(timer);
            assert!(previous.is_none(), "a free timer id has no timer");
        }
        id
    }

    fn index(id: u64) -> usize {
        usize::try_from(id).expect("timer ids are indices")
    }

    /// The live timer `id`.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Timer> {
        self.entries.get_mut(Timers::index(id))?.as_mut()
    }

    /// Forget a timer that has fired (its event is gone already).
    pub fn take_fired(&mut self, id: u64) {
        let timer = self.entries[Timers::index(id)]
            .take()
            .expect("a waiting sleep owns its timer");
        debug_assert!(timer.fired, "only a fired timer is taken");
        self.ids_free.push(id);
    }

    /// Take every timer out (for teardown).
    pub fn take_all(&mut self) -> Vec<Timer> {
        self.ids_free.clear();
        std::mem::take(&mut self.entries)
            .into_iter()
            .flatten()
            .collect()
    }

    /// The timer's event came due: mark it fired and wake its task.
    pub fn fire(&mut self, id: u64) {
        let timer = self
            .get_mut(id)
            .expect("a timer's event is cancelled when the timer is dropped");
        timer.fired = true;
        if let Some(waker) = timer.waker.take() {
            waker.wake();
        }
    }

    /// Forget a timer (its future was dropped), cancelling its event.
    pub fn remove(&mut self, events: &mut EventQueue, id: u64) {
        if let Some(timer) = self
            .entries
            .get_mut(Timers::index(id))
            .and_then(Option::take)
        {
            self.ids_free.push(id);
            if !timer.fired {
                events.cancel(timer.key);
            }
        }
    }

    /// The node's clock changed: move its pending timers to the global
    /// times at which their local deadlines now fall.
    pub fn rekey_node(
        &mut self,
        events: &mut EventQueue,
        node: NodeId,
        clock: &NodeClock,
        now: Instant,
    ) {
        for timer in self.entries.iter_mut().flatten() {
            if timer.node == node && !timer.fired {
                let at = clock.global_for(timer.local_deadline, now);
                timer.key = events.reschedule(timer.key, at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn events_come_out_in_time_then_schedule_order() {
        let mut queue = EventQueue::default();
        queue.schedule(Instant::from_millis(5), Event::StallEnd(NodeId(0)));
        queue.schedule(Instant::from_millis(1), Event::StallEnd(NodeId(1)));
        queue.schedule(Instant::from_millis(5), Event::StallEnd(NodeId(2)));
        let mut order = Vec::new();
        while let Some(Event::StallEnd(node)) = queue.pop_due(Instant::from_millis(10)) {
            order.push(node.0);
        }
        assert_eq!(order, vec![1, 0, 2]);
    }

    #[test]
    fn events_not_yet_due_stay_queued() {
        let mut queue = EventQueue::default();
        queue.schedule(Instant::from_millis(5), Event::StallEnd(NodeId(0)));
        assert!(queue.pop_due(Instant::from_millis(4)).is_none());
        assert_eq!(queue.next_time(), Some(Instant::from_millis(5)));
    }

    #[test]
    fn the_timeline_follows_the_first_pending_event() {
        let timeline = Arc::new(Timeline::default());
        let mut queue = EventQueue::new(Arc::clone(&timeline));
        assert!(!timeline.event_due(Instant::from_millis(1_000_000)));
        let late = queue.schedule(Instant::from_millis(9), Event::StallEnd(NodeId(0)));
        let early = queue.schedule(Instant::from_millis(3), Event::StallEnd(NodeId(1)));
        assert!(!timeline.event_due(Instant::from_millis(2)));
        assert!(timeline.event_due(Instant::from_millis(3)));
        queue.cancel(early);
        assert!(!timeline.event_due(Instant::from_millis(8)));
        queue.reschedule(late, Instant::from_millis(5));
        assert!(timeline.event_due(Instant::from_millis(5)));
        assert!(queue.pop_due(Instant::from_millis(5)).is_some());
        assert!(!timeline.event_due(Instant::from_millis(1_000_000)));
    }

    #[test]
    fn a_removed_timer_id_is_reused_and_its_event_cancelled() {
        let mut events = EventQueue::default();
        let mut timers = Timers::default();
        let clock = NodeClock::default();
        let now = Instant::ZERO;
        let first = timers.create(&mut events, NodeId(0), &clock, Instant::from_millis(5), now);
        let second = timers.create(&mut events, NodeId(0), &clock, Instant::from_millis(7), now);
        assert_ne!(first, second);
        timers.remove(&mut events, first);
        assert!(timers.get_mut(first).is_none());
        assert_eq!(events.next_time(), Some(Instant::from_millis(7)));
        let third = timers.create(&mut events, NodeId(0), &clock, Instant::from_millis(9), now);
        assert_eq!(third, first, "the freed id is reused");
        assert!(matches!(
            events.pop_due(Instant::from_millis(10)),
            Some(Event::Timer(id)) if id == second
        ));
        timers.fire(second);
        assert!(timers.get_mut(second).is_some_and(|timer| timer.fired));
        timers.take_fired(second);
        assert!(timers.get_mut(second).is_none());
    }

    #[test]
    fn a_backward_skew_freezes_the_node_clock_instead_of_reversing_it() {
        let mut clock = NodeClock::default();
        clock.set_offset(-2_000_000_000, Instant::from_millis(10_000));
        assert_eq!(
            clock.local(Instant::from_millis(10_000)),
            Instant::from_millis(10_000)
        );
        assert_eq!(
            clock.local(Instant::from_millis(11_000)),
            Instant::from_millis(10_000)
        );
        assert_eq!(
            clock.local(Instant::from_millis(13_000)),
            Instant::from_millis(11_000)
        );
    }

    #[test]
    fn a_forward_skew_brings_local_deadlines_closer() {
        let mut clock = NodeClock::default();
        let now = Instant::from_millis(1_000);
        assert_eq!(
            clock.global_for(Instant::from_millis(5_000), now),
            Instant::from_millis(5_000)
        );
        clock.set_offset(3_000_000_000, now);
        assert_eq!(
            clock.global_for(Instant::from_millis(5_000), now),
            Instant::from_millis(2_000)
        );
        assert_eq!(clock.global_for(Instant::from_millis(3_000), now), now);
    }
}
