//! Jobs: the durable record of one job and its status machine.
//!
//! ```text
//! Pending ──► Running ──► Completed | Failed | Canceled | TimedOut | Lost
//!    └──────────────────► Failed | Canceled | TimedOut | Lost
//! ```
//!
//! A job is `Pending` while it waits for slots, for an agent, or for its
//! dispatched run to be reported started; `Running` once an agent reported
//! (or, after a reconnect, declared) its process. Terminal statuses are
//! final. Every change is appended to the record's history with its time and
//! reason; oracles replay that history to check legality.

use serde::{Deserialize, Serialize};

use crate::protocol::{AgentId, ExitInfo, JobId, JobKind, JobStatus, JobView, RunId};
use crate::runtime::Instant;

/// Whether a job may go from `from` to `to`.
pub fn is_legal_transition(from: JobStatus, to: JobStatus) -> bool {
    match from {
        JobStatus::Pending => to != JobStatus::Pending,
        JobStatus::Running => to.is_terminal(),
        _ => false,
    }
}

/// One step of a job's status history.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StatusChange {
    /// The status before; `None` for the job's creation.
    pub from: Option<JobStatus>,
    /// The status after.
    pub to: JobStatus,
    /// When, on the supervisor's clock.
    pub at: Instant,
    /// Why, for humans.
    pub reason: String,
}

/// A status change the machine refuses.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("job {job}: illegal status transition {from} -> {to}")]
pub struct IllegalTransition {
    /// The job.
    pub job: JobId,
    /// Its status.
    pub from: JobStatus,
    /// The refused status.
    pub to: JobStatus,
}

/// One run (attempt) of a job on an agent.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id (1 for the first run).
    pub run: RunId,
    /// The agent it was sent to.
    pub agent: AgentId,
    /// When the supervisor committed the dispatch (before sending `Run`).
    pub dispatched_at: Instant,
    /// When the agent reported (or declared) the process.
    pub started_at: Option<Instant>,
    /// When the run ended, as far as the supervisor knows.
    pub ended_at: Option<Instant>,
    /// How it ended (`completed`, `undelivered`, `lost`, ...).
    pub outcome: Option<String>,
}

impl RunRecord {
    /// Whether the supervisor still considers the run possibly live.
    pub fn is_open(&self) -> bool {
        self.ended_at.is_none()
    }
}

/// Everything durable about a job. Stored by the [`Store`](crate::store::Store).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// `j-<seq>`.
    pub id: JobId,
    /// The numeric part of the id: submission order, never reused.
    pub seq: u64,
    /// The user who submitted it.
    pub owner: String,
    /// Its kind.
    pub kind: JobKind,
    /// Program and arguments.
    pub command: Vec<String>,
    /// The effective max run time in milliseconds.
    pub max_run_ms: u64,
    /// The submitter's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Current status; always the `to` of the last history entry.
    pub status: JobStatus,
    /// Every run dispatched, oldest first. At most one is open.
    pub runs: Vec<RunRecord>,
    /// When the submit was accepted.
    pub created_at: Instant,
    /// When its current or last run started.
    pub started_at: Option<Instant>,
    /// When it reached a terminal status.
    pub finished_at: Option<Instant>,
    /// How the process ended, when known.
    pub exit: Option<ExitInfo>,
    /// Why it ended, for statuses other than `Completed`.
    pub reason: Option<String>,
    /// When its owner's cancel was acknowledged, if one was.
    pub cancel_requested_at: Option<Instant>,
    /// Every status change, oldest first; starts with the creation.
    pub history: Vec<StatusChange>,
}

/// The client-facing fields of a new job.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewJob {
    /// Submission order.
    pub seq: u64,
    /// Owner.
    pub owner: String,
    /// Kind.
    pub kind: JobKind,
    /// Command.
    pub command: Vec<String>,
    /// Effective max run time.
    pub max_run_ms: u64,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
}

impl JobRecord {
    /// A new `Pending` job accepted at `at`.
    pub fn new(job: NewJob, at: Instant) -> JobRecord {
        JobRecord {
            id: JobId(format!("j-{}", job.seq)),
            seq: job.seq,
            owner: job.owner,
            kind: job.kind,
            command: job.command,
            max_run_ms: job.max_run_ms,
            idempotency_key: job.idempotency_key,
            status: JobStatus::Pending,
            runs: Vec::new(),
            created_at: at,
            started_at: None,
            finished_at: None,
            exit: None,
            reason: None,
            cancel_requested_at: None,
            history: vec![StatusChange {
                from: None,
                to: JobStatus::Pending,
                at,
                reason: "submitted".to_owned(),
            }],
        }
    }

    /// Move to `to` if the status machine allows it; record the change.
    pub fn transition(
        &mut self,
        to: JobStatus,
        at: Instant,
        reason: &str,
    ) -> Result<(), IllegalTransition> {
        if !is_legal_transition(self.status, to) {
            return Err(IllegalTransition {
                job: self.id.clone(),
                from: self.status,
                to,
            });
        }
        self.record_status(to, at, reason);
        Ok(())
    }

    /// Record a change to `to` whether or not it is legal. Only the paths a
    /// [`Flaw`](crate::flaws::Flaw) opens use it: the illegal step then sits
    /// in the history, where the oracle reports it.
    pub fn force_status(&mut self, to: JobStatus, at: Instant, reason: &str) {
        self.record_status(to, at, reason);
    }

    fn record_status(&mut self, to: JobStatus, at: Instant, reason: &str) {
        let last = self
            .history
            .last()
            .map_or(Instant::ZERO, |change| change.at);
        assert!(
            at >= last,
            "job {}: status history goes back in time",
            self.id
        );
        self.history.push(StatusChange {
            from: Some(self.status),
            to,
            at,
            reason: reason.to_owned(),
        });
        self.status = to;
        match to {
            JobStatus::Running => self.started_at = Some(at),
            JobStatus::Pending => {}
            JobStatus::Completed => self.finished_at = Some(at),
            _ => {
                self.finished_at = Some(at);
                self.reason = Some(reason.to_owned());
            }
        }
    }

    /// The open run, if any.
    pub fn open_run(&self) -> Option<&RunRecord> {
        self.runs.last().filter(|run| run.is_open())
    }

    /// The open run, if any, mutably.
    pub fn open_run_mut(&mut self) -> Option<&mut RunRecord> {
        self.runs.last_mut().filter(|run| run.is_open())
    }

    /// Record a new run sent to `agent`; returns its id. Panics if a run is
    /// still open: one job never has two runs in flight.
    pub fn open_new_run(&mut self, agent: AgentId, at: Instant) -> RunId {
        assert!(
            self.open_run().is_none(),
            "job {}: a new run while run {:?} is open",
            self.id,
            self.open_run().map(|run| run.run)
        );
        let run = self.runs.last().map_or(1, |last| last.run + 1);
        self.runs.push(RunRecord {
            run,
            agent,
            dispatched_at: at,
            started_at: None,
            ended_at: None,
            outcome: None,
        });
        run
    }

    /// Close the open run `run` with `outcome`. Returns false if `run` is not
    /// the open run.
    pub fn close_run(&mut self, run: RunId, at: Instant, outcome: &str) -> bool {
        match self.open_run_mut() {
            Some(open) if open.run == run => {
                open.ended_at = Some(at);
                open.outcome = Some(outcome.to_owned());
                true
            }
            _ => false,
        }
    }

    /// Take back the open run `run` that never reached its agent (the
    /// supervisor did not send it). Its id may be used again: no agent ever
    /// saw it. Returns false if `run` is not the open, unstarted run.
    pub fn withdraw_run(&mut self, run: RunId) -> bool {
        match self.open_run() {
            Some(open) if open.run == run && open.started_at.is_none() => {
                self.runs.pop();
                true
            }
            _ => false,
        }
    }

    /// Runs dispatched so far.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.runs.len()).expect("runs are bounded by max_attempts")
    }

    /// The client's view, with the live fields the supervisor computes.
    pub fn view(&self, queue_position: Option<u32>, situation: Option<String>) -> JobView {
        JobView {
            id: self.id.clone(),
            owner: self.owner.clone(),
            kind: self.kind,
            command: self.command.clone(),
            status: self.status,
            queue_position,
            max_run_ms: self.max_run_ms,
            attempts: self.attempts(),
            agent: self.runs.last().map(|run| run.agent.clone()),
            situation,
            created_ms: self.created_at.as_millis(),
            started_ms: self.started_at.map(Instant::as_millis),
            finished_ms: self.finished_at.map(Instant::as_millis),
            exit: self.exit.clone(),
            reason: self.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job() -> JobRecord {
        JobRecord::new(
            NewJob {
                seq: 7,
                owner: "alice".into(),
                kind: JobKind::Parallel,
                command: vec!["true".into()],
                max_run_ms: 1_000,
                idempotency_key: None,
            },
            Instant::from_millis(1),
        )
    }

    const ALL_STATUSES: [JobStatus; 7] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Canceled,
        JobStatus::TimedOut,
        JobStatus::Lost,
    ];

    #[test]
    fn a_new_job_is_pending_with_its_creation_in_the_history() {
        let job = job();
        assert_eq!(job.id, JobId("j-7".into()));
        assert_eq!(job.status, JobStatus::Pending);
        assert_eq!(job.history.len(), 1);
        assert_eq!(job.history[0].from, None);
    }

    #[test]
    fn terminal_statuses_are_final() {
        let mut job = job();
        job.transition(JobStatus::Running, Instant::from_millis(2), "started")
            .expect("pending -> running");
        job.transition(JobStatus::Completed, Instant::from_millis(3), "exit 0")
            .expect("running -> completed");
        for to in ALL_STATUSES {
            let error = job
                .transition(to, Instant::from_millis(4), "late")
                .expect_err("terminal is final");
            assert_eq!(error.from, JobStatus::Completed);
        }
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!(job.finished_at, Some(Instant::from_millis(3)));
        assert_eq!(job.reason, None);
    }

    #[test]
    fn running_never_goes_back_to_pending() {
        let mut job = job();
        job.transition(JobStatus::Running, Instant::from_millis(2), "started")
            .expect("pending -> running");
        assert!(job
            .transition(JobStatus::Pending, Instant::from_millis(3), "requeue")
            .is_err());
    }

    #[test]
    fn force_status_records_an_illegal_step_for_the_oracle() {
        let mut job = job();
        job.transition(JobStatus::Canceled, Instant::from_millis(2), "canceled")
            .expect("pending -> canceled");
        job.force_status(JobStatus::TimedOut, Instant::from_millis(3), "timer");
        let last = job.history.last().expect("history");
        assert!(!is_legal_transition(last.from.expect("from"), last.to));
    }

    #[test]
    fn runs_open_and_close_one_at_a_time() {
        let mut job = job();
        let first = job.open_new_run(AgentId("a-1".into()), Instant::from_millis(2));
        assert_eq!(first, 1);
        assert!(!job.close_run(2, Instant::from_millis(3), "wrong run"));
        assert!(job.close_run(1, Instant::from_millis(3), "undelivered"));
        let second = job.open_new_run(AgentId("a-2".into()), Instant::from_millis(4));
        assert_eq!(second, 2);
        assert_eq!(job.attempts(), 2);
        assert_eq!(job.open_run().map(|run| run.run), Some(2));
    }

    #[test]
    #[should_panic(expected = "a new run while run")]
    fn a_second_open_run_is_a_bug() {
        let mut job = job();
        job.open_new_run(AgentId("a-1".into()), Instant::from_millis(2));
        job.open_new_run(AgentId("a-1".into()), Instant::from_millis(3));
    }

    proptest! {
        #[test]
        fn any_sequence_of_attempts_keeps_a_legal_history(
            attempts in proptest::collection::vec((0usize..7, 0u64..5), 0..20)
        ) {
            let mut job = job();
            let mut now = Instant::from_millis(1);
            for (index, step_ms) in attempts {
                now = now + std::time::Duration::from_millis(step_ms);
                let before = job.status;
                let to = ALL_STATUSES[index];
                let result = job.transition(to, now, "step");
                prop_assert_eq!(result.is_ok(), is_legal_transition(before, to));
                if before.is_terminal() {
                    prop_assert_eq!(job.status, before);
                }
            }
            let mut previous = None;
            let mut previous_at = Instant::ZERO;
            for change in &job.history {
                prop_assert_eq!(change.from, previous);
                if let Some(from) = change.from {
                    prop_assert!(is_legal_transition(from, change.to));
                }
                prop_assert!(change.at >= previous_at);
                previous = Some(change.to);
                previous_at = change.at;
            }
            prop_assert_eq!(Some(job.status), previous);
        }
    }
}
