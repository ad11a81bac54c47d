//! The client-observed history of every job, shared by the client nodes
//! and read by the oracles.
//!
//! Each client script (a submit and its watching, a cancel, a duplicate
//! submit) is one *chain* of sequential calls: a call starts after the
//! previous answer arrived, so the statuses one chain sees must follow the
//! job's status machine. Chains of the same job run concurrently and are
//! checked separately, except that a job has one terminal status, whoever
//! sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use faultline_core::job::is_legal_transition;
use faultline_core::protocol::{JobId, JobStatus};
use faultline_core::runtime::Instant;

/// What the clients know about one job (by its workload key).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct JobEntry {
    /// The owner.
    pub user: String,
    /// The id an acknowledged submit returned.
    pub id: Option<JobId>,
    /// When the first submit was acknowledged (client clock).
    pub acknowledged_at: Option<Instant>,
    /// Why the submit was refused, if it was.
    pub refused: Option<String>,
    /// Whether the submit's client gave up without an answer.
    pub abandoned: bool,
    /// When a cancel was acknowledged (client clock).
    pub cancel_acknowledged_at: Option<Instant>,
    /// Every status any chain saw.
    pub seen: BTreeSet<JobStatus>,
    /// The terminal status seen, if any.
    pub terminal: Option<JobStatus>,
}

/// A client history no correct supervisor produces.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HistoryViolation {
    /// Stable across seeds (`status-regressed`, `idempotency`, ...).
    pub site: &'static str,
    /// For humans.
    pub message: String,
    /// When it was observed (client clock).
    pub at: Instant,
}

#[derive(Default)]
struct BookState {
    jobs: BTreeMap<String, JobEntry>,
    /// Scripts (by action index) that have ended.
    finished: BTreeSet<usize>,
    scripts: usize,
    violations: Vec<HistoryViolation>,
}

/// The shared book. Cheap to clone.
#[derive(Clone, Default)]
pub struct ClientBook {
    state: Arc<Mutex<BookState>>,
}

/// The status one chain saw last.
pub type ChainLast = Option<JobStatus>;

impl ClientBook {
    /// A book for `scripts` client scripts.
    pub fn new(scripts: usize) -> ClientBook {
        let book = ClientBook::default();
        book.lock().scripts = scripts;
        book
    }

    fn lock(&self) -> MutexGuard<'_, BookState> {
        self.state
            .lock()
            .expect("the client book is never locked across a panic")
    }

    fn violate(state: &mut BookState, site: &'static str, message: String, at: Instant) {
        state
            .violations
            .push(HistoryViolation { site, message, at });
    }

    /// The submit of `key` by `user` was answered with job `id`. Every
    /// answer for one key must name the same job.
    pub fn acknowledge(&self, key: &str, user: &str, id: &JobId, at: Instant) {
        let mut state = self.lock();
        let entry = state.jobs.entry(key.to_owned()).or_default();
        entry.user = user.to_owned();
        match &entry.id {
            None => {
                entry.id = Some(id.clone());
                entry.acknowledged_at = Some(at);
            }
            Some(known) if known == id => {}
            Some(known) => {
                let message = format!(
                    "submits with idempotency key {key} were answered with two jobs: {known} and {id}"
                );
                Self::violate(&mut state, "idempotency", message, at);
            }
        }
    }

    /// The submit of `key` was refused (or given up on).
    pub fn refuse(&self, key: &str, user: &str, reason: String, abandoned: bool) {
        let mut state = self.lock();
        let entry = state.jobs.entry(key.to_owned()).or_default();
        entry.user = user.to_owned();
        if entry.id.is_none() {
            entry.refused = Some(reason);
            entry.abandoned = abandoned;
        }
    }

    /// A cancel of `key` was acknowledged.
    pub fn cancel_acknowledged(&self, key: &str, at: Instant) {
        let mut state = self.lock();
        if let Some(entry) = state.jobs.get_mut(key) {
            entry.cancel_acknowledged_at.get_or_insert(at);
        }
    }

    /// One chain saw `status` for `key`; `last` is what it saw before.
    pub fn observe(&self, key: &str, status: JobStatus, last: &mut ChainLast, at: Instant) {
        let mut state = self.lock();
        let entry = state.jobs.entry(key.to_owned()).or_default();
        entry.seen.insert(status);
        let id = entry
            .id
            .as_ref()
            .map_or_else(|| key.to_owned(), ToString::to_string);
        let mut problems = Vec::new();
        if let Some(before) = *last {
            if before != status && !is_legal_transition(before, status) {
                problems.push((
                    "status-regressed",
                    format!("a client saw job {id} {before}, then {status}"),
                ));
            }
        }
        if status.is_terminal() {
            match entry.terminal {
                None => entry.terminal = Some(status),
                Some(terminal) if terminal != status => problems.push((
                    "terminal-changed",
                    format!("clients saw job {id} end {terminal}, and also {status}"),
                )),
                Some(_) => {}
            }
        }
        *last = Some(status);
        for (site, message) in problems {
            Self::violate(&mut state, site, message, at);
        }
    }

    /// The supervisor answered "not found" for a job a submit acknowledged.
    pub fn lost(&self, key: &str, at: Instant) {
        let mut state = self.lock();
        let id = state
            .jobs
            .get(key)
            .and_then(|entry| entry.id.clone())
            .map_or_else(|| key.to_owned(), |id| id.to_string());
        let message = format!("job {id} was acknowledged, then the supervisor did not know it");
        Self::violate(&mut state, "acknowledged-job-lost", message, at);
    }

    /// Script `index` ended.
    pub fn finish_script(&self, index: usize) {
        self.lock().finished.insert(index);
    }

    /// Whether every script ended.
    pub fn all_scripts_finished(&self) -> bool {
        let state = self.lock();
        state.finished.len() >= state.scripts
    }

    /// Scripts still running.
    pub fn scripts_running(&self) -> usize {
        let state = self.lock();
        state.scripts.saturating_sub(state.finished.len())
    }

    /// The first violation observed, if any.
    pub fn first_violation(&self) -> Option<HistoryViolation> {
        self.lock().violations.first().cloned()
    }

    /// What the clients know of `key`.
    pub fn entry(&self, key: &str) -> Option<JobEntry> {
        self.lock().jobs.get(key).cloned()
    }

    /// What the clients know, by key.
    pub fn entries(&self) -> BTreeMap<String, JobEntry> {
        self.lock().jobs.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_that_goes_back_is_a_violation() {
        let book = ClientBook::new(1);
        let id = JobId("j-1".into());
        book.acknowledge("k-1", "alice", &id, Instant::ZERO);
        let mut chain = None;
        book.observe("k-1", JobStatus::Pending, &mut chain, Instant::ZERO);
        book.observe("k-1", JobStatus::Running, &mut chain, Instant::ZERO);
        assert_eq!(book.first_violation(), None);
        book.observe("k-1", JobStatus::Pending, &mut chain, Instant::ZERO);
        let violation = book.first_violation().expect("regressed");
        assert_eq!(violation.site, "status-regressed");
        assert!(violation.message.contains("j-1"), "{violation:?}");
    }

    #[test]
    fn separate_chains_may_interleave_but_agree_on_the_end() {
        let book = ClientBook::new(2);
        let (mut watcher, mut canceler) = (None, None);
        book.observe("k-1", JobStatus::Canceled, &mut watcher, Instant::ZERO);
        book.observe("k-1", JobStatus::Running, &mut canceler, Instant::ZERO);
        assert_eq!(book.first_violation(), None, "chains are checked apart");
        book.observe("k-1", JobStatus::Completed, &mut canceler, Instant::ZERO);
        assert_eq!(
            book.first_violation().map(|v| v.site),
            Some("terminal-changed")
        );
    }

    #[test]
    fn one_key_names_one_job() {
        let book = ClientBook::new(2);
        book.acknowledge("k-1", "alice", &JobId("j-1".into()), Instant::ZERO);
        book.acknowledge("k-1", "alice", &JobId("j-1".into()), Instant::ZERO);
        assert_eq!(book.first_violation(), None);
        book.acknowledge("k-1", "alice", &JobId("j-2".into()), Instant::ZERO);
        assert_eq!(book.first_violation().map(|v| v.site), Some("idempotency"));
    }

    #[test]
    fn scripts_are_counted() {
        let book = ClientBook::new(2);
        book.finish_script(0);
        assert!(!book.all_scripts_finished());
        book.finish_script(1);
        assert!(book.all_scripts_finished());
    }
}
