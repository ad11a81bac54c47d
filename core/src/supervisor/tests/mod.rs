//! Async tests of the supervisor on the test executor: clients, agents,
//! cancel, timeouts, liveness, reconciliation, recovery, bad input.

use std::sync::Arc;
use std::time::Duration;

use super::testkit::{connection_pair, poll_once, try_recv, TestNet, TestRuntime};
use super::{Snapshot, Supervisor, SupervisorDeps};
use crate::agents::Link;
use crate::codec;
use crate::config::{AgentAuthConfig, Role, SupervisorConfig, UserConfig};
use crate::flaws::FlawSet;
use crate::job::is_legal_transition;
use crate::ops::OpPhase;
use crate::protocol::{
    AgentId, AgentMessage, ClientRequest, ClientResponse, ErrorCode, ExitInfo, JobId, JobKind,
    JobStatus, JobView, RunId, RunningJob, SubmitRequest, SupervisorMessage,
};
use crate::runtime::{Connection, Runtime};
use crate::store::{Durability, MemoryStore};

pub(super) fn config() -> SupervisorConfig {
    let mut config = SupervisorConfig::default();
    config.pools.parallel = 2;
    config.pools.sequential = 1;
    config.heartbeat_interval = Duration::from_secs(1);
    config.heartbeat_grace_intervals = 3;
    config.agent_reply_timeout = Duration::from_secs(2);
    config.agent_start_timeout = Duration::from_secs(5);
    config.recovery_grace = Duration::from_secs(10);
    for (name, role) in [
        ("alice", Role::User),
        ("bob", Role::User),
        ("root", Role::Admin),
    ] {
        config.users.insert(
            name.into(),
            UserConfig {
                token: format!("t-{name}"),
                plan: "default".into(),
                role,
            },
        );
    }
    for agent in ["a-1", "a-2"] {
        config.agents.insert(
            agent.into(),
            AgentAuthConfig {
                token: format!("t-{agent}"),
            },
        );
    }
    config
}

pub(super) struct World {
    pub(super) runtime: TestRuntime,
    pub(super) supervisor: Supervisor,
    pub(super) store: MemoryStore,
}

impl World {
    pub(super) fn start(config: SupervisorConfig) -> World {
        World::start_with(
            config,
            MemoryStore::new(),
            FlawSet::none(),
            TestRuntime::new(),
        )
    }

    pub(super) fn start_with(
        config: SupervisorConfig,
        store: MemoryStore,
        flaws: FlawSet,
        runtime: TestRuntime,
    ) -> World {
        let deps = SupervisorDeps {
            runtime: Arc::new(runtime.clone()),
            store: Arc::new(store.clone()),
            flaws,
        };
        let supervisor = runtime
            .block_on(Supervisor::start(config, deps))
            .expect("supervisor starts");
        runtime.run_until_idle();
        World {
            runtime,
            supervisor,
            store,
        }
    }

    /// Serve `request`, letting virtual time pass if the store needs it.
    pub(super) fn call(&self, user: &str, request: ClientRequest) -> ClientResponse {
        let call = self.supervisor.handle_client(user, request);
        futures::pin_mut!(call);
        for _ in 0..10_000 {
            if let std::task::Poll::Ready(response) = super::testkit::poll_once(call.as_mut()) {
                self.runtime.run_until_idle();
                return response;
            }
            self.runtime.advance(Duration::from_millis(1));
        }
        panic!("a client call took more than 10s of virtual time");
    }

    pub(super) fn submit(&self, user: &str, kind: JobKind) -> JobView {
        self.submit_request(user, submit_request(kind))
    }

    pub(super) fn submit_request(&self, user: &str, request: SubmitRequest) -> JobView {
        expect_job(self.call(user, ClientRequest::Submit(request)))
    }

    pub(super) fn status(&self, user: &str, job: &JobId) -> JobView {
        expect_job(self.call(user, ClientRequest::Status { job: job.clone() }))
    }

    pub(super) fn cancel(&self, user: &str, job: &JobId) -> ClientResponse {
        self.call(user, ClientRequest::Cancel { job: job.clone() })
    }

    pub(super) fn connect(&self, agent: &str, slots: u32, running: Vec<RunningJob>) -> FakeAgent {
        self.connect_with_token(agent, &format!("t-{agent}"), slots, running)
    }

    pub(super) fn connect_with_token(
        &self,
        agent: &str,
        token: &str,
        slots: u32,
        running: Vec<RunningJob>,
    ) -> FakeAgent {
        let (supervisor_end, agent_end) = connection_pair(agent, "supervisor");
        let supervisor = self.supervisor.clone();
        let task = self.runtime.spawn(
            &format!("test agent-conn {agent}"),
            Box::pin(async move { supervisor.serve_agent(supervisor_end).await }),
        );
        let fake = FakeAgent {
            id: AgentId(agent.into()),
            connection: agent_end,
            task,
        };
        fake.send(&AgentMessage::Hello {
            agent: fake.id.clone(),
            token: token.into(),
            kinds: vec![JobKind::Parallel, JobKind::Sequential],
            slots,
            running,
        });
        self.runtime.run_until_idle();
        fake
    }

    pub(super) fn advance_ms(&self, millis: u64) {
        self.runtime.advance(Duration::from_millis(millis));
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        self.supervisor.snapshot()
    }

    pub(super) fn job(&self, job: &JobId) -> super::JobSnapshot {
        self.snapshot()
            .jobs
            .into_iter()
            .find(|found| &found.record.id == job)
            .expect("job in snapshot")
    }
}

pub(super) fn submit_request(kind: JobKind) -> SubmitRequest {
    SubmitRequest {
        kind,
        command: vec!["sleep".into(), "1".into()],
        max_run_ms: None,
        idempotency_key: None,
    }
}

pub(super) fn expect_job(response: ClientResponse) -> JobView {
    match response {
        ClientResponse::Job { job } => job,
        other => panic!("expected a job, got {other:?}"),
    }
}

pub(super) fn expect_error(response: ClientResponse) -> ErrorCode {
    match response {
        ClientResponse::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

pub(super) fn exit_code(code: i32) -> ExitInfo {
    ExitInfo {
        code: Some(code),
        signal: None,
        output_tail: String::new(),
    }
}

pub(super) fn killed_by(signal: i32) -> ExitInfo {
    ExitInfo {
        code: None,
        signal: Some(signal),
        output_tail: String::new(),
    }
}

/// The agent side of a connection, driven by hand.
pub(super) struct FakeAgent {
    pub(super) id: AgentId,
    pub(super) connection: Connection,
    pub(super) task: crate::runtime::TaskHandle,
}

impl FakeAgent {
    /// Send `message`; returns false if the connection is over.
    pub(super) fn send(&self, message: &AgentMessage) -> bool {
        self.connection.sender.send(codec::encode(message)).is_ok()
    }

    /// Every message the supervisor sent so far; `Err` once closed.
    pub(super) fn received(&mut self) -> Result<Vec<SupervisorMessage>, Vec<SupervisorMessage>> {
        let mut messages = Vec::new();
        loop {
            match try_recv(&mut self.connection.receiver) {
                None => return Ok(messages),
                Some(Ok(frame)) => {
                    messages.push(codec::decode(&frame).expect("supervisor frames decode"))
                }
                Some(Err(_)) => return Err(messages),
            }
        }
    }

    /// The runs the supervisor asked this agent to start, in order.
    pub(super) fn runs(&mut self) -> Vec<(JobId, RunId)> {
        self.received()
            .expect("open")
            .into_iter()
            .filter_map(|message| match message {
                SupervisorMessage::Run { job, run, .. } => Some((job, run)),
                _ => None,
            })
            .collect()
    }

    pub(super) fn started(&self, job: &JobId, run: RunId) {
        self.send(&AgentMessage::Started {
            job: job.clone(),
            run,
        });
    }

    pub(super) fn finished(&self, job: &JobId, run: RunId, exit: ExitInfo, killed: bool) {
        self.send(&AgentMessage::Finished {
            job: job.clone(),
            run,
            exit,
            killed,
        });
    }

    pub(super) fn heartbeat(&self, seq: u64) {
        self.send(&AgentMessage::Heartbeat { seq });
    }
}

/// Invariants every snapshot must satisfy in a correct supervisor.
pub(super) fn assert_consistent(snapshot: &Snapshot) {
    for pool in &snapshot.pools {
        assert_eq!(pool.held + pool.free, pool.capacity, "pool {}", pool.name);
        for entry in pool.holders.iter().chain(&pool.waiters) {
            let job = snapshot
                .jobs
                .iter()
                .find(|job| job.record.id == entry.holder.job)
                .unwrap_or_else(|| {
                    panic!(
                        "pool {} entry of unknown job {}",
                        pool.name, entry.holder.job
                    )
                });
            assert!(
                !job.record.status.is_terminal(),
                "pool {} holds terminal job {}",
                pool.name,
                job.record.id
            );
            let op = entry.holder.op.expect("entries name their op");
            assert!(
                snapshot.ops.iter().any(|live| live.id == op),
                "pool {} entry of dead op {op}",
                pool.name
            );
        }
    }
    for job in &snapshot.jobs {
        for change in &job.record.history[1..] {
            let from = change.from.expect("only the first entry has no from");
            assert!(
                is_legal_transition(from, change.to),
                "{}: {from} -> {}",
                job.record.id,
                change.to
            );
        }
        assert!(job.record.runs.iter().filter(|run| run.is_open()).count() <= 1);
        if let Some(canceled_at) = job.record.cancel_requested_at {
            assert!(
                job.record
                    .runs
                    .iter()
                    .all(|run| run.dispatched_at <= canceled_at),
                "{}: a run dispatched after its cancel was acknowledged",
                job.record.id
            );
        }
        if job.record.status.is_terminal() {
            assert!(job.op.is_none(), "terminal job {} has an op", job.record.id);
            assert!(
                job.max_run_timer.is_none(),
                "terminal job {} has an armed timer",
                job.record.id
            );
        }
    }
    for op in &snapshot.destroyed_ops {
        assert_eq!(op.uses_after_destroy, 0, "op {} used after destroy", op.id);
    }
    let mut live_runs = std::collections::BTreeMap::new();
    for agent in &snapshot.agents {
        for run in &agent.runs {
            *live_runs.entry(run.job.clone()).or_insert(0) += 1;
        }
    }
    for (job, count) in live_runs {
        assert!(count <= 1, "job {job} has {count} live runs");
    }
}

fn statuses(job: &super::JobSnapshot) -> Vec<JobStatus> {
    job.record.history.iter().map(|change| change.to).collect()
}

#[test]
fn a_job_runs_to_completion_and_returns_its_slots() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.id, JobId("j-1".into()));
    let mut agent = world.connect("a-1", 2, vec![]);
    let runs = agent.runs();
    assert_eq!(runs, vec![(job.id.clone(), 1)]);
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    assert_eq!(world.status("alice", &job.id).status, JobStatus::Running);
    assert_consistent(&world.snapshot());
    agent.finished(&job.id, 1, exit_code(0), false);
    world.runtime.run_until_idle();
    let done = world.job(&job.id);
    assert_eq!(done.record.status, JobStatus::Completed);
    assert_eq!(
        statuses(&done),
        [JobStatus::Pending, JobStatus::Running, JobStatus::Completed]
    );
    let snapshot = world.snapshot();
    assert_consistent(&snapshot);
    assert!(snapshot.pools.iter().all(|pool| pool.held == 0));
    assert!(snapshot.ops.is_empty());
    assert!(snapshot.agents[0].runs.is_empty());
    assert_eq!(
        world.store.durable_records()[0].status,
        JobStatus::Completed
    );
}

#[test]
fn a_failing_process_fails_the_job_with_its_exit() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut agent = world.connect("a-1", 1, vec![]);
    agent.runs();
    agent.started(&job.id, 1);
    agent.finished(&job.id, 1, exit_code(3), false);
    world.runtime.run_until_idle();
    let view = world.status("alice", &job.id);
    assert_eq!(view.status, JobStatus::Failed);
    assert_eq!(view.exit.expect("exit").code, Some(3));
    assert_eq!(view.reason.as_deref(), Some("exited with code 3"));
}

#[test]
fn waiting_jobs_see_their_queue_position_and_situation() {
    let world = World::start(config());
    let first = world.submit("alice", JobKind::Sequential);
    let second = world.submit("bob", JobKind::Sequential);
    let third = world.submit("root", JobKind::Sequential);
    assert_eq!(world.status("alice", &first.id).queue_position, None);
    assert_eq!(world.status("bob", &second.id).queue_position, Some(1));
    let view = world.status("root", &third.id);
    assert_eq!(view.queue_position, Some(2));
    assert_eq!(
        view.situation.as_deref(),
        Some("waiting for a sequential slot, 1 ahead")
    );
    let first_view = world.status("alice", &first.id);
    assert_eq!(
        first_view.situation.as_deref(),
        Some("waiting for an agent that runs sequential jobs")
    );
    assert_consistent(&world.snapshot());
}

#[test]
fn the_plan_limits_running_and_waiting_jobs_per_user() {
    let mut config = config();
    let plan = config.plans.get_mut("default").expect("plan");
    plan.max_running = 1;
    plan.max_pending = 2;
    let world = World::start(config);
    let first = world.submit("alice", JobKind::Parallel);
    let second = world.submit("alice", JobKind::Parallel);
    let refused = world.call(
        "alice",
        ClientRequest::Submit(submit_request(JobKind::Parallel)),
    );
    assert_eq!(expect_error(refused), ErrorCode::LimitExceeded);
    world.submit("bob", JobKind::Parallel);
    let mut agent = world.connect("a-1", 4, vec![]);
    let runs = agent.runs();
    assert!(runs.contains(&(first.id.clone(), 1)));
    assert!(
        !runs.contains(&(second.id.clone(), 1)),
        "one running job per user"
    );
    world.submit("alice", JobKind::Parallel);
    let view = world.status("alice", &second.id);
    assert_eq!(
        view.situation.as_deref(),
        Some("waiting for a slot of user alice, 0 ahead")
    );
    agent.started(&first.id, 1);
    agent.finished(&first.id, 1, exit_code(0), false);
    world.runtime.run_until_idle();
    assert_eq!(agent.runs(), vec![(second.id, 1)]);
    assert_consistent(&world.snapshot());
}

#[test]
fn canceling_a_pending_job_never_takes_a_slot() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let canceled = expect_job(world.cancel("alice", &job.id));
    assert_eq!(canceled.status, JobStatus::Canceled);
    let snapshot = world.snapshot();
    assert_consistent(&snapshot);
    assert!(snapshot
        .pools
        .iter()
        .all(|pool| pool.held == 0 && pool.waiters.is_empty()));
    let record = &world.job(&job.id).record;
    assert!(record.runs.is_empty());
    assert!(record.cancel_requested_at.is_some());
    let mut agent = world.connect("a-1", 2, vec![]);
    assert!(
        agent.runs().is_empty(),
        "a canceled job is never dispatched"
    );
}

#[test]
fn canceling_a_running_job_kills_exactly_its_run() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut agent = world.connect("a-1", 2, vec![]);
    agent.runs();
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    let acknowledged = expect_job(world.cancel("alice", &job.id));
    assert_eq!(
        acknowledged.status,
        JobStatus::Running,
        "canceled once the kill is confirmed"
    );
    let kills: Vec<_> = agent
        .received()
        .expect("open")
        .into_iter()
        .filter(|message| matches!(message, SupervisorMessage::Kill { .. }))
        .collect();
    assert_eq!(
        kills,
        vec![SupervisorMessage::Kill {
            job: job.id.clone(),
            run: 1
        }]
    );
    agent.finished(&job.id, 1, killed_by(9), true);
    world.runtime.run_until_idle();
    assert_eq!(world.status("alice", &job.id).status, JobStatus::Canceled);
    assert_consistent(&world.snapshot());
}

#[test]
fn a_completion_that_wins_the_race_with_a_cancel_stays_completed() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut agent = world.connect("a-1", 2, vec![]);
    agent.runs();
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    world.cancel("alice", &job.id);
    agent.finished(&job.id, 1, exit_code(0), false);
    world.runtime.run_until_idle();
    assert_eq!(world.status("alice", &job.id).status, JobStatus::Completed);
    assert_consistent(&world.snapshot());
}

#[test]
fn an_unconfirmed_kill_settles_the_job_after_the_reply_timeout() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut agent = world.connect("a-1", 2, vec![]);
    agent.runs();
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    world.cancel("alice", &job.id);
    world.advance_ms(1_000);
    agent.heartbeat(1);
    world.advance_ms(1_001);
    let view = world.status("alice", &job.id);
    assert_eq!(view.status, JobStatus::Canceled);
    assert!(view.reason.expect("reason").contains("kill not confirmed"));
    let snapshot = world.snapshot();
    assert_consistent(&snapshot);
    assert_eq!(
        snapshot.agents[0].runs.len(),
        1,
        "the run may still live on its agent"
    );
    agent.finished(&job.id, 1, exit_code(0), false);
    world.runtime.run_until_idle();
    let snapshot = world.snapshot();
    assert!(
        snapshot.agents[0].runs.is_empty(),
        "the late report ends the run"
    );
    assert_eq!(
        world.job(&job.id).record.status,
        JobStatus::Canceled,
        "terminal is final"
    );
    assert_consistent(&snapshot);
}

#[test]
fn a_run_past_its_max_run_time_is_killed_and_timed_out() {
    let world = World::start(config());
    let mut request = submit_request(JobKind::Parallel);
    request.max_run_ms = Some(1_500);
    let job = world.submit_request("alice", request);
    assert_eq!(job.max_run_ms, 1_500);
    let mut agent = world.connect("a-1", 2, vec![]);
    agent.runs();
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    agent.heartbeat(1);
    world.advance_ms(1_499);
    assert!(agent
        .received()
        .expect("open")
        .iter()
        .all(|m| !matches!(m, SupervisorMessage::Kill { .. })));
    world.advance_ms(1);
    let received = agent.received().expect("open");
    assert!(received.contains(&SupervisorMessage::Kill {
        job: job.id.clone(),
        run: 1
    }));
    agent.finished(&job.id, 1, killed_by(9), true);
    world.runtime.run_until_idle();
    let view = world.status("alice", &job.id);
    assert_eq!(view.status, JobStatus::TimedOut);
    assert_consistent(&world.snapshot());
}

#[test]
fn a_completed_run_disarms_its_max_run_timer() {
    let world = World::start(config());
    let mut request = submit_request(JobKind::Parallel);
    request.max_run_ms = Some(1_000);
    let job = world.submit_request("alice", request);
    let mut agent = world.connect("a-1", 2, vec![]);
    agent.runs();
    agent.started(&job.id, 1);
    agent.finished(&job.id, 1, exit_code(0), false);
    world.runtime.run_until_idle();
    world.advance_ms(500);
    agent.heartbeat(1);
    world.advance_ms(2_000);
    assert_eq!(world.status("alice", &job.id).status, JobStatus::Completed);
    assert!(world
        .runtime
        .live_tasks()
        .iter()
        .all(|task| !task.starts_with("max-run")));
    assert_consistent(&world.snapshot());
}

#[test]
fn an_agent_that_never_reports_a_start_fails_the_job() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut agent = world.connect("a-1", 2, vec![]);
    agent.runs();
    for seq in 1..=5 {
        world.advance_ms(1_000);
        agent.heartbeat(seq);
    }
    world.runtime.run_until_idle();
    assert!(agent
        .received()
        .expect("open")
        .contains(&SupervisorMessage::Kill {
            job: job.id.clone(),
            run: 1
        }));
    agent.finished(&job.id, 1, killed_by(9), true);
    world.runtime.run_until_idle();
    let view = world.status("alice", &job.id);
    assert_eq!(view.status, JobStatus::Failed);
    assert!(view.reason.expect("reason").contains("start timeout"));
}

#[test]
fn a_silent_agent_is_lost_with_its_jobs_after_the_grace() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let waiting = world.submit("bob", JobKind::Parallel);
    let mut agent = world.connect("a-1", 2, vec![]);
    agent.runs();
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    world.advance_ms(3_000);
    assert_eq!(
        world.status("alice", &job.id).status,
        JobStatus::Running,
        "within the grace"
    );
    world.advance_ms(1_000);
    let view = world.status("alice", &job.id);
    assert_eq!(view.status, JobStatus::Lost);
    assert_eq!(world.status("bob", &waiting.id).status, JobStatus::Lost);
    let snapshot = world.snapshot();
    assert_eq!(snapshot.agents[0].link, Link::Lost);
    assert!(snapshot.pools.iter().all(|pool| pool.held == 0));
    assert!(
        agent.received().is_err(),
        "the lost agent's connection is closed"
    );
    assert_consistent(&snapshot);
}

#[test]
fn heartbeats_keep_an_agent_and_its_jobs_alive() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut agent = world.connect("a-1", 2, vec![]);
    agent.runs();
    agent.started(&job.id, 1);
    for seq in 1..=10 {
        world.advance_ms(1_000);
        agent.heartbeat(seq);
    }
    world.runtime.run_until_idle();
    assert_eq!(world.status("alice", &job.id).status, JobStatus::Running);
    let acks = agent
        .received()
        .expect("open")
        .into_iter()
        .filter(|message| matches!(message, SupervisorMessage::HeartbeatAck { .. }))
        .count();
    assert_eq!(acks, 10);
}

#[test]
fn a_reconnecting_agent_keeps_the_runs_it_declares() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut first = world.connect("a-1", 2, vec![]);
    first.runs();
    first.started(&job.id, 1);
    world.runtime.run_until_idle();
    first.connection.sender.close();
    world.runtime.run_until_idle();
    assert_eq!(world.snapshot().agents[0].link, Link::Disconnected);
    let mut second = world.connect(
        "a-1",
        2,
        vec![RunningJob {
            job: job.id.clone(),
            run: 1,
        }],
    );
    let welcome = second.received().expect("open");
    assert!(
        matches!(&welcome[0], SupervisorMessage::Welcome { session: 2, kill, .. } if kill.is_empty())
    );
    second.finished(&job.id, 1, exit_code(0), false);
    world.runtime.run_until_idle();
    assert_eq!(world.status("alice", &job.id).status, JobStatus::Completed);
    assert_consistent(&world.snapshot());
}

#[test]
fn a_late_report_after_a_reconnect_settles_an_undeclared_run() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut first = world.connect("a-1", 2, vec![]);
    first.runs();
    first.started(&job.id, 1);
    world.runtime.run_until_idle();
    first.connection.sender.close();
    let second = world.connect("a-1", 2, vec![]);
    let op = world.snapshot().ops[0].clone();
    assert_eq!(op.phase, OpPhase::Unaccounted);
    second.finished(&job.id, 1, exit_code(0), false);
    world.runtime.run_until_idle();
    assert_eq!(world.status("alice", &job.id).status, JobStatus::Completed);
}

#[test]
fn an_agent_back_without_a_started_run_loses_the_job() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut first = world.connect("a-1", 2, vec![]);
    first.runs();
    first.started(&job.id, 1);
    world.runtime.run_until_idle();
    first.connection.sender.close();
    let _second = world.connect("a-1", 2, vec![]);
    world.advance_ms(2_000);
    let view = world.status("alice", &job.id);
    assert_eq!(view.status, JobStatus::Lost);
    assert!(view
        .reason
        .expect("reason")
        .contains("came back without run 1"));
    assert_consistent(&world.snapshot());
}

#[test]
fn a_run_that_never_reached_its_agent_is_dispatched_again() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut first = world.connect("a-1", 2, vec![]);
    assert_eq!(first.runs(), vec![(job.id.clone(), 1)]);
    first.connection.sender.close();
    let mut second = world.connect("a-1", 2, vec![]);
    world.advance_ms(2_000);
    assert_eq!(second.runs(), vec![(job.id.clone(), 2)]);
    let record = world.job(&job.id).record;
    assert_eq!(record.status, JobStatus::Pending);
    assert_eq!(record.runs[0].outcome.as_deref(), Some("undelivered"));
    assert_consistent(&world.snapshot());
    second.started(&job.id, 2);
    second.finished(&job.id, 2, exit_code(0), false);
    world.runtime.run_until_idle();
    assert_eq!(world.status("alice", &job.id).status, JobStatus::Completed);
}

#[test]
fn a_canceled_job_whose_run_never_arrived_is_canceled_not_rerun() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut first = world.connect("a-1", 2, vec![]);
    first.runs();
    first.connection.sender.close();
    world.runtime.run_until_idle();
    world.cancel("alice", &job.id);
    let mut second = world.connect("a-1", 2, vec![]);
    world.advance_ms(2_000);
    assert!(second.runs().is_empty());
    assert_eq!(world.status("alice", &job.id).status, JobStatus::Canceled);
    assert_consistent(&world.snapshot());
}

#[test]
fn a_declared_run_nobody_wants_is_killed_in_the_welcome() {
    let world = World::start(config());
    let stray = RunningJob {
        job: JobId("j-99".into()),
        run: 4,
    };
    let mut agent = world.connect("a-1", 2, vec![stray.clone()]);
    let welcome = agent.received().expect("open");
    assert!(matches!(&welcome[0], SupervisorMessage::Welcome { kill, .. } if kill == &vec![stray]));
}

#[test]
fn a_job_canceled_while_its_dispatch_is_recorded_ends_when_its_agent_is_lost() {
    // Regression (found by the `stalls` scenario): the agent was lost while
    // the dispatch of a canceled job was being made durable; the job went
    // back to waiting for an agent and was dispatched again after its
    // cancel was acknowledged.
    let runtime = TestRuntime::new();
    let store =
        MemoryStore::with_commit_latency(Arc::new(runtime.clone()), Duration::from_secs(10));
    let world = World::start_with(config(), store, FlawSet::none(), runtime);
    {
        // Both requests act before their first await (the commit); their
        // callers leave without waiting for it.
        let submit = world.supervisor.handle_client(
            "alice",
            ClientRequest::Submit(submit_request(JobKind::Parallel)),
        );
        futures::pin_mut!(submit);
        assert!(poll_once(submit.as_mut()).is_pending());
    }
    let mut agent = world.connect("a-1", 1, vec![]);
    let job = world.snapshot().jobs[0].record.id.clone();
    assert_eq!(
        world.snapshot().ops[0].phase,
        OpPhase::Dispatching,
        "the dispatch awaits its commit"
    );
    {
        let cancel = world
            .supervisor
            .handle_client("alice", ClientRequest::Cancel { job: job.clone() });
        futures::pin_mut!(cancel);
        assert!(poll_once(cancel.as_mut()).is_pending());
    }
    world.advance_ms(5_000);
    let record = world.job(&job).record;
    assert_eq!(record.status, JobStatus::Canceled, "{:?}", record.history);
    assert!(
        record.runs.is_empty(),
        "no run was ever sent: {:?}",
        record.runs
    );
    let messages = agent
        .received()
        .expect_err("the lost agent's connection is closed");
    assert!(
        !messages
            .iter()
            .any(|message| matches!(message, SupervisorMessage::Run { .. })),
        "{messages:?}"
    );
    assert_consistent(&world.snapshot());
}

#[test]
fn the_report_of_an_unwanted_run_frees_its_agent_for_waiting_jobs() {
    // Regression (found by the `stalls` scenario): an agent back with runs
    // nobody wants is full until it reports them ended; that report must
    // give its room to the jobs waiting for an agent.
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let stray = RunningJob {
        job: JobId("j-99".into()),
        run: 1,
    };
    let mut agent = world.connect("a-1", 1, vec![stray.clone()]);
    assert!(
        agent.runs().is_empty(),
        "the agent is full with its stray run"
    );
    agent.finished(&stray.job, stray.run, killed_by(9), true);
    world.runtime.run_until_idle();
    assert_eq!(agent.runs(), vec![(job.id.clone(), 1)]);
    assert_consistent(&world.snapshot());
}

#[test]
fn a_superseded_connection_is_closed_and_its_traffic_refused() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut first = world.connect("a-1", 2, vec![]);
    first.runs();
    let second = world.connect("a-1", 2, vec![]);
    world.runtime.run_until_idle();
    assert!(
        first.received().is_err(),
        "the superseded connection is closed"
    );
    assert_eq!(world.snapshot().agents[0].link, Link::Connected);
    assert!(first.task.is_finished());
    drop(second);
    assert_consistent(&world.snapshot());
    assert_eq!(world.job(&job.id).record.status, JobStatus::Pending);
}

#[test]
fn bad_agent_credentials_and_frames_are_refused() {
    let world = World::start(config());
    let mut wrong = world.connect_with_token("a-1", "t-a-2", 1, vec![]);
    let answer = wrong.received().expect_err("closed after the rejection");
    assert!(
        matches!(&answer[0], SupervisorMessage::Rejected { reason } if reason.contains("wrong token"))
    );
    let mut unknown = world.connect("a-9", 1, vec![]);
    let answer = unknown.received().expect_err("closed");
    assert!(
        matches!(&answer[0], SupervisorMessage::Rejected { reason } if reason.contains("unknown agent"))
    );
    let mut agent = world.connect("a-1", 1, vec![]);
    agent.received().expect("open");
    agent
        .connection
        .sender
        .send(b"{not json".to_vec())
        .expect("open");
    world.runtime.run_until_idle();
    assert!(
        agent.received().is_err(),
        "a malformed frame closes the connection"
    );
    assert_eq!(world.snapshot().agents[0].link, Link::Disconnected);
    let (supervisor_end, mut silent) = connection_pair("a-3", "supervisor");
    let supervisor = world.supervisor.clone();
    world.runtime.spawn(
        "silent",
        Box::pin(async move { supervisor.serve_agent(supervisor_end).await }),
    );
    world.advance_ms(10_000);
    let answer = try_recv(&mut silent.receiver).expect("answered");
    assert!(
        matches!(answer, Err(crate::runtime::NetError::Closed)),
        "a connection without a hello is closed, not rejected (the agent may retry): {answer:?}"
    );
}

#[test]
fn clients_see_only_their_own_jobs() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let other = world.call(
        "bob",
        ClientRequest::Status {
            job: job.id.clone(),
        },
    );
    assert_eq!(expect_error(other), ErrorCode::NotFound);
    assert_eq!(
        expect_error(world.cancel("bob", &job.id)),
        ErrorCode::NotFound
    );
    assert_eq!(
        world.job(&job.id).record.status,
        JobStatus::Pending,
        "bob's cancel did nothing"
    );
    assert_eq!(
        world.status("root", &job.id).id,
        job.id,
        "admins see every job"
    );
    let unknown = world.call("mallory", ClientRequest::List);
    assert_eq!(expect_error(unknown), ErrorCode::Unauthorized);
    assert_eq!(
        world.supervisor.authenticate_user("t-bob").as_deref(),
        Some("bob")
    );
    assert_eq!(world.supervisor.authenticate_user("t-nobody"), None);
    assert_eq!(world.supervisor.authenticate_user(""), None);
    match world.call("bob", ClientRequest::List) {
        ClientResponse::Jobs { jobs } => assert!(jobs.is_empty()),
        other => panic!("{other:?}"),
    }
    match world.call("bob", ClientRequest::Overview) {
        ClientResponse::Overview { overview } => {
            assert_eq!(overview["jobs"].as_array().expect("jobs").len(), 0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_submits_are_refused() {
    let mut config = config();
    config.max_command_bytes = 16;
    let world = World::start(config);
    let mut empty = submit_request(JobKind::Parallel);
    empty.command.clear();
    assert_eq!(
        expect_error(world.call("alice", ClientRequest::Submit(empty))),
        ErrorCode::BadRequest
    );
    let mut large = submit_request(JobKind::Parallel);
    large.command = vec!["x".repeat(17)];
    assert_eq!(
        expect_error(world.call("alice", ClientRequest::Submit(large))),
        ErrorCode::TooLarge
    );
    let mut zero = submit_request(JobKind::Parallel);
    zero.max_run_ms = Some(0);
    assert_eq!(
        expect_error(world.call("alice", ClientRequest::Submit(zero))),
        ErrorCode::BadRequest
    );
    assert!(world.snapshot().jobs.is_empty());
}

#[test]
fn a_retried_submit_with_the_same_key_returns_the_same_job() {
    let world = World::start(config());
    let mut request = submit_request(JobKind::Parallel);
    request.idempotency_key = Some("k-1".into());
    let first = world.submit_request("alice", request.clone());
    let again = world.submit_request("alice", request.clone());
    assert_eq!(first.id, again.id);
    let bobs = world.submit_request("bob", request.clone());
    assert_ne!(bobs.id, first.id, "keys are per owner");
    request.command = vec!["other".into()];
    let reused = world.call("alice", ClientRequest::Submit(request));
    assert_eq!(expect_error(reused), ErrorCode::BadRequest);
    assert_eq!(world.snapshot().jobs.len(), 2);
}

#[test]
fn a_submit_dropped_while_committing_leaves_a_whole_job() {
    let runtime = TestRuntime::new();
    let store =
        MemoryStore::with_commit_latency(Arc::new(runtime.clone()), Duration::from_millis(5));
    let world = World::start_with(config(), store, FlawSet::none(), runtime);
    {
        let submit = world.supervisor.handle_client(
            "alice",
            ClientRequest::Submit(submit_request(JobKind::Parallel)),
        );
        futures::pin_mut!(submit);
        assert!(
            super::testkit::poll_once(submit.as_mut()).is_pending(),
            "awaits the commit"
        );
    }
    world.runtime.run_until_idle();
    let snapshot = world.snapshot();
    assert_eq!(snapshot.jobs.len(), 1);
    assert_consistent(&snapshot);
    let mut agent = world.connect("a-1", 1, vec![]);
    world.advance_ms(10);
    assert_eq!(
        agent.runs().len(),
        1,
        "the job runs though its submitter left"
    );
}

#[test]
fn a_client_that_leaves_mid_request_drops_its_handler_at_the_await() {
    let runtime = TestRuntime::new();
    let store =
        MemoryStore::with_commit_latency(Arc::new(runtime.clone()), Duration::from_millis(50));
    let world = World::start_with(config(), store, FlawSet::none(), runtime);
    let net = TestNet::default();
    let supervisor = world.supervisor.clone();
    let server_net: Arc<dyn crate::runtime::Net> = Arc::new(net.clone());
    world.runtime.spawn(
        "serve",
        Box::pin(async move { supervisor.serve_net(server_net, 7000, 7001).await }),
    );
    world.runtime.run_until_idle();
    let client = world
        .runtime
        .block_on(crate::runtime::Net::connect(&net, "sup:7001"))
        .expect("connects");
    let call = crate::protocol::ClientCall {
        token: "t-alice".into(),
        request: ClientRequest::Submit(submit_request(JobKind::Parallel)),
    };
    client.sender.send(codec::encode(&call)).expect("open");
    world.runtime.run_until_idle();
    let serving = |world: &World| {
        world
            .runtime
            .live_tasks()
            .iter()
            .any(|task| task.starts_with("client-conn"))
    };
    assert!(serving(&world), "the submit awaits its commit");
    drop(client);
    world.runtime.run_until_idle();
    assert!(
        !serving(&world),
        "the handler was dropped without waiting for its commit"
    );
    world.advance_ms(100);
    assert_eq!(
        world.snapshot().jobs.len(),
        1,
        "what the submit did before its await stands"
    );
    assert_consistent(&world.snapshot());
}

#[test]
fn net_clients_call_through_one_frame_each_way() {
    let world = World::start(config());
    let net = TestNet::default();
    let supervisor = world.supervisor.clone();
    let server_net: Arc<dyn crate::runtime::Net> = Arc::new(net.clone());
    world.runtime.spawn(
        "serve",
        Box::pin(async move { supervisor.serve_net(server_net, 7000, 7001).await }),
    );
    world.runtime.run_until_idle();
    let request = ClientRequest::Submit(submit_request(JobKind::Parallel));
    let answer = world
        .runtime
        .block_on(crate::client::call(
            &net,
            "sup:7001",
            "t-alice",
            request.clone(),
        ))
        .expect("answered");
    assert_eq!(expect_job(answer).id, JobId("j-1".into()));
    let refused = world
        .runtime
        .block_on(crate::client::call(&net, "sup:7001", "t-wrong", request))
        .expect("answered");
    assert_eq!(expect_error(refused), ErrorCode::Unauthorized);
    let mut raw = world
        .runtime
        .block_on(crate::runtime::Net::connect(&net, "sup:7001"))
        .expect("connects");
    raw.sender.send(b"garbage".to_vec()).expect("open");
    world.runtime.run_until_idle();
    let frame = try_recv(&mut raw.receiver)
        .expect("answered")
        .expect("frame");
    let answer: ClientResponse = codec::decode(&frame).expect("decodes");
    assert_eq!(expect_error(answer), ErrorCode::BadRequest);
    world.supervisor.shutdown();
    world.runtime.run_until_idle();
    assert!(
        world.runtime.live_tasks().is_empty(),
        "left: {:?}",
        world.runtime.live_tasks()
    );
}

#[test]
fn a_restart_requeues_pending_jobs_in_order_and_waits_for_running_ones() {
    let store = MemoryStore::with_durability(Durability::OnCommit);
    let world = World::start_with(config(), store.clone(), FlawSet::none(), TestRuntime::new());
    let running = world.submit("alice", JobKind::Parallel);
    let mut agent = world.connect("a-1", 1, vec![]);
    agent.runs();
    agent.started(&running.id, 1);
    world.runtime.run_until_idle();
    let waiting: Vec<JobId> = (0..3)
        .map(|_| world.submit("bob", JobKind::Parallel).id)
        .collect();
    world.status("alice", &running.id);
    world.supervisor.shutdown();
    store.crash();
    let restarted = World::start_with(config(), store, FlawSet::none(), world.runtime.clone());
    let snapshot = restarted.snapshot();
    assert!(snapshot.recovering_until.is_some());
    let recovering = restarted.job(&running.id);
    assert_eq!(recovering.record.status, JobStatus::Running);
    let op = snapshot
        .ops
        .iter()
        .find(|op| Some(op.id) == recovering.op)
        .expect("op");
    assert_eq!(op.phase, OpPhase::Recovering);
    assert_consistent(&snapshot);
    let new = restarted.submit("alice", JobKind::Parallel);
    assert_eq!(new.id, JobId("j-5".into()), "ids are never reused");
    let mut agent = restarted.connect(
        "a-1",
        2,
        vec![RunningJob {
            job: running.id.clone(),
            run: 1,
        }],
    );
    assert_eq!(
        agent.runs(),
        vec![(waiting[0].clone(), 1)],
        "pending jobs keep their order"
    );
    let adopted = restarted.job(&running.id);
    assert_eq!(
        restarted
            .snapshot()
            .ops
            .iter()
            .find(|op| Some(op.id) == adopted.op)
            .expect("op")
            .phase,
        OpPhase::Running
    );
    agent.finished(&running.id, 1, exit_code(0), false);
    restarted.runtime.run_until_idle();
    assert_eq!(
        restarted.status("alice", &running.id).status,
        JobStatus::Completed
    );
    assert_consistent(&restarted.snapshot());
}

#[test]
fn a_running_job_whose_agent_does_not_return_is_lost_after_the_recovery_grace() {
    let store = MemoryStore::new();
    let world = World::start_with(config(), store.clone(), FlawSet::none(), TestRuntime::new());
    let job = world.submit("alice", JobKind::Parallel);
    let mut agent = world.connect("a-1", 1, vec![]);
    agent.runs();
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    world.supervisor.shutdown();
    let restarted = World::start_with(config(), store, FlawSet::none(), world.runtime.clone());
    restarted.advance_ms(9_999);
    assert_eq!(restarted.job(&job.id).record.status, JobStatus::Running);
    restarted.advance_ms(1);
    let view = restarted.status("alice", &job.id);
    assert_eq!(view.status, JobStatus::Lost);
    assert!(view.reason.expect("reason").contains("recovery grace"));
    let snapshot = restarted.snapshot();
    assert!(snapshot.recovering_until.is_none());
    assert_consistent(&snapshot);
}

#[test]
fn an_acknowledged_submit_survives_a_crash() {
    let store = MemoryStore::with_durability(Durability::OnCommit);
    let world = World::start_with(config(), store.clone(), FlawSet::none(), TestRuntime::new());
    let job = world.submit("alice", JobKind::Parallel);
    let canceled = world.submit("alice", JobKind::Parallel);
    world.cancel("alice", &canceled.id);
    world.supervisor.shutdown();
    store.crash();
    let restarted = World::start_with(config(), store, FlawSet::none(), world.runtime.clone());
    assert_eq!(
        restarted.status("alice", &job.id).status,
        JobStatus::Pending
    );
    assert_eq!(
        restarted.status("alice", &canceled.id).status,
        JobStatus::Canceled
    );
}

#[test]
fn shutdown_stops_every_task_and_refuses_new_work() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut agent = world.connect("a-1", 1, vec![]);
    agent.runs();
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    world.supervisor.shutdown();
    world.runtime.run_until_idle();
    let refused = world.call(
        "alice",
        ClientRequest::Submit(submit_request(JobKind::Parallel)),
    );
    assert_eq!(expect_error(refused), ErrorCode::Unavailable);
    assert!(agent.received().is_err(), "agent sessions end");
    let live: Vec<String> = world
        .runtime
        .live_tasks()
        .into_iter()
        .filter(|task| !task.starts_with("test "))
        .collect();
    assert!(live.is_empty(), "tasks left: {live:?}");
    assert!(world.snapshot().shutting_down);
}

#[test]
fn a_slot_freed_by_one_job_goes_to_the_oldest_waiting_job() {
    let world = World::start(config());
    let jobs: Vec<JobId> = (0..4)
        .map(|_| world.submit("root", JobKind::Sequential).id)
        .collect();
    let mut agent = world.connect("a-1", 4, vec![]);
    for (index, job) in jobs.iter().enumerate() {
        assert_eq!(
            agent.runs(),
            vec![(job.clone(), 1)],
            "job {index} runs alone, in order"
        );
        agent.started(job, 1);
        agent.finished(job, 1, exit_code(0), false);
        world.runtime.run_until_idle();
        assert_consistent(&world.snapshot());
    }
    let now = world.runtime.now();
    assert!(world
        .snapshot()
        .jobs
        .iter()
        .all(|job| job.record.finished_at <= Some(now)));
}

#[derive(Clone, Default)]
struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run a job start under a capturing subscriber and return the log.
fn capture_job_start() -> String {
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        let world = World::start(config());
        let job = world.submit("alice", JobKind::Parallel);
        let mut agent = world.connect("a-1", 1, vec![]);
        agent.runs();
        agent.started(&job.id, 1);
        world.runtime.run_until_idle();
    });
    let text = log.0.lock().expect("log lock").clone();
    String::from_utf8(text).expect("utf-8")
}

#[test]
fn op_events_carry_the_op_context_whichever_task_logs_them() {
    // tracing caches per call site whether anyone listens, process-wide;
    // a test thread without a subscriber that reaches a call site first can
    // leave it switched off for this thread's scoped subscriber for a
    // moment. Rebuilding the cache and trying again (bounded) absorbs that.
    let mut text = String::new();
    for _ in 0..5 {
        text = capture_job_start();
        let started = text
            .lines()
            .find(|line| line.contains("op advanced") && line.contains("phase=running"));
        if let Some(started) = started {
            for field in [
                "op=1",
                "job=j-1",
                "run=1",
                "agent=a-1",
                "situation=\"running on agent a-1\"",
            ] {
                assert!(started.contains(field), "{field} missing from {started}");
            }
            return;
        }
    }
    panic!("no running event in:\n{text}");
}

#[test]
fn the_public_futures_are_send_for_a_multi_threaded_shell() {
    fn assert_send<T: Send>(_: &T) {}
    let runtime = TestRuntime::new();
    let deps = SupervisorDeps {
        runtime: Arc::new(runtime.clone()),
        store: Arc::new(MemoryStore::new()),
        flaws: FlawSet::none(),
    };
    let start = Supervisor::start(config(), deps);
    assert_send(&start);
    let supervisor = runtime.block_on(start).expect("starts");
    assert_send(&supervisor.handle_client("alice", ClientRequest::List));
    let (connection, _peer) = connection_pair("a-1", "supervisor");
    assert_send(&supervisor.serve_agent(connection));
    assert_send(&supervisor.serve_net(Arc::new(TestNet::default()), 1, 2));
}

#[test]
fn a_start_report_overtaken_by_the_end_report_leaves_no_phantom_run() {
    let world = World::start(config());
    let job = world.submit("alice", JobKind::Parallel);
    let mut agent = world.connect("a-1", 1, vec![]);
    agent.runs();
    agent.finished(&job.id, 1, exit_code(0), false);
    agent.started(&job.id, 1);
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    assert_eq!(world.status("alice", &job.id).status, JobStatus::Completed);
    let snapshot = world.snapshot();
    assert!(
        snapshot.agents[0].runs.is_empty(),
        "no phantom run takes the agent's slot"
    );
    assert!(agent
        .received()
        .expect("open")
        .iter()
        .all(|message| !matches!(message, SupervisorMessage::Kill { .. })));
    let next = world.submit("alice", JobKind::Parallel);
    assert_eq!(agent.runs(), vec![(next.id, 1)]);
    assert_consistent(&world.snapshot());
}
