//! [`assert_consistent`]: the invariants every snapshot of a correct
//! supervisor keeps.

use std::collections::BTreeMap;

use crate::job::is_legal_transition;
use crate::supervisor::Snapshot;

/// Invariants every snapshot must satisfy in a correct supervisor.
pub(in crate::supervisor) fn assert_consistent(snapshot: &Snapshot) {
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
    let mut live_runs = BTreeMap::new();
    for agent in &snapshot.agents {
        for run in &agent.runs {
            *live_runs.entry(run.job.clone()).or_insert(0) += 1;
        }
    }
    for (job, count) in live_runs {
        assert!(count <= 1, "job {job} has {count} live runs");
    }
}
