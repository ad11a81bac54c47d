//! The executor: the owner's side of tasks. It takes woken runnables from
//! the inbox, hands their ids to the scheduler, polls the one the scheduler
//! picks, parks tasks of stalled nodes, and drops the tasks of killed
//! nodes.
//!
//! Invariants:
//! * `runnables` holds exactly the tasks in the scheduler's ready set plus
//!   the parked ones; a task id is in at most one of the two;
//! * a runnable is never run or dropped while the world lock is held;
//! * `incarnations[node]` is the node's live incarnation, `None` while it
//!   is killed: a runnable of another incarnation is dropped unpolled.

use std::collections::BTreeMap;
use std::time::Duration;

use async_task::Runnable;
use faultline_core::runtime::Instant;
use rand::{Rng, RngCore};

use crate::choices::SimRng;
use crate::config::PollCost;
use crate::ids::{NodeId, TaskId};
use crate::scheduler::Scheduler;
use crate::task::{TaskMeta, TaskTag};
use crate::trace::hash::Fingerprint;
use crate::trace::PollRecord;
use crate::world::Shared;

/// A ready or parked task's runnable, with its node beside it so that the
/// stall check does not read the runnable's header.
struct Slot {
    runnable: Runnable<TaskTag>,
    node: NodeId,
}

/// A drawn poll cost: nanoseconds above the configured minimum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PollCostDrawn {
    extra_nanos: u64,
}

pub(crate) struct Executor {
    pub scheduler: Box<dyn Scheduler>,
    /// Runnables by task slot.
    runnables: Vec<Option<Slot>>,
    /// Ready tasks of stalled nodes, in the order they were parked.
    parked: BTreeMap<NodeId, Vec<TaskId>>,
    /// Reused buffer for the inbox. Empty between calls to `absorb`.
    woken: Vec<Runnable<TaskTag>>,
    /// Woken runnables of killed incarnations, dropped at the end of
    /// `absorb`. Empty between calls.
    stale: Vec<Runnable<TaskTag>>,
    pub incarnations: Vec<Option<u32>>,
    /// Mirror of each node's stall: until when its tasks are parked.
    stalled_until: Vec<Option<Instant>>,
    /// The latest of `stalled_until`: no task is parked at a time at or
    /// after it, so `pick` skips the stall check then.
    stalled_latest: Option<Instant>,
    timing_rng: SimRng,
    poll_cost: PollCost,
    /// `poll_cost.max - poll_cost.min` in nanoseconds (saturated), and as a
    /// `u32` draw when it fits: computed once, drawn from at every poll.
    poll_cost_span: u64,
    poll_cost_span_u32: Option<InclusiveU32>,
    /// `poll_cost.min` in nanoseconds (saturated).
    poll_cost_min_nanos: u64,
    /// Polls so far.
    pub polls: u64,
    /// Every poll's time and task, folded.
    pub poll_fingerprint: Fingerprint,
    /// Every poll, when the trace keeps them.
    pub poll_records: Option<Vec<PollRecord>>,
}

impl Executor {
    pub fn new(
        scheduler: Box<dyn Scheduler>,
        timing_rng: SimRng,
        poll_cost: PollCost,
        keep_polls: bool,
    ) -> Executor {
        let span = u64::try_from(poll_cost.max.saturating_sub(poll_cost.min).as_nanos())
            .unwrap_or(u64::MAX);
        Executor {
            scheduler,
            runnables: Vec::new(),
            parked: BTreeMap::new(),
            woken: Vec::new(),
            stale: Vec::new(),
            incarnations: Vec::new(),
            stalled_until: Vec::new(),
            stalled_latest: None,
            timing_rng,
            poll_cost,
            poll_cost_span: span,
            poll_cost_min_nanos: u64::try_from(poll_cost.min.as_nanos()).unwrap_or(u64::MAX),
            poll_cost_span_u32: u32::try_from(span).ok().map(InclusiveU32::new),
            polls: 0,
            poll_fingerprint: Fingerprint::new(),
            poll_records: keep_polls.then(Vec::new),
        }
    }

    /// Move woken tasks from the inbox to the scheduler; drop those of a
    /// killed incarnation. Must be called without the world lock.
    pub fn absorb(&mut self, shared: &Shared) {
        shared.take_ready(&mut self.woken);
        if self.woken.is_empty() {
            return;
        }
        // In wake order: reversed once, then popped from the back (cheaper
        // per runnable than a draining iterator).
        self.woken.reverse();
        while let Some(runnable) = self.woken.pop() {
            let meta = runnable.metadata().meta;
            if self.incarnations[meta.node.index()] != Some(meta.incarnation) {
                self.stale.push(runnable);
                continue;
            }
            let slot = meta.id.slot();
            if self.runnables.len() <= slot {
                self.runnables.resize_with(slot + 1, || None);
            }
            let slot = &mut self.runnables[slot];
            assert!(
                slot.is_none(),
                "async-task keeps at most one runnable per task, and a slot serves one live task"
            );
            *slot = Some(Slot {
                runnable,
                node: meta.node,
            });
            self.scheduler.push(meta.id);
        }
        if !self.stale.is_empty() {
            // Dropping a runnable drops its future, which may lock the world.
            let stale = std::mem::take(&mut self.stale);
            drop(stale);
        }
    }

    /// A node was added: it runs, unstalled, in incarnation 0.
    pub fn add_node(&mut self) {
        self.incarnations.push(Some(0));
        self.stalled_until.push(None);
    }

    /// Mirror a node's stall (`None`: not stalled).
    pub fn set_stall(&mut self, node: NodeId, until: Option<Instant>) {
        self.stalled_until[node.index()] = until;
        self.stalled_latest = self.stalled_until.iter().flatten().max().copied();
    }

    /// The next task to poll at `now`, parking tasks of stalled nodes on
    /// the way.
    pub fn pick(&mut self, now: Instant) -> Option<Runnable<TaskTag>> {
        loop {
            let id = self.scheduler.pop()?;
            let slot = &mut self.runnables[id.slot()];
            if self.stalled_latest.is_some_and(|latest| latest > now) {
                let node = slot
                    .as_ref()
                    .expect("the scheduler only holds tasks with a runnable")
                    .node;
                if self.stalled_until[node.index()].is_some_and(|until| until > now) {
                    self.parked.entry(node).or_default().push(id);
                    continue;
                }
            }
            let taken = slot
                .take()
                .expect("the scheduler only holds tasks with a runnable");
            return Some(taken.runnable);
        }
    }

    /// The virtual time the next poll costs: how much above the minimum.
    pub fn draw_poll_cost(&mut self) -> PollCostDrawn {
        if self.poll_cost_span == 0 {
            return PollCostDrawn { extra_nanos: 0 };
        }
        // 32-bit draws when they suffice (spans up to 4.29 s): half the stream.
        let extra_nanos = match self.poll_cost_span_u32 {
            Some(draw) => u64::from(draw.sample(&mut self.timing_rng)),
            None => self.timing_rng.gen_range(0..=self.poll_cost_span),
        };
        PollCostDrawn { extra_nanos }
    }

    /// `now` plus the cost `drawn`: the same as `now + cost` with the cost
    /// as a `Duration`, without building it.
    pub fn after_poll(&self, now: Instant, drawn: PollCostDrawn) -> Instant {
        let cost = self.poll_cost_min_nanos.saturating_add(drawn.extra_nanos);
        Instant::from_nanos(now.as_nanos().saturating_add(cost))
    }

    /// Fold a poll into the fingerprint (and keep it, if asked).
    pub fn note_poll(&mut self, time: Instant, drawn: PollCostDrawn, meta: TaskMeta) {
        self.polls += 1;
        self.poll_fingerprint.write_u64(time.as_nanos());
        self.poll_fingerprint.write_u64(meta.id.as_u64());
        if let Some(records) = &mut self.poll_records {
            records.push(PollRecord {
                time,
                cost: self.poll_cost.min + Duration::from_nanos(drawn.extra_nanos),
                node: meta.node,
                task: meta.id,
            });
        }
    }

    /// The stall of `node` is over: its parked tasks are ready again, in
    /// the order they were parked.
    pub fn unpark(&mut self, node: NodeId) {
        for id in self.parked.remove(&node).unwrap_or_default() {
            self.scheduler.push(id);
        }
    }

    /// Take the runnables of `tasks` (of a killed node) out of the ready
    /// set and the parked lists; the caller drops them without the lock.
    pub fn withdraw(&mut self, node: NodeId, tasks: &[TaskId]) -> Vec<Runnable<TaskTag>> {
        let parked = self.parked.remove(&node).unwrap_or_default();
        let mut taken = Vec::new();
        for id in tasks {
            if let Some(runnable) = self.take(*id) {
                if !parked.contains(id) {
                    self.scheduler.withdraw(*id);
                }
                taken.push(runnable);
            }
            self.scheduler.retire(*id);
        }
        taken
    }

    /// Take `task`'s runnable out of its slot, if it is there.
    fn take(&mut self, task: TaskId) -> Option<Runnable<TaskTag>> {
        let slot = self.runnables.get_mut(task.slot())?;
        if slot
            .as_ref()
            .is_some_and(|slot| slot.runnable.metadata().meta.id == task)
        {
            slot.take().map(|slot| slot.runnable)
        } else {
            None
        }
    }

    /// Whether `task` is ready (woken and absorbed) or parked.
    pub fn is_runnable(&self, task: TaskId) -> bool {
        self.runnables
            .get(task.slot())
            .and_then(Option::as_ref)
            .is_some_and(|slot| slot.runnable.metadata().meta.id == task)
    }

    /// Whether `task` is parked on a stalled node.
    pub fn is_parked(&self, task: TaskId) -> bool {
        self.parked.values().any(|parked| parked.contains(&task))
    }

    /// Take everything out, for teardown.
    pub fn drain(&mut self) -> Vec<Runnable<TaskTag>> {
        self.parked.clear();
        while self.scheduler.pop().is_some() {}
        std::mem::take(&mut self.runnables)
            .into_iter()
            .flatten()
            .map(|slot| slot.runnable)
            .collect()
    }
}

/// A uniform draw from `0..=span`, exactly as rand 0.8's
/// `gen_range(0..=span)` on `u32` makes it (same values from the same
/// stream), with the bounds computed once instead of at every draw.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InclusiveU32 {
    /// `span + 1`, wrapped: 0 stands for the full `u32` range.
    range: u32,
    /// The largest accepted low half of the widening product.
    zone: u32,
}

impl InclusiveU32 {
    pub fn new(span: u32) -> InclusiveU32 {
        let range = span.wrapping_add(1);
        let zone = match range {
            0 => u32::MAX, // unused: every value is accepted
            _ => (range << range.leading_zeros()).wrapping_sub(1),
        };
        InclusiveU32 { range, zone }
    }

    /// Bounded: a draw is rejected with probability below one half.
    pub fn sample(self, rng: &mut SimRng) -> u32 {
        if self.range == 0 {
            return rng.next_u32();
        }
        loop {
            let product = u64::from(rng.next_u32()) * u64::from(self.range);
            if product as u32 <= self.zone {
                return (product >> 32) as u32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choices::{Choices, Purpose};
    use crate::scheduler::FifoScheduler;

    fn executor(min: Duration, max: Duration) -> Executor {
        Executor::new(
            Box::new(FifoScheduler::new()),
            Choices::new(7).stream(Purpose::Timing),
            PollCost { min, max },
            false,
        )
    }

    #[test]
    fn an_inclusive_u32_draw_matches_gen_range_value_for_value() {
        let spans = [
            0,
            1,
            2,
            3,
            19_000,
            1 << 31,
            (1 << 31) + 1,
            u32::MAX - 1,
            u32::MAX,
        ];
        for span in spans {
            for seed in 0..4 {
                let mut ours = Choices::new(seed).stream(Purpose::Timing);
                let mut theirs = Choices::new(seed).stream(Purpose::Timing);
                let draw = InclusiveU32::new(span);
                for _ in 0..200 {
                    assert_eq!(
                        draw.sample(&mut ours),
                        theirs.gen_range(0..=span),
                        "span {span}"
                    );
                }
                assert_eq!(ours.next_u64(), theirs.next_u64(), "same stream position");
            }
        }
    }

    #[test]
    fn the_clock_after_a_poll_matches_adding_the_cost_as_a_duration() {
        let cases = [
            (Duration::from_micros(1), Duration::from_micros(20)),
            (Duration::from_micros(5), Duration::from_micros(5)),
            (Duration::from_secs(3), Duration::from_secs(9)),
            (Duration::ZERO, Duration::from_secs(u64::MAX / 2)),
        ];
        let starts = [
            Instant::ZERO,
            Instant::from_millis(1_234),
            Instant::from_nanos(u64::MAX - 5),
        ];
        for (min, max) in cases {
            let mut executor = executor(min, max);
            for now in starts {
                for _ in 0..50 {
                    let drawn = executor.draw_poll_cost();
                    let cost = min + Duration::from_nanos(drawn.extra_nanos);
                    assert!(
                        cost >= min && cost <= max,
                        "{cost:?} outside {min:?}..={max:?}"
                    );
                    assert_eq!(executor.after_poll(now, drawn), now + cost);
                }
            }
        }
    }
}
