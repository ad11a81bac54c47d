//! Restarts on a kept store: pending jobs requeued in order, running jobs
//! waiting for their agents for the recovery grace, acknowledged work that
//! survives a crash.

use super::{assert_consistent, config, declared, exit_code, World};
use crate::flaws::FlawSet;
use crate::ops::OpPhase;
use crate::protocol::{JobId, JobKind, JobStatus};

#[test]
fn a_restart_requeues_pending_jobs_in_order_and_waits_for_running_ones() {
    let world = World::start_on_commit(FlawSet::none());
    let (running, _agent) = world.start_one(1);
    let waiting: Vec<JobId> = (0..3)
        .map(|_| world.submit("bob", JobKind::Parallel).id)
        .collect();
    world.status("alice", &running.id);
    let restarted = world.restart_after_crash();
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
    let mut agent = restarted.connect("a-1", 2, declared(&running.id, 1));
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
    let world = World::start(config());
    let (job, _agent) = world.start_one(1);
    let restarted = world.restart();
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
    let world = World::start_on_commit(FlawSet::none());
    let job = world.submit("alice", JobKind::Parallel);
    let canceled = world.submit("alice", JobKind::Parallel);
    world.cancel("alice", &canceled.id);
    let restarted = world.restart_after_crash();
    assert_eq!(
        restarted.status("alice", &job.id).status,
        JobStatus::Pending
    );
    assert_eq!(
        restarted.status("alice", &canceled.id).status,
        JobStatus::Canceled
    );
}
