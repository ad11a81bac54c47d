//! How a run can fail on its own account (besides the caller's oracles):
//! a deadlock, a runaway past its bounds, or a panic in a task.

use std::fmt;
use std::time::Duration;

use faultline_core::runtime::Instant;

use crate::ids::{NodeId, TaskId};

/// Where a live task is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TaskState {
    /// Woken and waiting for its turn.
    Ready,
    /// Woken, but its node is stalled.
    Stalled,
    /// Waiting for something to wake it.
    Blocked,
}

/// A live task, as listed by [`Sim::tasks`](crate::Sim::tasks) and in
/// failure reports.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TaskInfo {
    /// Its id.
    pub id: TaskId,
    /// The name it was spawned with.
    pub name: String,
    /// Its node.
    pub node: NodeId,
    /// Its node's name.
    pub node_name: String,
    /// Where it is.
    pub state: TaskState,
}

impl fmt::Display for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            TaskState::Ready => "ready",
            TaskState::Stalled => "stalled",
            TaskState::Blocked => "blocked",
        };
        write!(
            f,
            "{}/{}#{} ({state})",
            self.node_name,
            self.name,
            self.id.as_u64()
        )
    }
}

/// Whether a failure breaks safety or liveness, for exit statuses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailureClass {
    /// Something wrong happened (a panic).
    Safety,
    /// Something never happened (a deadlock, a runaway).
    Liveness,
}

/// A run that failed on its own account. Failures are sticky: once a run
/// failed, every further step returns the same failure.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Failure {
    /// Nothing is ready and nothing is pending (no timer, delivery, stall or
    /// planned fault), yet tasks still wait.
    #[error("deadlock at {at}: nothing can run and nothing is pending, yet {} task(s) wait: {}", blocked.len(), list(blocked))]
    Deadlock {
        /// When it was detected.
        at: Instant,
        /// Every live task.
        blocked: Vec<TaskInfo>,
    },
    /// The run took more steps than its bound.
    #[error("runaway: {steps_max} steps reached at {at} with {} task(s) alive: {}", live.len(), list(live))]
    StepLimit {
        /// The bound.
        steps_max: u64,
        /// When it was reached.
        at: Instant,
        /// Every live task.
        live: Vec<TaskInfo>,
    },
    /// The run went past its virtual-time bound.
    #[error("runaway: virtual time would pass its bound of {time_max:?} with {} task(s) alive: {}", live.len(), list(live))]
    TimeLimit {
        /// The bound.
        time_max: Duration,
        /// Every live task.
        live: Vec<TaskInfo>,
    },
    /// A task panicked.
    #[error("task {task} panicked at {at}: {message}")]
    Panic {
        /// When.
        at: Instant,
        /// Which task.
        task: TaskInfo,
        /// The panic's message.
        message: String,
    },
}

impl Failure {
    /// Safety or liveness.
    pub fn class(&self) -> FailureClass {
        match self {
            Failure::Panic { .. } => FailureClass::Safety,
            Failure::Deadlock { .. } | Failure::StepLimit { .. } | Failure::TimeLimit { .. } => {
                FailureClass::Liveness
            }
        }
    }
}

fn list(tasks: &[TaskInfo]) -> String {
    const SHOWN_MAX: usize = 20;
    let mut text = tasks
        .iter()
        .take(SHOWN_MAX)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if tasks.len() > SHOWN_MAX {
        text.push_str(&format!(", and {} more", tasks.len() - SHOWN_MAX));
    }
    if text.is_empty() {
        text.push_str("none");
    }
    text
}
