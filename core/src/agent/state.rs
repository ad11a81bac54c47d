//! The agent's memory across connections: the runs it executes, the reports
//! it still owes the supervisor, and the live link (if any) to send on.
//!
//! [`AgentState`] is a synchronous state machine behind one mutex shared by
//! the session loop and the run tasks. Every method runs to completion under
//! the lock and never awaits (sending a frame never awaits), so no lock is
//! ever held across an `.await`.
//!
//! Invariants:
//! * a run is in `runs` from the moment it is accepted until its process
//!   ended (or failed to start); then it moves, in the same critical section,
//!   to `reports`. A run is never in both;
//! * `runs.len() <= slots`: runs over capacity are refused, never started;
//! * a report leaves `reports` only when the supervisor acknowledged a
//!   heartbeat sent after it on the same link (frames on one connection
//!   arrive in order or the connection fails), or when the buffer overflows
//!   (logged as an error);
//! * when there is no link, no report is marked sent.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::codec;
use crate::protocol::{AgentId, AgentMessage, ExitInfo, JobId, JobKind, RunId, RunningJob};
use crate::runtime::{FrameSender, LaunchError, Process, ProcessExit};

/// How many reports the agent keeps for a supervisor that does not confirm
/// them. Past it the oldest report is dropped and an error logged.
pub const REPORTS_MAX: usize = 1_024;

/// How many jobs the agent remembers the latest run of, to ignore
/// duplicated or stale `Run` messages.
pub const RUN_HISTORY_MAX: usize = 4_096;

/// A run of a job: the unit the agent executes and reports on.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct RunKey {
    pub job: JobId,
    pub run: RunId,
}

impl std::fmt::Display for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.job, self.run)
    }
}

/// Whether the supervisor asked to kill a run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KillRequest {
    NotRequested,
    Requested,
}

struct RunEntry {
    /// `None` while the launcher is still starting the process.
    process: Option<Arc<dyn Process>>,
    kill: KillRequest,
}

/// Where a report stands on the current link.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Delivery {
    /// Not sent on the current link.
    Pending,
    /// Sent; confirmed once a heartbeat with this sequence number (or a
    /// later one) is acknowledged.
    Sent { heartbeat_seq_next: u64 },
}

struct Report {
    key: RunKey,
    exit: ExitInfo,
    killed: bool,
    delivery: Delivery,
}

struct Link {
    sender: FrameSender,
    session: u64,
    heartbeat_seq_next: u64,
}

/// What to do with a `Run` message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RunDecision {
    /// Accepted and recorded: start its process.
    Start,
    /// A duplicate or stale message: do nothing.
    Ignore(&'static str),
    /// Refused; a failed `Finished` was queued with this reason.
    Refuse(String),
}

/// Whether the agent still runs jobs or is stopping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lifecycle {
    Running,
    Stopped,
}

/// See the module docs.
pub(crate) struct AgentState {
    agent: AgentId,
    kinds: Vec<JobKind>,
    slots: u32,
    lifecycle: Lifecycle,
    runs: BTreeMap<RunKey, RunEntry>,
    reports: VecDeque<Report>,
    /// The latest run seen per job, with the jobs in the order first seen
    /// (for eviction once `RUN_HISTORY_MAX` jobs are remembered).
    run_latest: BTreeMap<JobId, RunId>,
    run_history_order: VecDeque<JobId>,
    link: Option<Link>,
}

impl AgentState {
    pub fn new(agent: AgentId, kinds: Vec<JobKind>, slots: u32) -> AgentState {
        assert!(slots > 0, "an agent has at least one slot");
        AgentState {
            agent,
            kinds,
            slots,
            lifecycle: Lifecycle::Running,
            runs: BTreeMap::new(),
            reports: VecDeque::new(),
            run_latest: BTreeMap::new(),
            run_history_order: VecDeque::new(),
            link: None,
        }
    }

    /// The runs to declare in a hello: every run still executing and every
    /// run whose report the supervisor has not confirmed (its `Finished`
    /// follows the welcome), so the supervisor never settles as lost a run
    /// whose outcome is on its way.
    pub fn declared_runs(&self) -> Vec<RunningJob> {
        let keys: BTreeSet<&RunKey> = self
            .runs
            .keys()
            .chain(self.reports.iter().map(|report| &report.key))
            .collect();
        keys.into_iter()
            .map(|key| RunningJob {
                job: key.job.clone(),
                run: key.run,
            })
            .collect()
    }

    /// Attach the link of a welcomed session and send every pending report.
    pub fn open_link(&mut self, sender: FrameSender, session: u64) {
        assert!(self.link.is_none(), "one link at a time");
        self.link = Some(Link {
            sender,
            session,
            heartbeat_seq_next: 0,
        });
        for index in 0..self.reports.len() {
            self.deliver(index);
        }
    }

    /// Detach the link: everything sent on it and unconfirmed is pending again.
    pub fn close_link(&mut self) {
        if let Some(link) = self.link.take() {
            link.sender.close();
        }
        for report in &mut self.reports {
            report.delivery = Delivery::Pending;
        }
    }

    /// Decide on a `Run` for `key` of `kind`, recording it if accepted.
    pub fn decide_run(&mut self, key: &RunKey, kind: JobKind) -> RunDecision {
        if self.runs.contains_key(key) || self.reports.iter().any(|report| &report.key == key) {
            return RunDecision::Ignore("duplicate run: already running or reported");
        }
        if self
            .run_latest
            .get(&key.job)
            .is_some_and(|&latest| latest >= key.run)
        {
            return RunDecision::Ignore("stale run: a run as recent of this job was seen");
        }
        self.remember_run(key);
        let refusal = if self.lifecycle == Lifecycle::Stopped {
            Some("the agent is stopping".to_owned())
        } else if !self.kinds.contains(&kind) {
            let accepted: Vec<&str> = self.kinds.iter().map(|kind| kind.as_str()).collect();
            Some(format!(
                "kind {kind} not accepted (accepts {})",
                accepted.join(", ")
            ))
        } else if self.runs.len() >= self.slots as usize {
            Some(format!("over capacity: all {} slots busy", self.slots))
        } else {
            None
        };
        if let Some(reason) = refusal {
            let reason = format!("agent {} refused run {key}: {reason}", self.agent);
            self.push_report(key.clone(), failure(reason.clone()), false);
            return RunDecision::Refuse(reason);
        }
        let entry = RunEntry {
            process: None,
            kill: KillRequest::NotRequested,
        };
        self.runs.insert(key.clone(), entry);
        assert!(
            self.runs.len() <= self.slots as usize,
            "runs never exceed slots"
        );
        RunDecision::Start
    }

    /// The launcher started `key`'s process: announce it, and kill it at
    /// once if a kill arrived while it was starting (or the agent stopped).
    pub fn attach_process(&mut self, key: &RunKey, process: Arc<dyn Process>) {
        let stopped = self.lifecycle == Lifecycle::Stopped;
        let entry = self
            .runs
            .get_mut(key)
            .expect("only the run's own task removes its entry, and it is the caller");
        assert!(entry.process.is_none(), "a run starts one process");
        entry.process = Some(Arc::clone(&process));
        if stopped || entry.kill == KillRequest::Requested {
            process.kill();
        }
        self.send(&AgentMessage::Started {
            job: key.job.clone(),
            run: key.run,
        });
    }

    /// Kill `key`'s process if it runs. Returns whether the run is known.
    pub fn request_kill(&mut self, key: &RunKey) -> bool {
        let Some(entry) = self.runs.get_mut(key) else {
            return false;
        };
        entry.kill = KillRequest::Requested;
        if let Some(process) = &entry.process {
            process.kill();
        }
        true
    }

    /// `key`'s process ended: queue (and send, if linked) its report.
    /// `killed` is true only if a kill was requested and the process did not
    /// succeed by itself: a completion is never reported as a kill.
    pub fn record_exit(&mut self, key: &RunKey, exit: ProcessExit) {
        let entry = self
            .runs
            .remove(key)
            .expect("only the run's own task reports its exit, once");
        let killed = entry.kill == KillRequest::Requested && !exit.success();
        let exit = ExitInfo {
            code: exit.code,
            signal: exit.signal,
            output_tail: exit.output_tail,
        };
        self.push_report(key.clone(), exit, killed);
    }

    /// `key`'s process could not start: queue a failed report.
    pub fn record_start_failure(&mut self, key: &RunKey, error: &LaunchError) {
        let entry = self
            .runs
            .remove(key)
            .expect("only the run's own task reports its start failure, once");
        assert!(
            entry.process.is_none(),
            "a run that failed to start has no process"
        );
        let reason = format!("agent {} could not start run {key}: {error}", self.agent);
        self.push_report(key.clone(), failure(reason), false);
    }

    /// Send the next heartbeat on the link. Returns its sequence number, or
    /// `None` without a link.
    pub fn send_heartbeat(&mut self) -> Option<u64> {
        let link = self.link.as_mut()?;
        let seq = link.heartbeat_seq_next;
        link.heartbeat_seq_next += 1;
        self.send(&AgentMessage::Heartbeat { seq });
        Some(seq)
    }

    /// The supervisor acknowledged heartbeat `seq`: every report sent before
    /// it was received. Returns how many reports were confirmed.
    pub fn confirm_heartbeat(&mut self, seq: u64) -> usize {
        let Some(link) = &self.link else {
            return 0;
        };
        if seq >= link.heartbeat_seq_next {
            tracing::warn!(seq, "acknowledgement of a heartbeat never sent; ignored");
            return 0;
        }
        let before = self.reports.len();
        self.reports.retain(|report| match report.delivery {
            Delivery::Sent { heartbeat_seq_next } => heartbeat_seq_next > seq,
            Delivery::Pending => true,
        });
        before - self.reports.len()
    }

    /// Stop: kill every process, refuse every later run. Idempotent.
    pub fn stop(&mut self) {
        self.lifecycle = Lifecycle::Stopped;
        for entry in self.runs.values_mut() {
            if let Some(process) = &entry.process {
                process.kill();
            }
        }
    }

    /// How many runs execute now.
    #[cfg(test)]
    pub fn running_count(&self) -> usize {
        self.runs.len()
    }

    /// How many reports await confirmation.
    #[cfg(test)]
    pub fn reports_count(&self) -> usize {
        self.reports.len()
    }

    fn remember_run(&mut self, key: &RunKey) {
        if self.run_latest.insert(key.job.clone(), key.run).is_none() {
            self.run_history_order.push_back(key.job.clone());
        }
        while self.run_history_order.len() > RUN_HISTORY_MAX {
            let oldest = self
                .run_history_order
                .pop_front()
                .expect("longer than the bound, so not empty");
            self.run_latest.remove(&oldest);
        }
    }

    fn push_report(&mut self, key: RunKey, exit: ExitInfo, killed: bool) {
        if self.reports.len() >= REPORTS_MAX {
            let dropped = self.reports.pop_front().expect("full, so not empty");
            tracing::error!(
                run = %dropped.key,
                "report buffer full ({REPORTS_MAX}): the supervisor confirms nothing; dropping the oldest report"
            );
        }
        self.reports.push_back(Report {
            key,
            exit,
            killed,
            delivery: Delivery::Pending,
        });
        self.deliver(self.reports.len() - 1);
    }

    /// Send report `index` if there is a link and it is not sent on it yet.
    fn deliver(&mut self, index: usize) {
        let Some(link) = &self.link else {
            return;
        };
        let report = &self.reports[index];
        if report.delivery != Delivery::Pending {
            return;
        }
        let message = AgentMessage::Finished {
            job: report.key.job.clone(),
            run: report.key.run,
            exit: report.exit.clone(),
            killed: report.killed,
        };
        let (session, heartbeat_seq_next) = (link.session, link.heartbeat_seq_next);
        if self.send(&message) {
            tracing::debug!(session, run = %report.key, "report sent");
            self.reports[index].delivery = Delivery::Sent { heartbeat_seq_next };
        }
    }

    /// Send on the link, if any. A failed send is not an error here: the
    /// session loop sees the connection fail on its next receive.
    fn send(&self, message: &AgentMessage) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        match link.sender.send(codec::encode(message)) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "send failed; the session will end");
                false
            }
        }
    }
}

/// The exit reported for a run that never ran.
fn failure(reason: String) -> ExitInfo {
    ExitInfo {
        code: None,
        signal: None,
        output_tail: reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AgentMessage;
    use crate::runtime::{BoxFuture, Net};
    use crate::testkit::{FakeNet, FakePeer, ManualRuntime};

    /// A process that never ends by itself; `kill` only counts.
    #[derive(Default)]
    struct IdleProcess {
        kills: std::sync::Mutex<u32>,
    }

    impl Process for IdleProcess {
        fn id(&self) -> u64 {
            1
        }
        fn wait(&self) -> BoxFuture<'static, ProcessExit> {
            Box::pin(futures::future::pending())
        }
        fn kill(&self) {
            *self.kills.lock().expect("not poisoned") += 1;
        }
    }

    fn state() -> AgentState {
        AgentState::new(AgentId("a-1".into()), vec![JobKind::Parallel], 2)
    }

    fn key(job: &str, run: RunId) -> RunKey {
        RunKey {
            job: JobId(job.into()),
            run,
        }
    }

    fn exit(code: Option<i32>, signal: Option<i32>) -> ProcessExit {
        ProcessExit {
            code,
            signal,
            output_tail: String::new(),
        }
    }

    fn linked(state: &mut AgentState) -> FakePeer {
        let runtime = ManualRuntime::new(1);
        let net = FakeNet::new();
        let connecting = runtime.start("connect", net.connect("sup:1"));
        runtime.run_until_idle();
        let connection = connecting.take().expect("resolved").expect("accepted");
        state.open_link(connection.sender, 1);
        net.take_peer().expect("far end")
    }

    fn killed_flags(peer: &FakePeer) -> Vec<bool> {
        peer.received::<AgentMessage>()
            .into_iter()
            .filter_map(|message| match message {
                AgentMessage::Finished { killed, .. } => Some(killed),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_completion_racing_a_kill_is_not_reported_as_killed() {
        let mut state = state();
        let peer = linked(&mut state);
        for (job, ended) in [("j-1", exit(Some(0), None)), ("j-2", exit(None, Some(15)))] {
            assert_eq!(
                state.decide_run(&key(job, 1), JobKind::Parallel),
                RunDecision::Start
            );
            state.attach_process(&key(job, 1), Arc::new(IdleProcess::default()));
            assert!(state.request_kill(&key(job, 1)));
            state.record_exit(&key(job, 1), ended);
        }
        assert_eq!(killed_flags(&peer), [false, true]);
    }

    #[test]
    fn a_kill_during_start_kills_the_process_once_it_exists() {
        let mut state = state();
        assert_eq!(
            state.decide_run(&key("j-1", 1), JobKind::Parallel),
            RunDecision::Start
        );
        assert!(state.request_kill(&key("j-1", 1)));
        let process = Arc::new(IdleProcess::default());
        state.attach_process(&key("j-1", 1), Arc::clone(&process) as Arc<dyn Process>);
        assert_eq!(*process.kills.lock().expect("not poisoned"), 1);
    }

    #[test]
    fn the_report_buffer_drops_the_oldest_report_past_its_bound() {
        let mut state = state();
        for job in 0..=REPORTS_MAX {
            let decision = state.decide_run(&key(&format!("j-{job}"), 1), JobKind::Sequential);
            assert!(matches!(decision, RunDecision::Refuse(_)));
        }
        assert_eq!(state.reports_count(), REPORTS_MAX);
        let declared = state.declared_runs();
        assert!(!declared.iter().any(|run| run.job.0 == "j-0"));
        assert!(declared
            .iter()
            .any(|run| run.job.0 == format!("j-{REPORTS_MAX}")));
    }

    #[test]
    fn the_run_history_forgets_the_oldest_job_past_its_bound() {
        let mut state = state();
        for job in 0..=RUN_HISTORY_MAX {
            state.remember_run(&key(&format!("j-{job}"), 3));
        }
        assert_eq!(state.run_latest.len(), RUN_HISTORY_MAX);
        assert!(!state.run_latest.contains_key(&JobId("j-0".into())));
        assert_eq!(
            state.decide_run(&key("j-1", 3), JobKind::Parallel),
            RunDecision::Ignore("stale run: a run as recent of this job was seen")
        );
    }

    #[test]
    fn an_acknowledgement_of_an_unsent_heartbeat_confirms_nothing() {
        let mut state = state();
        let _peer = linked(&mut state);
        state.decide_run(&key("j-1", 1), JobKind::Sequential);
        assert_eq!(state.confirm_heartbeat(0), 0);
        assert_eq!(state.send_heartbeat(), Some(0));
        assert_eq!(state.confirm_heartbeat(0), 1);
        assert_eq!(state.reports_count(), 0);
    }

    #[test]
    fn closing_the_link_makes_sent_reports_pending_again() {
        let mut state = state();
        let peer = linked(&mut state);
        state.decide_run(&key("j-1", 1), JobKind::Sequential);
        assert_eq!(killed_flags(&peer), [false]);
        state.close_link();
        assert!(peer.is_closed());
        assert_eq!(state.send_heartbeat(), None);
        let peer = linked(&mut state);
        assert_eq!(killed_flags(&peer), [false], "re-sent on the new link");
        assert_eq!(state.running_count(), 0);
    }
}
