//! Probabilistic concurrency testing (PCT).
//!
//! PCT (Burckhardt, Kothari, Musuvathi, Nagarakatte: "A Randomized Scheduler
//! with Probabilistic Guarantees of Finding Bugs", ASPLOS 2010) runs the
//! ready task of highest priority. Each task gets a random priority when it
//! is first seen; at `d − 1` steps chosen at random among the first `k`, the
//! task that ran the step before drops to a priority below every initial
//! one.
//!
//! **The bound.** A bug of *depth* `d` needs `d` ordering constraints between
//! steps to hold (a lost update, "A reads, B writes, A writes", has depth 2).
//! For a run of at most `n` tasks and `k` steps, one run of PCT with depth
//! `d` hits a given bug of depth `d` with probability at least
//! `1 / (n · k^(d−1))`: the right task must get the top priority (`1/n`),
//! and each of the `d − 1` change points must land on the one step that
//! hands over (`1/k` each). The expected number of runs to find it is thus
//! at most `n · k^(d−1)`, however unlikely the interleaving is for a random
//! scheduler. A step here is one poll, so `k` counts polls; an estimate
//! below the true count weakens the bound only for steps past the estimate.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

use super::Scheduler;
use crate::choices::SimRng;
use crate::ids::TaskId;

/// The PCT scheduler. See the module documentation for the guarantee.
pub struct PctScheduler {
    /// `d`: the bug depth targeted. Invariant: `depth >= 1`.
    depth: u32,
    /// `k`: the estimated number of steps of a run. Invariant: `>= 1`.
    steps_estimate: u64,
    /// Steps taken so far: the number of `pop`s that returned a task.
    steps: u64,
    /// Steps at which a priority changes, in `1..=steps_estimate`, distinct,
    /// ascending, at most `depth − 1` of them. Consumed from the front.
    change_points: Vec<u64>,
    /// How many change points have been consumed.
    changes_made: u32,
    /// Priority of every task seen and not retired. Invariant: initial
    /// priorities are `>= depth`; the `i`-th change (1-based) sets
    /// `depth − i`, so lowered priorities are distinct and below every
    /// initial one.
    priorities: BTreeMap<TaskId, u64>,
    /// The ready set ordered by `(priority, task)`; the last entry runs
    /// next. Invariant: holds exactly the ready tasks, each with its current
    /// priority.
    ready: BTreeSet<(u64, TaskId)>,
    /// The task returned by the previous `pop`: the one whose priority drops
    /// at a change point.
    last: Option<TaskId>,
    rng: SimRng,
}

impl PctScheduler {
    /// A scheduler for bugs of depth `depth` over about `steps_estimate`
    /// steps, drawing its priorities and change points from `rng`.
    pub fn new(depth: u32, steps_estimate: u64, mut rng: SimRng) -> PctScheduler {
        assert!(depth >= 1, "PCT depth must be at least 1");
        assert!(steps_estimate >= 1, "PCT step estimate must be at least 1");
        let change_points = draw_change_points(depth - 1, steps_estimate, &mut rng);
        PctScheduler {
            depth,
            steps_estimate,
            steps: 0,
            change_points,
            changes_made: 0,
            priorities: BTreeMap::new(),
            ready: BTreeSet::new(),
            last: None,
            rng,
        }
    }

    /// The steps at which a priority changes.
    pub fn change_points(&self) -> &[u64] {
        &self.change_points
    }

    fn priority_of(&mut self, task: TaskId) -> u64 {
        let depth = u64::from(self.depth);
        let rng = &mut self.rng;
        *self
            .priorities
            .entry(task)
            .or_insert_with(|| rng.gen_range(depth..u64::MAX))
    }

    /// At a change point, drop the priority of the task that ran last.
    fn change_priority_if_due(&mut self) {
        let Some(next_point) = self.change_points.get(self.changes_made as usize) else {
            return;
        };
        if *next_point != self.steps {
            return;
        }
        self.changes_made += 1;
        let lowered = u64::from(self.depth - self.changes_made);
        assert!(lowered >= 1, "PCT makes at most depth - 1 changes");
        let Some(last) = self.last else { return };
        let Some(priority) = self.priorities.get_mut(&last) else {
            return; // retired since it ran
        };
        let old = std::mem::replace(priority, lowered);
        if self.ready.remove(&(old, last)) {
            self.ready.insert((lowered, last));
        }
    }
}

/// `count` distinct steps drawn uniformly from `1..=steps_estimate`,
/// ascending. Every step if there are no more steps than points.
fn draw_change_points(count: u32, steps_estimate: u64, rng: &mut SimRng) -> Vec<u64> {
    let count = u64::from(count);
    if count >= steps_estimate {
        return (1..=steps_estimate).collect();
    }
    let mut points = BTreeSet::new();
    // Rejection sampling: count < steps_estimate, so each draw is new with
    // probability > 0; the bound only guards against a broken generator.
    let attempts_max = 64 * (count + 1);
    for _ in 0..attempts_max {
        if points.len() as u64 == count {
            break;
        }
        points.insert(rng.gen_range(1..=steps_estimate));
    }
    assert_eq!(
        points.len() as u64,
        count,
        "change point sampling ended early"
    );
    points.into_iter().collect()
}

impl Scheduler for PctScheduler {
    fn describe(&self) -> String {
        format!("pct(d={},k={})", self.depth, self.steps_estimate)
    }

    fn push(&mut self, task: TaskId) {
        let priority = self.priority_of(task);
        let inserted = self.ready.insert((priority, task));
        debug_assert!(inserted, "{task} pushed twice");
    }

    fn pop(&mut self) -> Option<TaskId> {
        if self.ready.is_empty() {
            return None;
        }
        self.steps += 1;
        self.change_priority_if_due();
        let (_, task) = self.ready.pop_last()?;
        self.last = Some(task);
        Some(task)
    }

    fn withdraw(&mut self, task: TaskId) {
        let priority = *self
            .priorities
            .get(&task)
            .expect("withdraw precondition: the task is ready, so it has a priority");
        let removed = self.ready.remove(&(priority, task));
        assert!(removed, "withdraw precondition: the task is ready");
    }

    fn retire(&mut self, task: TaskId) {
        self.priorities.remove(&task);
    }

    fn len(&self) -> usize {
        self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choices::{Choices, Purpose};

    fn scheduler(seed: u64, depth: u32, steps_estimate: u64) -> PctScheduler {
        PctScheduler::new(
            depth,
            steps_estimate,
            Choices::new(seed).stream(Purpose::Schedule),
        )
    }

    #[test]
    fn depth_one_runs_the_top_task_until_it_stops_being_ready() {
        let mut pct = scheduler(9, 1, 100);
        for id in 1..=3 {
            pct.push(TaskId::new(id, 0));
        }
        let first = pct.pop().expect("three ready");
        for _ in 0..10 {
            pct.push(first);
            assert_eq!(pct.pop(), Some(first), "a yielding top task keeps running");
        }
    }

    #[test]
    fn change_points_are_distinct_and_in_range() {
        for seed in 0..50 {
            let pct = scheduler(seed, 4, 20);
            let points = pct.change_points();
            assert_eq!(points.len(), 3);
            assert!(points.windows(2).all(|pair| pair[0] < pair[1]));
            assert!(points.iter().all(|point| (1..=20).contains(point)));
        }
        assert_eq!(scheduler(1, 5, 3).change_points(), &[1, 2, 3]);
    }

    #[test]
    fn a_change_point_hands_over_to_another_task() {
        for seed in 0..20 {
            let mut pct = scheduler(seed, 2, 10);
            let point = pct.change_points()[0];
            pct.push(TaskId::new(1, 0));
            pct.push(TaskId::new(2, 0));
            let mut previous = None;
            for step in 1..=10 {
                let task = pct.pop().expect("two ready");
                if step == point && step > 1 {
                    assert_ne!(Some(task), previous, "seed {seed}: step {step} must switch");
                } else if step > 1 {
                    assert_eq!(
                        Some(task),
                        previous,
                        "seed {seed}: step {step} must not switch"
                    );
                }
                pct.push(task);
                previous = Some(task);
            }
        }
    }

    #[test]
    fn retired_tasks_are_forgotten() {
        let mut pct = scheduler(3, 2, 10);
        pct.push(TaskId::new(1, 0));
        assert_eq!(pct.pop(), Some(TaskId::new(1, 0)));
        pct.retire(TaskId::new(1, 0));
        assert!(pct.priorities.is_empty());
        assert_eq!(pct.pop(), None);
    }
}
