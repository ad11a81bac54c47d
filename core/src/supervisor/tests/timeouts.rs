//! Time limits: the max-run timer, the start timeout, and the heartbeat
//! grace that keeps (or loses) an agent and its jobs.

use super::{assert_consistent, config, killed_by, submit_request_with_max_run, World};
use crate::agents::Link;
use crate::protocol::{JobKind, JobStatus, SupervisorMessage};

#[test]
fn a_run_past_its_max_run_time_is_killed_and_timed_out() {
    let world = World::start(config());
    let (job, mut agent) = world.dispatch_one_with(submit_request_with_max_run(1_500), 2);
    assert_eq!(job.max_run_ms, 1_500);
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    agent.heartbeat(1);
    world.advance_ms(1_499);
    assert!(agent.kills().is_empty());
    world.advance_ms(1);
    assert!(agent.kills().contains(&(job.id.clone(), 1)));
    agent.finished(&job.id, 1, killed_by(9), true);
    world.runtime.run_until_idle();
    let view = world.status("alice", &job.id);
    assert_eq!(view.status, JobStatus::TimedOut);
    assert_consistent(&world.snapshot());
}

#[test]
fn a_completed_run_disarms_its_max_run_timer() {
    let world = World::start(config());
    let (job, agent) = world.complete_one_with(submit_request_with_max_run(1_000), 2);
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
    let (job, mut agent) = world.dispatch_one(2);
    for seq in 1..=5 {
        world.advance_ms(1_000);
        agent.heartbeat(seq);
    }
    world.runtime.run_until_idle();
    assert!(agent.kills().contains(&(job.id.clone(), 1)));
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
    let (job, mut agent) = world.dispatch_one(2);
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
