//! Async tests of the supervisor on the test executor, one file per area,
//! and the helpers they (and the flaw and model tests) share.
//!
//! * [`clients`]: submit, status, list, limits, idempotency, queue
//!   positions, bad input, clients that leave mid-request, the network;
//! * [`runs`]: a job's run from dispatch to its end, slot hand-offs, logs;
//! * [`cancels`]: cancel before, during and after a run;
//! * [`timeouts`]: the max-run timer, the start timeout, heartbeat grace;
//! * [`agents`]: hello, credentials, reconnects, reconciliation,
//!   superseded connections;
//! * [`recovery`]: restarts on a store, crashes, the recovery grace;
//! * [`lifecycle`]: shutdown and the futures a multi-threaded shell needs.
//!
//! Here: [`World`] (a supervisor on a [`TestRuntime`] and a [`MemoryStore`]),
//! [`FakeAgent`] (an agent driven by hand), [`assert_consistent`] (the
//! invariants every snapshot keeps) and small request and exit builders.

mod agents;
mod cancels;
mod clients;
mod fake_agent;
mod invariants;
mod lifecycle;
mod recovery;
mod runs;
mod timeouts;

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::testkit::{connection_pair, poll_once, TestNet, TestRuntime};
use super::{JobSnapshot, Snapshot, Supervisor, SupervisorDeps};
use crate::config::{AgentAuthConfig, Role, SupervisorConfig, UserConfig};
use crate::flaws::FlawSet;
use crate::protocol::{
    AgentId, AgentMessage, ClientRequest, ClientResponse, ErrorCode, ExitInfo, JobId, JobKind,
    JobStatus, JobView, RunId, RunningJob, SubmitRequest,
};
use crate::runtime::{Net, Runtime};
use crate::store::{Durability, MemoryStore};

pub(super) use fake_agent::FakeAgent;
pub(super) use invariants::assert_consistent;

/// Ports [`World::serve_net`] listens on, and the client address.
const AGENT_PORT: u16 = 7000;
const CLIENT_PORT: u16 = 7001;
const CLIENT_ADDR: &str = "sup:7001";

/// Users alice and bob (role user) and root (admin), each with token
/// `t-<name>`; agents a-1 and a-2 with token `t-<agent>`; two parallel slots
/// and one sequential; 1 s heartbeats with a grace of three.
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

/// A supervisor on the test executor and an in-memory store.
pub(super) struct World {
    pub(super) runtime: TestRuntime,
    pub(super) supervisor: Supervisor,
    pub(super) store: MemoryStore,
    /// What it was started with, for [`World::restart`].
    config: SupervisorConfig,
    flaws: FlawSet,
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

    /// [`config`] on a fresh store with `flaws` switched on.
    // Only the flaw tests switch flaws on.
    #[cfg_attr(not(feature = "flaws"), allow(dead_code))]
    pub(super) fn start_flawed(flaws: FlawSet) -> World {
        World::start_with(config(), MemoryStore::new(), flaws, TestRuntime::new())
    }

    /// [`config`] on a store that keeps only what was committed when it
    /// crashes.
    pub(super) fn start_on_commit(flaws: FlawSet) -> World {
        let store = MemoryStore::with_durability(Durability::OnCommit);
        World::start_with(config(), store, flaws, TestRuntime::new())
    }

    /// [`config`] on a store whose commits take `latency` of virtual time.
    pub(super) fn start_with_commit_latency(latency: Duration, flaws: FlawSet) -> World {
        let runtime = TestRuntime::new();
        let store = MemoryStore::with_commit_latency(Arc::new(runtime.clone()), latency);
        World::start_with(config(), store, flaws, runtime)
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
            .block_on(Supervisor::start(config.clone(), deps))
            .expect("supervisor starts");
        runtime.run_until_idle();
        World {
            runtime,
            supervisor,
            store,
            config,
            flaws,
        }
    }

    /// Shut this supervisor down and start another with the same
    /// configuration and flaws on the same store and clock.
    pub(super) fn restart(&self) -> World {
        self.supervisor.shutdown();
        self.start_again()
    }

    /// [`World::restart`], losing what the store had not committed.
    pub(super) fn restart_after_crash(&self) -> World {
        self.supervisor.shutdown();
        self.store.crash();
        self.start_again()
    }

    /// A new supervisor on this world's store and clock.
    fn start_again(&self) -> World {
        assert!(
            self.snapshot().shutting_down,
            "one supervisor at a time on a store"
        );
        World::start_with(
            self.config.clone(),
            self.store.clone(),
            self.flaws,
            self.runtime.clone(),
        )
    }

    /// Serve `request`, letting virtual time pass if the store needs it.
    pub(super) fn call(&self, user: &str, request: ClientRequest) -> ClientResponse {
        let call = self.supervisor.handle_client(user, request);
        futures::pin_mut!(call);
        for _ in 0..10_000 {
            if let Poll::Ready(response) = poll_once(call.as_mut()) {
                self.runtime.run_until_idle();
                return response;
            }
            self.advance_ms(1);
        }
        panic!("a client call took more than 10s of virtual time");
    }

    /// Poll `request` once and drop it, as a client that leaves would.
    pub(super) fn call_once(&self, user: &str, request: ClientRequest) -> Poll<ClientResponse> {
        let call = self.supervisor.handle_client(user, request);
        futures::pin_mut!(call);
        poll_once(call.as_mut())
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

    /// Submit `request` for alice, connect agent a-1 with `slots` and check
    /// that it was asked to run it (and nothing else) as run 1.
    pub(super) fn dispatch_one_with(
        &self,
        request: SubmitRequest,
        slots: u32,
    ) -> (JobView, FakeAgent) {
        let job = self.submit_request("alice", request);
        let mut agent = self.connect("a-1", slots, vec![]);
        assert_eq!(
            agent.runs(),
            vec![(job.id.clone(), 1)],
            "the one job is dispatched to the one agent"
        );
        (job, agent)
    }

    /// [`World::dispatch_one_with`] a parallel job.
    pub(super) fn dispatch_one(&self, slots: u32) -> (JobView, FakeAgent) {
        self.dispatch_one_with(submit_request(JobKind::Parallel), slots)
    }

    /// [`World::dispatch_one`], then the agent reports run 1 started.
    pub(super) fn start_one(&self, slots: u32) -> (JobView, FakeAgent) {
        let (job, agent) = self.dispatch_one(slots);
        agent.started(&job.id, 1);
        self.runtime.run_until_idle();
        (job, agent)
    }

    /// [`World::dispatch_one_with`], then the agent reports run 1 started
    /// and completed.
    pub(super) fn complete_one_with(
        &self,
        request: SubmitRequest,
        slots: u32,
    ) -> (JobView, FakeAgent) {
        let (job, agent) = self.dispatch_one_with(request, slots);
        agent.started(&job.id, 1);
        agent.finished(&job.id, 1, exit_code(0), false);
        self.runtime.run_until_idle();
        (job, agent)
    }

    /// Assert that `owner` sees `job` in `status`, and that the whole state
    /// is consistent.
    pub(super) fn assert_status_and_consistency(
        &self,
        owner: &str,
        job: &JobId,
        status: JobStatus,
    ) {
        assert_eq!(self.status(owner, job).status, status, "{owner}'s {job}");
        assert_consistent(&self.snapshot());
    }

    /// Serve clients and agents over a fresh [`TestNet`] (clients at
    /// [`CLIENT_ADDR`]) and return it.
    pub(super) fn serve_net(&self) -> TestNet {
        let net = TestNet::default();
        let supervisor = self.supervisor.clone();
        let server_net: Arc<dyn Net> = Arc::new(net.clone());
        self.runtime.spawn(
            "serve",
            Box::pin(async move {
                supervisor
                    .serve_net(server_net, AGENT_PORT, CLIENT_PORT)
                    .await
            }),
        );
        self.runtime.run_until_idle();
        net
    }

    pub(super) fn advance_ms(&self, millis: u64) {
        self.runtime.advance(Duration::from_millis(millis));
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        self.supervisor.snapshot()
    }

    pub(super) fn job(&self, job: &JobId) -> JobSnapshot {
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

/// A parallel job's request that may run for `max_run_ms`.
pub(super) fn submit_request_with_max_run(max_run_ms: u64) -> SubmitRequest {
    SubmitRequest {
        max_run_ms: Some(max_run_ms),
        ..submit_request(JobKind::Parallel)
    }
}

/// What an agent declares in its hello when it runs `run` of `job`.
pub(super) fn declared(job: &JobId, run: RunId) -> Vec<RunningJob> {
    vec![RunningJob {
        job: job.clone(),
        run,
    }]
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
