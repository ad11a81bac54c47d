//! Cancels: of a waiting job, of a running one (the kill and its
//! confirmation), racing a completion, of a run that never reached its
//! agent, and of a job whose dispatch is still being recorded.

use std::time::Duration;

use super::{assert_consistent, config, exit_code, expect_job, killed_by, submit_request, World};
use crate::flaws::FlawSet;
use crate::ops::OpPhase;
use crate::protocol::{ClientRequest, JobKind, JobStatus, SupervisorMessage};

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
    let (job, mut agent) = world.start_one(2);
    let acknowledged = expect_job(world.cancel("alice", &job.id));
    assert_eq!(
        acknowledged.status,
        JobStatus::Running,
        "canceled once the kill is confirmed"
    );
    assert_eq!(agent.kills(), vec![(job.id.clone(), 1)]);
    agent.finished(&job.id, 1, killed_by(9), true);
    world.runtime.run_until_idle();
    world.assert_status_and_consistency("alice", &job.id, JobStatus::Canceled);
}

#[test]
fn a_completion_that_wins_the_race_with_a_cancel_stays_completed() {
    let world = World::start(config());
    let (job, agent) = world.start_one(2);
    world.cancel("alice", &job.id);
    agent.finished(&job.id, 1, exit_code(0), false);
    world.runtime.run_until_idle();
    world.assert_status_and_consistency("alice", &job.id, JobStatus::Completed);
}

#[test]
fn an_unconfirmed_kill_settles_the_job_after_the_reply_timeout() {
    let world = World::start(config());
    let (job, agent) = world.start_one(2);
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
fn a_canceled_job_whose_run_never_arrived_is_canceled_not_rerun() {
    let world = World::start(config());
    let (job, first) = world.dispatch_one(2);
    first.close();
    world.runtime.run_until_idle();
    world.cancel("alice", &job.id);
    let mut second = world.connect("a-1", 2, vec![]);
    world.advance_ms(2_000);
    assert!(second.runs().is_empty());
    world.assert_status_and_consistency("alice", &job.id, JobStatus::Canceled);
}

#[test]
fn a_job_canceled_while_its_dispatch_is_recorded_ends_when_its_agent_is_lost() {
    // Regression (found by the `stalls` scenario): the agent was lost while
    // the dispatch of a canceled job was being made durable; the job went
    // back to waiting for an agent and was dispatched again after its
    // cancel was acknowledged.
    let world = World::start_with_commit_latency(Duration::from_secs(10), FlawSet::none());
    // Both requests act before their first await (the commit); their
    // callers leave without waiting for it.
    let submit = ClientRequest::Submit(submit_request(JobKind::Parallel));
    assert!(world.call_once("alice", submit).is_pending());
    let mut agent = world.connect("a-1", 1, vec![]);
    let job = world.snapshot().jobs[0].record.id.clone();
    assert_eq!(
        world.snapshot().ops[0].phase,
        OpPhase::Dispatching,
        "the dispatch awaits its commit"
    );
    let cancel = ClientRequest::Cancel { job: job.clone() };
    assert!(world.call_once("alice", cancel).is_pending());
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
