//! What clients ask and see: submits, status, lists, plan limits, queue
//! positions, idempotency keys, bad input, clients that leave mid-request,
//! and calls over the network.

use std::time::Duration;

use super::{
    assert_consistent, config, exit_code, expect_error, expect_job, submit_request, World,
    CLIENT_ADDR,
};
use crate::codec;
use crate::flaws::FlawSet;
use crate::protocol::{
    ClientCall, ClientRequest, ClientResponse, ErrorCode, JobId, JobKind, JobStatus,
};
use crate::runtime::Net;
use crate::supervisor::testkit::try_recv;

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
    let refusal = |request| expect_error(world.call("alice", ClientRequest::Submit(request)));
    let mut empty = submit_request(JobKind::Parallel);
    empty.command.clear();
    assert_eq!(refusal(empty), ErrorCode::BadRequest);
    let mut large = submit_request(JobKind::Parallel);
    large.command = vec!["x".repeat(17)];
    assert_eq!(refusal(large), ErrorCode::TooLarge);
    let mut zero = submit_request(JobKind::Parallel);
    zero.max_run_ms = Some(0);
    assert_eq!(refusal(zero), ErrorCode::BadRequest);
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
    let world = World::start_with_commit_latency(Duration::from_millis(5), FlawSet::none());
    let submit = ClientRequest::Submit(submit_request(JobKind::Parallel));
    assert!(
        world.call_once("alice", submit).is_pending(),
        "awaits the commit"
    );
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
    let world = World::start_with_commit_latency(Duration::from_millis(50), FlawSet::none());
    let net = world.serve_net();
    let client = world
        .runtime
        .block_on(Net::connect(&net, CLIENT_ADDR))
        .expect("connects");
    let call = ClientCall {
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
    let net = world.serve_net();
    let request = ClientRequest::Submit(submit_request(JobKind::Parallel));
    let answer = world
        .runtime
        .block_on(crate::client::call(
            &net,
            CLIENT_ADDR,
            "t-alice",
            request.clone(),
        ))
        .expect("answered");
    assert_eq!(expect_job(answer).id, JobId("j-1".into()));
    let refused = world
        .runtime
        .block_on(crate::client::call(&net, CLIENT_ADDR, "t-wrong", request))
        .expect("answered");
    assert_eq!(expect_error(refused), ErrorCode::Unauthorized);
    let mut raw = world
        .runtime
        .block_on(Net::connect(&net, CLIENT_ADDR))
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
