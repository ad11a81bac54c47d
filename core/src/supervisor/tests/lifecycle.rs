//! The supervisor as a whole: shutdown stops everything it started, and
//! its public futures can be driven by a multi-threaded shell.

use std::sync::Arc;

use super::{config, expect_error, submit_request, World};
use crate::flaws::FlawSet;
use crate::protocol::{ClientRequest, ErrorCode, JobKind};
use crate::store::MemoryStore;
use crate::supervisor::testkit::{connection_pair, TestNet, TestRuntime};
use crate::supervisor::{Supervisor, SupervisorDeps};

#[test]
fn shutdown_stops_every_task_and_refuses_new_work() {
    let world = World::start(config());
    let (_job, mut agent) = world.start_one(1);
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
