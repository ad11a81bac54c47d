//! The uniformly random scheduler.

use rand::Rng;

use super::Scheduler;
use crate::choices::SimRng;
use crate::ids::TaskId;

/// Polls a uniformly random ready task at every step.
pub struct RandomScheduler {
    /// The ready set, in no meaningful order (removal swaps the last entry
    /// in). Invariant: no duplicates.
    ready: Vec<TaskId>,
    rng: SimRng,
}

impl RandomScheduler {
    /// An empty scheduler drawing from `rng`.
    pub fn new(rng: SimRng) -> RandomScheduler {
        RandomScheduler {
            ready: Vec::new(),
            rng,
        }
    }
}

impl Scheduler for RandomScheduler {
    fn describe(&self) -> String {
        "random".to_owned()
    }

    fn push(&mut self, task: TaskId) {
        self.ready.push(task);
    }

    fn pop(&mut self) -> Option<TaskId> {
        match self.ready.len() {
            0 => None,
            1 => self.ready.pop(),
            len => {
                // 32-bit draws when they suffice: half the stream per step.
                let index = match u32::try_from(len) {
                    Ok(len) => self.rng.gen_range(0..len) as usize,
                    Err(_) => self.rng.gen_range(0..len),
                };
                Some(self.ready.swap_remove(index))
            }
        }
    }

    fn withdraw(&mut self, task: TaskId) {
        let index = self
            .ready
            .iter()
            .position(|ready| *ready == task)
            .expect("withdraw precondition: the task is ready");
        self.ready.swap_remove(index);
    }

    fn len(&self) -> usize {
        self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choices::{Choices, Purpose};

    fn order(seed: u64) -> Vec<TaskId> {
        let mut scheduler = RandomScheduler::new(Choices::new(seed).stream(Purpose::Schedule));
        for id in 1..=6 {
            scheduler.push(TaskId::new(id, 0));
        }
        std::iter::from_fn(|| scheduler.pop()).collect()
    }

    #[test]
    fn pops_every_ready_task_once() {
        let mut popped = order(1);
        popped.sort();
        assert_eq!(
            popped,
            (1..=6).map(|id| TaskId::new(id, 0)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn order_depends_on_the_seed_only() {
        assert_eq!(order(5), order(5));
        let distinct: std::collections::BTreeSet<Vec<TaskId>> = (0..20).map(order).collect();
        assert!(
            distinct.len() > 10,
            "only {} orders in 20 seeds",
            distinct.len()
        );
    }

    #[test]
    fn withdrawn_tasks_are_not_popped() {
        let mut scheduler = RandomScheduler::new(Choices::new(1).stream(Purpose::Schedule));
        scheduler.push(TaskId::new(1, 0));
        scheduler.push(TaskId::new(2, 0));
        scheduler.withdraw(TaskId::new(1, 0));
        assert_eq!(scheduler.pop(), Some(TaskId::new(2, 0)));
        assert_eq!(scheduler.pop(), None);
    }
}
