//! The event queue: every pending [`Event`] in `(time, sequence)` order.
//!
//! A binary heap of keys over a slab of events. Cancelling or moving an
//! event leaves its old key in the heap; such stale keys are dropped when
//! they reach the top, and the heap is rebuilt from the pending events when
//! stale keys outnumber them, so it stays within a constant factor of the
//! pending count. Keys are unique (the sequence number is), so the order in
//! which events come out is fully determined by `(time, sequence)`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use faultline_core::runtime::Instant;

use super::{Event, Timeline};

/// Where an event sits in the queue: its global time and a sequence number
/// unique over the run (which order it), and its slot in the queue.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct EventKey {
    nanos: u64,
    sequence: u64,
    slot: u32,
}

/// A pending event and the key it is pending under.
struct Pending {
    key: EventKey,
    event: Event,
}

/// Stale keys tolerated beyond twice the pending count before a rebuild.
const STALE_SLACK: usize = 64;

/// All pending events, in time order.
#[derive(Default)]
pub(crate) struct EventQueue {
    /// Keys of pending events, and stale keys of cancelled or moved ones,
    /// earliest first. Invariant (between calls): the top is pending, and
    /// `heap.len() <= 2 * pending + STALE_SLACK`.
    heap: BinaryHeap<Reverse<EventKey>>,
    /// Pending events by `key.slot`.
    slots: Vec<Option<Pending>>,
    /// Empty slots, reused last-freed first.
    slots_free: Vec<u32>,
    /// How many slots hold an event.
    pending: usize,
    /// Next sequence number. Invariant: larger than every key's sequence.
    sequence_next: u64,
    timeline: Arc<Timeline>,
}

impl EventQueue {
    /// An empty queue that keeps `timeline`'s next event time.
    pub fn new(timeline: Arc<Timeline>) -> EventQueue {
        let mut queue = EventQueue {
            timeline,
            ..EventQueue::default()
        };
        queue.settle();
        queue
    }

    fn is_pending(&self, key: EventKey) -> bool {
        matches!(self.slots.get(key.slot as usize), Some(Some(pending)) if pending.key == key)
    }

    /// Drop stale keys from the top, rebuild the heap if mostly stale, and
    /// bring the timeline's next event time up to date.
    fn settle(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.is_pending(*top) {
                break;
            }
            self.heap.pop();
        }
        if self.heap.len() > 2 * self.pending + STALE_SLACK {
            let keys: Vec<Reverse<EventKey>> = self
                .slots
                .iter()
                .flatten()
                .map(|pending| Reverse(pending.key))
                .collect();
            self.heap = BinaryHeap::from(keys);
        }
        let next = self.heap.peek().map_or(u64::MAX, |Reverse(key)| key.nanos);
        self.timeline
            .next_event_nanos
            .store(next, Ordering::Release);
    }

    /// Keep `event` under `key` in its slot (which must be empty).
    fn put(&mut self, key: EventKey, event: Event) {
        let index = key.slot as usize;
        if index == self.slots.len() {
            self.slots.push(None);
        }
        let previous = self.slots[index].replace(Pending { key, event });
        assert!(previous.is_none(), "an event slot holds one event");
        self.pending += 1;
    }

    /// Take the event pending under `key` out of its slot, leaving the slot
    /// empty but not free.
    fn take(&mut self, key: EventKey) -> Option<Event> {
        if !self.is_pending(key) {
            return None;
        }
        let pending = self.slots[key.slot as usize]
            .take()
            .expect("checked to be pending");
        self.pending -= 1;
        Some(pending.event)
    }

    /// Schedule `event` at `at`, after every event already scheduled at the
    /// same time.
    pub fn schedule(&mut self, at: Instant, event: Event) -> EventKey {
        let slot = self.slots_free.pop().unwrap_or_else(|| {
            u32::try_from(self.slots.len()).expect("fewer than 2^32 pending events")
        });
        let key = EventKey {
            nanos: at.as_nanos(),
            sequence: self.sequence_next,
            slot,
        };
        self.sequence_next += 1;
        self.put(key, event);
        self.heap.push(Reverse(key));
        self.settle();
        key
    }

    /// Move the event at `key` to time `at`, keeping its sequence number (so
    /// it keeps its place among events created around it).
    pub fn reschedule(&mut self, key: EventKey, at: Instant) -> EventKey {
        let event = self
            .take(key)
            .expect("reschedule precondition: the event is pending");
        let moved = EventKey {
            nanos: at.as_nanos(),
            ..key
        };
        self.put(moved, event);
        if moved != key {
            self.heap.push(Reverse(moved));
        }
        self.settle();
        moved
    }

    /// Remove the event at `key`, if still pending.
    pub fn cancel(&mut self, key: EventKey) -> Option<Event> {
        let event = self.take(key)?;
        self.slots_free.push(key.slot);
        self.settle();
        Some(event)
    }

    /// When the next event is due.
    pub fn next_time(&self) -> Option<Instant> {
        self.heap
            .peek()
            .map(|Reverse(key)| Instant::from_nanos(key.nanos))
    }

    /// Remove and return the next event if it is due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Event> {
        let Reverse(top) = *self.heap.peek()?;
        if top.nanos > now.as_nanos() {
            return None;
        }
        self.heap.pop();
        let event = self.take(top).expect("the top of the heap is pending");
        self.slots_free.push(top.slot);
        self.settle();
        Some(event)
    }

    /// Every pending event, in order (for teardown).
    pub fn drain(&mut self) -> Vec<Event> {
        let mut pending: Vec<Pending> = std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .collect();
        pending.sort_unstable_by_key(|pending| pending.key);
        self.heap.clear();
        self.slots_free.clear();
        self.pending = 0;
        self.settle();
        pending.into_iter().map(|pending| pending.event).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    fn node_of(event: Option<Event>) -> Option<u32> {
        match event {
            Some(Event::StallEnd(node)) => Some(node.0),
            _ => None,
        }
    }

    #[test]
    fn moved_and_cancelled_events_come_out_in_key_order_and_stale_keys_stay_bounded() {
        let mut queue = EventQueue::default();
        let mut keys = Vec::new();
        for index in 0..1_000_u32 {
            let at = Instant::from_nanos(u64::from((index * 7_919) % 1_000));
            keys.push(queue.schedule(at, Event::StallEnd(NodeId(index))));
        }
        for (index, key) in keys.iter_mut().enumerate() {
            match index % 3 {
                0 => assert!(queue.cancel(*key).is_some()),
                1 => *key = queue.reschedule(*key, Instant::from_nanos(2_000)),
                _ => {}
            }
            assert!(queue.heap.len() <= 2 * queue.pending + STALE_SLACK + 1);
        }
        assert!(queue.cancel(keys[0]).is_none(), "cancelled once");
        let mut expected: Vec<(u64, u64, u32)> = keys
            .iter()
            .enumerate()
            .filter(|(index, _)| index % 3 != 0)
            .map(|(index, key)| (key.nanos, key.sequence, index as u32))
            .collect();
        expected.sort_unstable();
        let mut order = Vec::new();
        while let Some(node) = node_of(queue.pop_due(Instant::from_nanos(u64::MAX))) {
            order.push(node);
        }
        let expected: Vec<u32> = expected.into_iter().map(|(_, _, node)| node).collect();
        assert_eq!(order, expected);
        assert_eq!(queue.next_time(), None);
    }
}
