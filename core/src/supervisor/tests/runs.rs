//! A job's run from dispatch to its end: completion, failure, the order in
//! which freed slots are handed on, reports that arrive out of order, and
//! the context op events are logged with.

use std::sync::{Arc, Mutex};

use super::{assert_consistent, config, exit_code, World};
use crate::protocol::{JobId, JobKind, JobStatus};
use crate::runtime::Runtime;
use crate::supervisor::JobSnapshot;

fn statuses(job: &JobSnapshot) -> Vec<JobStatus> {
    job.record.history.iter().map(|change| change.to).collect()
}

#[test]
fn a_job_runs_to_completion_and_returns_its_slots() {
    let world = World::start(config());
    let (job, agent) = world.dispatch_one(2);
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.id, JobId("j-1".into()));
    agent.started(&job.id, 1);
    world.runtime.run_until_idle();
    world.assert_status_and_consistency("alice", &job.id, JobStatus::Running);
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
    let (job, agent) = world.dispatch_one(1);
    agent.started(&job.id, 1);
    agent.finished(&job.id, 1, exit_code(3), false);
    world.runtime.run_until_idle();
    let view = world.status("alice", &job.id);
    assert_eq!(view.status, JobStatus::Failed);
    assert_eq!(view.exit.expect("exit").code, Some(3));
    assert_eq!(view.reason.as_deref(), Some("exited with code 3"));
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

#[test]
fn a_start_report_overtaken_by_the_end_report_leaves_no_phantom_run() {
    let world = World::start(config());
    let (job, mut agent) = world.dispatch_one(1);
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
    assert!(agent.kills().is_empty());
    let next = world.submit("alice", JobKind::Parallel);
    assert_eq!(agent.runs(), vec![(next.id, 1)]);
    assert_consistent(&world.snapshot());
}

#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

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
        world.start_one(1);
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
