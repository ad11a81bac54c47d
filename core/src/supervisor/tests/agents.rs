//! Agent connections: credentials and bad frames, reconnects and what the
//! agent declares in its hello (reconciliation), runs that never reached
//! their agent, runs nobody wants, and superseded connections.

use super::{assert_consistent, config, declared, exit_code, killed_by, World};
use crate::agents::Link;
use crate::ops::OpPhase;
use crate::protocol::{JobId, JobKind, JobStatus, RunningJob, SupervisorMessage};
use crate::runtime::{NetError, Runtime};
use crate::supervisor::testkit::{connection_pair, try_recv};

#[test]
fn a_reconnecting_agent_keeps_the_runs_it_declares() {
    let world = World::start(config());
    let (job, first) = world.start_one(2);
    first.close();
    world.runtime.run_until_idle();
    assert_eq!(world.snapshot().agents[0].link, Link::Disconnected);
    let mut second = world.connect("a-1", 2, declared(&job.id, 1));
    let welcome = second.received().expect("open");
    assert!(
        matches!(&welcome[0], SupervisorMessage::Welcome { session: 2, kill, .. } if kill.is_empty())
    );
    second.finished(&job.id, 1, exit_code(0), false);
    world.runtime.run_until_idle();
    world.assert_status_and_consistency("alice", &job.id, JobStatus::Completed);
}

#[test]
fn a_late_report_after_a_reconnect_settles_an_undeclared_run() {
    let world = World::start(config());
    let (job, first) = world.start_one(2);
    first.close();
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
    let (job, first) = world.start_one(2);
    first.close();
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
    let (job, first) = world.dispatch_one(2);
    first.close();
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
    let (job, mut first) = world.dispatch_one(2);
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
        matches!(answer, Err(NetError::Closed)),
        "a connection without a hello is closed, not rejected (the agent may retry): {answer:?}"
    );
}
