//! Each known flaw, reproduced by hand: with the flaw on, the violation it
//! is documented to leave is visible in the snapshot (or in what clients
//! observe); with no flaw, the same steps leave a consistent state.
//! Only compiled with the `flaws` feature.

use std::time::Duration;

use super::tests::{
    assert_consistent, declared, exit_code, expect_job, killed_by, submit_request,
    submit_request_with_max_run, World,
};
use crate::agents::Link;
use crate::flaws::{Flaw, FlawSet};
use crate::job::is_legal_transition;
use crate::protocol::{ClientRequest, JobId, JobKind, JobStatus};

fn with(flaw: Flaw) -> FlawSet {
    FlawSet::of(&[flaw])
}

fn has_illegal_transition(world: &World, job: &JobId) -> bool {
    world.job(job).record.history[1..]
        .iter()
        .any(|change| !is_legal_transition(change.from.expect("from"), change.to))
}

/// A sequential job runs; a second waits for the one sequential slot; the
/// first finishes, the slot is handed to the second, and the second is
/// canceled before its op wakes to take the slot.
fn cancel_during_slot_hand_off(flaws: FlawSet) -> (World, JobId) {
    let world = World::start_flawed(flaws);
    let first = world.submit("alice", JobKind::Sequential);
    let second = world.submit("bob", JobKind::Sequential);
    let mut agent = world.connect("a-1", 2, vec![]);
    agent.runs();
    agent.started(&first.id, 1);
    world.runtime.run_until_idle();
    agent.finished(&first.id, 1, exit_code(0), false);
    assert!(
        world.runtime.run_one(),
        "the agent connection handles the report"
    );
    assert!(
        world
            .runtime
            .ready_tasks()
            .iter()
            .any(|task| task.starts_with("run-op j-2")),
        "the slot was handed to the waiting op, which has not run yet"
    );
    let cancel = ClientRequest::Cancel {
        job: second.id.clone(),
    };
    assert!(world.call_once("bob", cancel).is_ready());
    world.runtime.run_until_idle();
    (world, second.id)
}

#[test]
fn slot_leak_on_cancel_leaves_a_terminal_job_holding_a_slot() {
    let (clean, job) = cancel_during_slot_hand_off(FlawSet::none());
    assert_eq!(clean.job(&job).record.status, JobStatus::Canceled);
    assert_consistent(&clean.snapshot());
    let (flawed, job) = cancel_during_slot_hand_off(with(Flaw::SlotLeakOnCancel));
    let snapshot = flawed.snapshot();
    let pool = snapshot
        .pools
        .iter()
        .find(|pool| pool.name == "kind/sequential")
        .expect("pool");
    assert_eq!(pool.held, 1);
    assert_eq!(pool.holders[0].holder.job, job);
    assert_eq!(flawed.job(&job).record.status, JobStatus::Canceled);
}

fn late_report_after_unconfirmed_kill(flaws: FlawSet) -> (World, JobId) {
    let world = World::start_flawed(flaws);
    let (job, agent) = world.start_one(2);
    world.cancel("alice", &job.id);
    world.advance_ms(1_000);
    agent.heartbeat(1);
    world.advance_ms(1_001);
    assert_eq!(world.job(&job.id).record.status, JobStatus::Canceled);
    agent.finished(&job.id, 1, exit_code(0), false);
    world.runtime.run_until_idle();
    (world, job.id)
}

#[test]
fn use_after_destroy_applies_a_late_report_to_a_settled_job() {
    let (clean, job) = late_report_after_unconfirmed_kill(FlawSet::none());
    assert_eq!(clean.job(&job).record.status, JobStatus::Canceled);
    assert_consistent(&clean.snapshot());
    let (flawed, job) = late_report_after_unconfirmed_kill(with(Flaw::UseAfterDestroy));
    assert_eq!(flawed.job(&job).record.status, JobStatus::Completed);
    assert!(has_illegal_transition(&flawed, &job));
    let snapshot = flawed.snapshot();
    assert!(snapshot
        .destroyed_ops
        .iter()
        .any(|op| op.uses_after_destroy > 0));
}

fn completion_before_max_run(flaws: FlawSet) -> (World, JobId) {
    let world = World::start_flawed(flaws);
    let (job, agent) = world.complete_one_with(submit_request_with_max_run(1_000), 2);
    world.advance_ms(1_000);
    agent.heartbeat(1);
    world.advance_ms(500);
    (world, job.id)
}

#[test]
fn timeout_overwrites_terminal_rewrites_a_completed_job() {
    let (clean, job) = completion_before_max_run(FlawSet::none());
    assert_eq!(clean.job(&job).record.status, JobStatus::Completed);
    assert_consistent(&clean.snapshot());
    let (flawed, job) = completion_before_max_run(with(Flaw::TimeoutOverwritesTerminal));
    let record = flawed.job(&job).record;
    assert_eq!(record.status, JobStatus::TimedOut);
    let last = record.history.last().expect("history");
    assert_eq!(
        (last.from, last.to),
        (Some(JobStatus::Completed), JobStatus::TimedOut)
    );
}

fn reconnect_then_submit(flaws: FlawSet) -> (World, JobId) {
    let world = World::start_flawed(flaws);
    let _first = world.connect("a-1", 2, vec![]);
    let mut second = world.connect("a-1", 2, vec![]);
    second.received().expect("open");
    let job = world.submit("alice", JobKind::Parallel);
    let runs = second.runs();
    assert_eq!(
        runs.is_empty(),
        flaws.any_on(),
        "dispatched only on a live session"
    );
    (world, job.id)
}

#[test]
fn stale_connection_accepted_detaches_the_live_session() {
    let (clean, _) = reconnect_then_submit(FlawSet::none());
    assert_eq!(clean.snapshot().agents[0].link, Link::Connected);
    assert_consistent(&clean.snapshot());
    let (flawed, job) = reconnect_then_submit(with(Flaw::StaleConnectionAccepted));
    let snapshot = flawed.snapshot();
    assert_eq!(snapshot.agents[0].link, Link::Disconnected);
    assert_eq!(snapshot.agents[0].session, 2);
    let waiting = flawed.job(&job);
    assert!(waiting
        .situation
        .expect("situation")
        .contains("waiting for an agent"));
}

/// a-1 runs a job and heartbeats late once (1.75 s apart, within a grace of
/// three 1 s intervals); a-2 stands by, heartbeating often; a-1 then
/// reconnects declaring its run.
fn one_late_heartbeat(flaws: FlawSet) -> (World, JobId) {
    let world = World::start_flawed(flaws);
    let (job, first) = world.start_one(1);
    let standby = world.connect("a-2", 1, vec![]);
    for step in 1..=10 {
        world.advance_ms(250);
        standby.heartbeat(step);
        if step == 3 || step == 10 {
            first.heartbeat(step);
        }
    }
    world.runtime.run_until_idle();
    let _back = world.connect("a-1", 1, declared(&job.id, 1));
    (world, job.id)
}

#[test]
fn no_heartbeat_grace_runs_a_job_twice() {
    let (clean, job) = one_late_heartbeat(FlawSet::none());
    assert_eq!(clean.job(&job).record.runs.len(), 1);
    assert_consistent(&clean.snapshot());
    let (flawed, job) = one_late_heartbeat(with(Flaw::NoHeartbeatGrace));
    let snapshot = flawed.snapshot();
    let live: Vec<_> = snapshot
        .agents
        .iter()
        .flat_map(|agent| {
            agent
                .runs
                .iter()
                .map(move |run| (agent.id.clone(), run.job.clone(), run.run))
        })
        .filter(|(_, run_job, _)| *run_job == job)
        .collect();
    assert_eq!(live.len(), 2, "two live runs of {job}: {live:?}");
}

fn submit_dropped_mid_commit(flaws: FlawSet) -> World {
    let world = World::start_with_commit_latency(Duration::from_millis(5), flaws);
    let submit = ClientRequest::Submit(submit_request(JobKind::Parallel));
    assert!(world.call_once("alice", submit).is_pending());
    world.advance_ms(10);
    world
}

#[test]
fn drop_unsafe_submit_leaves_an_orphan_queue_entry() {
    let clean = submit_dropped_mid_commit(FlawSet::none());
    assert_eq!(clean.snapshot().jobs.len(), 1);
    assert_consistent(&clean.snapshot());
    let flawed = submit_dropped_mid_commit(with(Flaw::DropUnsafeSubmit));
    let snapshot = flawed.snapshot();
    assert!(snapshot.jobs.is_empty(), "the job was never registered");
    let pool = snapshot
        .pools
        .iter()
        .find(|pool| pool.name == "user/alice")
        .expect("pool");
    assert_eq!(pool.holders.len(), 1);
    let orphan = &pool.holders[0].holder;
    assert_eq!(
        (orphan.job.0.as_str(), orphan.op),
        ("j-1", None),
        "belongs to no job"
    );
    assert_eq!(
        pool.free,
        pool.capacity - 1,
        "it holds a slot of alice's plan for good"
    );
}

fn cancel_between_runs(flaws: FlawSet) -> (World, JobId) {
    let world = World::start_flawed(flaws);
    let (job, first) = world.dispatch_one(2);
    first.close();
    world.runtime.run_until_idle();
    expect_job(world.cancel("alice", &job.id));
    let _second = world.connect("a-1", 2, vec![]);
    world.advance_ms(2_000);
    (world, job.id)
}

#[test]
fn cancel_hits_later_run_dispatches_after_the_acknowledged_cancel() {
    let (clean, job) = cancel_between_runs(FlawSet::none());
    assert_eq!(clean.job(&job).record.status, JobStatus::Canceled);
    assert_eq!(clean.job(&job).record.runs.len(), 1);
    assert_consistent(&clean.snapshot());
    let (flawed, job) = cancel_between_runs(with(Flaw::CancelHitsLaterRun));
    let record = flawed.job(&job).record;
    let canceled_at = record.cancel_requested_at.expect("cancel acknowledged");
    assert!(
        record
            .runs
            .iter()
            .any(|run| run.dispatched_at > canceled_at),
        "a run was dispatched after the cancel was acknowledged: {:?}",
        record.runs
    );
}

fn agent_connection_closes(flaws: FlawSet) -> (World, JobId) {
    let world = World::start_flawed(flaws);
    let (job, agent) = world.start_one(2);
    agent.close();
    world.advance_ms(30_000);
    (world, job.id)
}

#[test]
fn lost_agent_job_stays_running_forever() {
    let (clean, job) = agent_connection_closes(FlawSet::none());
    assert_eq!(clean.job(&job).record.status, JobStatus::Lost);
    assert_consistent(&clean.snapshot());
    let (flawed, job) = agent_connection_closes(with(Flaw::LostAgentJobStaysRunning));
    assert_eq!(flawed.job(&job).record.status, JobStatus::Running);
    assert_eq!(flawed.snapshot().agents[0].link, Link::Disconnected);
}

fn duplicated_finish(flaws: FlawSet) -> World {
    let world = World::start_flawed(flaws);
    let (job, agent) = world.dispatch_one(2);
    agent.started(&job.id, 1);
    agent.finished(&job.id, 1, killed_by(15), false);
    agent.finished(&job.id, 1, killed_by(15), false);
    world.runtime.run_until_idle();
    world
}

#[test]
fn double_free_on_duplicate_finish_breaks_pool_accounting() {
    let clean = duplicated_finish(FlawSet::none());
    assert_consistent(&clean.snapshot());
    let flawed = duplicated_finish(with(Flaw::DoubleFreeOnDuplicateFinish));
    let snapshot = flawed.snapshot();
    assert!(snapshot
        .pools
        .iter()
        .any(|pool| pool.held + pool.free != pool.capacity));
}

fn acknowledged_then_crash(flaws: FlawSet) -> (World, JobId) {
    let world = World::start_on_commit(flaws);
    let job = world.submit("alice", JobKind::Parallel);
    (world.restart_after_crash(), job.id)
}

#[test]
fn ack_before_commit_loses_an_acknowledged_job_in_a_crash() {
    let (clean, job) = acknowledged_then_crash(FlawSet::none());
    assert_eq!(clean.snapshot().jobs.len(), 1);
    assert_eq!(clean.job(&job).record.status, JobStatus::Pending);
    let (flawed, _) = acknowledged_then_crash(with(Flaw::AckBeforeCommit));
    assert!(
        flawed.snapshot().jobs.is_empty(),
        "the acknowledged job is gone"
    );
}

fn restart_with_a_running_job(flaws: FlawSet) -> (World, JobId) {
    let world = World::start_flawed(flaws);
    let (job, _agent) = world.start_one(1);
    let restarted = world.restart();
    let mut other = restarted.connect("a-2", 1, vec![]);
    other.runs();
    let _back = restarted.connect("a-1", 1, declared(&job.id, 1));
    (restarted, job.id)
}

#[test]
fn restart_requeues_running_jobs_backwards_and_twice() {
    let (clean, job) = restart_with_a_running_job(FlawSet::none());
    assert_eq!(clean.job(&job).record.status, JobStatus::Running);
    assert_consistent(&clean.snapshot());
    let (flawed, job) = restart_with_a_running_job(with(Flaw::RestartRequeuesRunning));
    assert!(has_illegal_transition(&flawed, &job), "Running -> Pending");
    let snapshot = flawed.snapshot();
    let live = snapshot
        .agents
        .iter()
        .flat_map(|agent| agent.runs.iter())
        .filter(|run| run.job == job)
        .count();
    assert_eq!(live, 2, "two live runs of one job");
}

#[test]
fn every_flaw_has_a_test_here() {
    assert_eq!(Flaw::ALL.len(), 11, "add a test above for each new flaw");
}
