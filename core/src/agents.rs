//! The agent registry: who is connected on which session, what each agent
//! runs, and when it was last heard.
//!
//! Every accepted hello opens a new **session** for its agent, with an id
//! one higher than the last. Only the current session may speak for the
//! agent: traffic from a superseded session is refused, and its end changes
//! nothing. An agent is `Connected` (current session open), `Disconnected`
//! (session ended; its runs wait for it to come back) or `Lost` (silent past
//! the heartbeat grace; its runs were settled).
//!
//! Each agent keeps the runs that may be live on it, dispatched or declared,
//! until the agent reports them finished or proves them gone. Pure: the
//! supervisor passes `now` and closes the connections the registry returns.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::ops::OpId;
use crate::protocol::{AgentId, JobId, JobKind, RunId};
use crate::runtime::{FrameSender, Instant};

/// Connection state of an agent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Its current session is open.
    Connected,
    /// Its last session ended; it may come back.
    Disconnected,
    /// Silent past the heartbeat grace; its runs were settled.
    Lost,
}

/// What the supervisor knows of a run on an agent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRunPhase {
    /// `Run` sent (or about to be), not reported started yet.
    Dispatched,
    /// Reported started or declared in a hello.
    Started,
    /// A `Kill` was sent or is owed; awaiting `Finished`.
    Killing,
}

/// A run that may be live on an agent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct AgentRun {
    /// The op driving it; `None` for a run the supervisor does not want (a
    /// declared run of a finished job), which it only kills.
    pub op: Option<OpId>,
    /// What is known of it.
    pub phase: AgentRunPhase,
    /// The session it was sent on or declared in.
    pub session: u64,
}

/// One agent.
#[derive(Debug)]
pub struct AgentEntry {
    /// Its id.
    pub id: AgentId,
    /// Its current (latest) session.
    pub session: u64,
    /// Connection state.
    pub link: Link,
    /// Since when in that state.
    pub link_since: Instant,
    /// When the current or last session was last heard from.
    pub last_heard: Instant,
    /// Kinds it accepts.
    pub kinds: Vec<JobKind>,
    /// Runs it takes at once.
    pub slots: u32,
    /// Runs that may be live on it.
    pub runs: BTreeMap<(JobId, RunId), AgentRun>,
    sender: Option<FrameSender>,
}

impl AgentEntry {
    /// Whether it is connected, accepts `kind` and has a free slot.
    pub fn has_room_for(&self, kind: JobKind) -> bool {
        self.link == Link::Connected
            && self.kinds.contains(&kind)
            && self.runs.len() < self.slots as usize
    }

    /// The current session's sender, while connected.
    pub fn sender(&self) -> Option<&FrameSender> {
        self.sender.as_ref()
    }
}

/// What a hello did to the registry.
#[derive(Debug)]
pub struct Accepted {
    /// The new session.
    pub session: u64,
    /// The superseded session's sender, to close.
    pub superseded: Option<FrameSender>,
}

/// An agent as the snapshot shows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct AgentSnapshot {
    /// Its id.
    pub id: AgentId,
    /// Current session.
    pub session: u64,
    /// Connection state.
    pub link: Link,
    /// Since when.
    pub link_since: Instant,
    /// Last heard.
    pub last_heard: Instant,
    /// Kinds.
    pub kinds: Vec<JobKind>,
    /// Capacity.
    pub slots: u32,
    /// Runs that may be live on it.
    pub runs: Vec<AgentRunSnapshot>,
}

/// A run on an agent, as the snapshot shows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct AgentRunSnapshot {
    /// The job.
    pub job: JobId,
    /// The run.
    pub run: RunId,
    /// The op driving it, if any.
    pub op: Option<OpId>,
    /// What is known of it.
    pub phase: AgentRunPhase,
    /// Its session.
    pub session: u64,
}

/// Every agent that ever said hello to this supervisor.
#[derive(Debug, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<AgentId, AgentEntry>,
}

impl AgentRegistry {
    /// No agents.
    pub fn new() -> AgentRegistry {
        AgentRegistry::default()
    }

    /// Open a new session for `id` (a hello was accepted). The previous
    /// session, if any, is superseded; its runs stay with the agent for the
    /// caller to reconcile.
    pub fn connect(
        &mut self,
        id: &AgentId,
        kinds: Vec<JobKind>,
        slots: u32,
        sender: FrameSender,
        now: Instant,
    ) -> Accepted {
        let entry = self.agents.entry(id.clone()).or_insert_with(|| AgentEntry {
            id: id.clone(),
            session: 0,
            link: Link::Disconnected,
            link_since: now,
            last_heard: now,
            kinds: Vec::new(),
            slots: 0,
            runs: BTreeMap::new(),
            sender: None,
        });
        entry.session += 1;
        entry.link = Link::Connected;
        entry.link_since = now;
        entry.last_heard = now;
        entry.kinds = kinds;
        entry.slots = slots;
        let superseded = entry.sender.replace(sender);
        Accepted {
            session: entry.session,
            superseded,
        }
    }

    /// Whether `session` is `id`'s current session.
    pub fn is_current(&self, id: &AgentId, session: u64) -> bool {
        self.agents
            .get(id)
            .is_some_and(|entry| entry.session == session && entry.link == Link::Connected)
    }

    /// The current session of `id` ended. Returns whether it was current
    /// (a superseded session's end changes nothing).
    pub fn disconnect(&mut self, id: &AgentId, session: u64, now: Instant) -> bool {
        match self.agents.get_mut(id) {
            Some(entry) if entry.session == session && entry.link == Link::Connected => {
                entry.link = Link::Disconnected;
                entry.link_since = now;
                entry.sender = None;
                true
            }
            _ => false,
        }
    }

    /// Detach `id`'s current session whatever session ended: what a handler
    /// that never compares sessions does
    /// ([`Flaw::StaleConnectionAccepted`](crate::flaws::Flaw)).
    pub fn disconnect_any_session(&mut self, id: &AgentId, now: Instant) {
        if let Some(entry) = self.agents.get_mut(id) {
            if entry.link == Link::Connected {
                entry.link = Link::Disconnected;
                entry.link_since = now;
                entry.sender = None;
            }
        }
    }

    /// `id` was heard from on `session`.
    pub fn heard(&mut self, id: &AgentId, now: Instant) {
        if let Some(entry) = self.agents.get_mut(id) {
            entry.last_heard = entry.last_heard.max(now);
        }
    }

    /// Declare `id` lost; returns its sender (to close) and the runs it had.
    pub fn mark_lost(
        &mut self,
        id: &AgentId,
        now: Instant,
    ) -> (Option<FrameSender>, BTreeMap<(JobId, RunId), AgentRun>) {
        let entry = self
            .agents
            .get_mut(id)
            .expect("only registered agents are declared lost");
        entry.link = Link::Lost;
        entry.link_since = now;
        (entry.sender.take(), std::mem::take(&mut entry.runs))
    }

    /// Agents not heard from for longer than `grace`, among those whose link
    /// is in `links`.
    pub fn silent(&self, now: Instant, grace: Duration, links: &[Link]) -> Vec<AgentId> {
        self.agents
            .values()
            .filter(|entry| links.contains(&entry.link))
            .filter(|entry| now.saturating_duration_since(entry.last_heard) > grace)
            .map(|entry| entry.id.clone())
            .collect()
    }

    /// The agent with room for `kind` that runs the fewest runs (ties by id).
    pub fn pick(&self, kind: JobKind) -> Option<AgentId> {
        self.agents
            .values()
            .filter(|entry| entry.has_room_for(kind))
            .min_by_key(|entry| (entry.runs.len(), entry.id.clone()))
            .map(|entry| entry.id.clone())
    }

    /// The agent `id`.
    pub fn get(&self, id: &AgentId) -> Option<&AgentEntry> {
        self.agents.get(id)
    }

    /// The agent `id`, mutably.
    pub fn get_mut(&mut self, id: &AgentId) -> Option<&mut AgentEntry> {
        self.agents.get_mut(id)
    }

    /// Every agent, by id.
    pub fn iter(&self) -> impl Iterator<Item = &AgentEntry> {
        self.agents.values()
    }

    /// The registry for snapshots.
    pub fn snapshot(&self) -> Vec<AgentSnapshot> {
        self.agents
            .values()
            .map(|entry| AgentSnapshot {
                id: entry.id.clone(),
                session: entry.session,
                link: entry.link,
                link_since: entry.link_since,
                last_heard: entry.last_heard,
                kinds: entry.kinds.clone(),
                slots: entry.slots,
                runs: entry
                    .runs
                    .iter()
                    .map(|((job, run), agent_run)| AgentRunSnapshot {
                        job: job.clone(),
                        run: *run,
                        op: agent_run.op,
                        phase: agent_run.phase,
                        session: agent_run.session,
                    })
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{NetError, SendFrames};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[derive(Default)]
    struct NullSender {
        closed: AtomicBool,
    }

    impl SendFrames for NullSender {
        fn send(&self, _frame: Vec<u8>) -> Result<(), NetError> {
            Ok(())
        }
        fn close(&self) {
            self.closed.store(true, Ordering::SeqCst);
        }
        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::SeqCst)
        }
    }

    fn sender() -> FrameSender {
        FrameSender::new(Arc::new(NullSender::default()))
    }

    fn a1() -> AgentId {
        AgentId("a-1".into())
    }

    #[test]
    fn each_hello_opens_a_higher_session_and_supersedes_the_last() {
        let mut registry = AgentRegistry::new();
        let t = Instant::ZERO;
        let first = registry.connect(&a1(), vec![JobKind::Parallel], 2, sender(), t);
        assert_eq!(first.session, 1);
        assert!(first.superseded.is_none());
        let second = registry.connect(&a1(), vec![JobKind::Parallel], 2, sender(), t);
        assert_eq!(second.session, 2);
        assert!(second.superseded.is_some());
        assert!(!registry.is_current(&a1(), 1));
        assert!(registry.is_current(&a1(), 2));
    }

    #[test]
    fn a_superseded_session_ending_changes_nothing() {
        let mut registry = AgentRegistry::new();
        let t = Instant::ZERO;
        registry.connect(&a1(), vec![JobKind::Parallel], 2, sender(), t);
        registry.connect(&a1(), vec![JobKind::Parallel], 2, sender(), t);
        assert!(!registry.disconnect(&a1(), 1, t));
        assert_eq!(registry.get(&a1()).expect("a-1").link, Link::Connected);
        assert!(registry.disconnect(&a1(), 2, t));
        assert_eq!(registry.get(&a1()).expect("a-1").link, Link::Disconnected);
        assert!(registry.get(&a1()).expect("a-1").sender().is_none());
    }

    #[test]
    fn picks_the_least_loaded_agent_with_room_for_the_kind() {
        let mut registry = AgentRegistry::new();
        let t = Instant::ZERO;
        let a2 = AgentId("a-2".into());
        registry.connect(&a1(), vec![JobKind::Parallel], 1, sender(), t);
        registry.connect(
            &a2,
            vec![JobKind::Parallel, JobKind::Sequential],
            2,
            sender(),
            t,
        );
        assert_eq!(registry.pick(JobKind::Parallel), Some(a1()));
        assert_eq!(registry.pick(JobKind::Sequential), Some(a2.clone()));
        registry.get_mut(&a1()).expect("a-1").runs.insert(
            (JobId("j-1".into()), 1),
            AgentRun {
                op: Some(1),
                phase: AgentRunPhase::Dispatched,
                session: 1,
            },
        );
        assert_eq!(registry.pick(JobKind::Parallel), Some(a2));
    }

    #[test]
    fn silence_past_the_grace_is_reported_for_the_given_links() {
        let mut registry = AgentRegistry::new();
        registry.connect(&a1(), vec![JobKind::Parallel], 1, sender(), Instant::ZERO);
        let grace = Duration::from_secs(5);
        assert!(registry
            .silent(Instant::from_millis(5_000), grace, &[Link::Connected])
            .is_empty());
        let late = Instant::from_millis(5_001);
        assert_eq!(registry.silent(late, grace, &[Link::Connected]), vec![a1()]);
        assert!(registry
            .silent(late, grace, &[Link::Disconnected])
            .is_empty());
        registry.heard(&a1(), late);
        assert!(registry.silent(late, grace, &[Link::Connected]).is_empty());
        let (sender, runs) = registry.mark_lost(&a1(), late);
        assert!(sender.is_some());
        assert!(runs.is_empty());
        assert_eq!(registry.pick(JobKind::Parallel), None);
    }
}
