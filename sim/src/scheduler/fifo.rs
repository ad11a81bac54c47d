//! The first-in, first-out scheduler: a baseline with no randomness.

use std::collections::VecDeque;

use super::Scheduler;
use crate::ids::TaskId;

/// Polls ready tasks in the order they became ready.
#[derive(Default)]
pub struct FifoScheduler {
    /// Ready tasks, oldest first. Invariant: no duplicates.
    ready: VecDeque<TaskId>,
}

impl FifoScheduler {
    /// An empty scheduler.
    pub fn new() -> FifoScheduler {
        FifoScheduler::default()
    }
}

impl Scheduler for FifoScheduler {
    fn describe(&self) -> String {
        "fifo".to_owned()
    }

    fn push(&mut self, task: TaskId) {
        self.ready.push_back(task);
    }

    fn pop(&mut self) -> Option<TaskId> {
        self.ready.pop_front()
    }

    fn withdraw(&mut self, task: TaskId) {
        let index = self
            .ready
            .iter()
            .position(|ready| *ready == task)
            .expect("withdraw precondition: the task is ready");
        self.ready.remove(index);
    }

    fn len(&self) -> usize {
        self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_push_order() {
        let mut scheduler = FifoScheduler::new();
        for id in [3, 1, 2] {
            scheduler.push(TaskId::new(id, 0));
        }
        scheduler.withdraw(TaskId::new(1, 0));
        assert_eq!(scheduler.pop(), Some(TaskId::new(3, 0)));
        scheduler.push(TaskId::new(4, 0));
        assert_eq!(scheduler.pop(), Some(TaskId::new(2, 0)));
        assert_eq!(scheduler.pop(), Some(TaskId::new(4, 0)));
        assert_eq!(scheduler.pop(), None);
    }
}
