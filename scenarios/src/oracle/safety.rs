//! Safety oracles on one supervisor snapshot: what must hold after every
//! step, whatever the faults.
//!
//! * slot accounting: `held + free == capacity` in every pool; every holder
//!   and waiter names a known, non-terminal job and a live op;
//! * no op is used after it was destroyed;
//! * every step of every job's status history is legal (terminal is
//!   final); at most one open run per job; a terminal job has no op and no
//!   armed max-run timer;
//! * no run is dispatched after the job's cancel was acknowledged;
//! * at most one run of a job is listed live across all agents;
//! * the agent monitor: an agent silent past the heartbeat grace is
//!   declared lost within two more intervals, and recovery after a restart
//!   ends on time (checked only while the supervisor has run undisturbed,
//!   without a stall, skew or restart, for that long).

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_core::agents::Link;
use faultline_core::job::is_legal_transition;
use faultline_core::protocol::JobId;
use faultline_core::supervisor::{JobSnapshot, Snapshot};

use super::Violation;

/// What the snapshot checks need besides the snapshot.
#[derive(Clone, Copy, Debug)]
pub struct SafetyContext {
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Heartbeat interval × grace intervals.
    pub heartbeat_silence: Duration,
    /// Whether the supervisor ran undisturbed long enough for the monitor
    /// check to apply.
    pub monitor_settled: bool,
}

impl SafetyContext {
    /// How long an agent may stay silent and not lost.
    pub fn silence_limit(&self) -> Duration {
        self.heartbeat_silence + self.heartbeat_interval * 2 + Duration::from_millis(100)
    }
}

/// Every safety check on `snapshot`; the first violation.
pub fn check_snapshot(snapshot: &Snapshot, context: &SafetyContext) -> Result<(), Violation> {
    check_pools(snapshot)?;
    check_destroyed_ops(snapshot)?;
    check_jobs(snapshot)?;
    check_agent_runs(snapshot)?;
    if context.monitor_settled {
        check_monitor(snapshot, context)?;
    }
    Ok(())
}

fn find_job<'a>(snapshot: &'a Snapshot, id: &JobId) -> Option<&'a JobSnapshot> {
    let seq: Option<u64> = id.0.strip_prefix("j-").and_then(|seq| seq.parse().ok());
    match seq {
        Some(seq) => snapshot
            .jobs
            .binary_search_by_key(&seq, |job| job.record.seq)
            .ok()
            .map(|index| &snapshot.jobs[index]),
        None => snapshot.jobs.iter().find(|job| job.record.id == *id),
    }
}

fn check_pools(snapshot: &Snapshot) -> Result<(), Violation> {
    for pool in &snapshot.pools {
        let family = pool.name.split('/').next().unwrap_or("pool");
        if pool.held + pool.free != pool.capacity {
            return Err(Violation::new(
                "slot-accounting",
                format!("{family}-pool"),
                format!(
                    "pool {}: held {} + free {} != capacity {}",
                    pool.name, pool.held, pool.free, pool.capacity
                ),
            ));
        }
        for entry in pool.holders.iter().chain(&pool.waiters) {
            let holder = &entry.holder;
            let role = if pool.holders.contains(entry) {
                "holder"
            } else {
                "waiter"
            };
            let problem = match find_job(snapshot, &holder.job) {
                None => Some(("unknown-job", "belongs to no job".to_owned())),
                Some(job) if job.record.status.is_terminal() => Some((
                    "terminal-job",
                    format!("belongs to a job that is {}", job.record.status),
                )),
                Some(_) => match holder.op {
                    Some(op) if snapshot.ops.iter().any(|live| live.id == op) => None,
                    Some(op) => Some(("dead-op", format!("names op {op}, which is not live"))),
                    None => Some(("dead-op", "names no op".to_owned())),
                },
            };
            if let Some((site, problem)) = problem {
                return Err(Violation::new(
                    "slot-holder",
                    format!("{family}-pool-{role}-of-{site}"),
                    format!(
                        "pool {}: {role} {} ({}) {problem}",
                        pool.name, holder.label, holder.job
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_destroyed_ops(snapshot: &Snapshot) -> Result<(), Violation> {
    match snapshot
        .destroyed_ops
        .iter()
        .find(|op| op.uses_after_destroy > 0)
    {
        Some(op) => {
            let last = op
                .history
                .last()
                .map(|step| step.note.as_str())
                .unwrap_or("");
            Err(Violation::new(
                "use-after-destroy",
                "op".to_owned(),
                format!(
                    "op {} of job {} was used {} time(s) after it was destroyed ({last})",
                    op.id, op.job, op.uses_after_destroy
                ),
            ))
        }
        None => Ok(()),
    }
}

fn check_jobs(snapshot: &Snapshot) -> Result<(), Violation> {
    for job in &snapshot.jobs {
        let record = &job.record;
        for change in record.history.iter().skip(1) {
            let from = change.from.unwrap_or(change.to);
            if !is_legal_transition(from, change.to) {
                return Err(Violation::new(
                    "status-transition",
                    format!("{from}->{}", change.to),
                    format!(
                        "job {}: {from} -> {} at {} ({})",
                        record.id, change.to, change.at, change.reason
                    ),
                ));
            }
        }
        let open = record.runs.iter().filter(|run| run.is_open()).count();
        if open > 1 {
            return Err(Violation::new(
                "open-runs",
                "job".to_owned(),
                format!("job {} has {open} open runs", record.id),
            ));
        }
        if record.status.is_terminal() {
            if let Some(op) = job.op {
                let message = format!(
                    "job {} is {} but op {op} acts for it",
                    record.id, record.status
                );
                return Err(Violation::new("terminal-job", "op".to_owned(), message));
            }
            if let Some(run) = job.max_run_timer {
                let message = format!(
                    "job {} is {} but the max-run timer of run {run} is armed",
                    record.id, record.status
                );
                return Err(Violation::new(
                    "terminal-job",
                    "max-run-timer".to_owned(),
                    message,
                ));
            }
        }
        if let Some(canceled_at) = record.cancel_requested_at {
            if let Some(run) = record
                .runs
                .iter()
                .find(|run| run.dispatched_at > canceled_at)
            {
                return Err(Violation::new(
                    "cancel",
                    "run-after-cancel".to_owned(),
                    format!(
                        "job {}: run {} dispatched at {} after the cancel acknowledged at {canceled_at}",
                        record.id, run.run, run.dispatched_at
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_agent_runs(snapshot: &Snapshot) -> Result<(), Violation> {
    let mut live: BTreeMap<&JobId, Vec<String>> = BTreeMap::new();
    for agent in &snapshot.agents {
        for run in &agent.runs {
            live.entry(&run.job)
                .or_default()
                .push(format!("run {} on {}", run.run, agent.id));
        }
    }
    match live.into_iter().find(|(_, runs)| runs.len() > 1) {
        Some((job, runs)) => Err(Violation::new(
            "live-runs",
            "agents".to_owned(),
            format!(
                "job {job} has {} live runs: {}",
                runs.len(),
                runs.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn check_monitor(snapshot: &Snapshot, context: &SafetyContext) -> Result<(), Violation> {
    if let Some(until) = snapshot.recovering_until {
        let overrun = snapshot.at.saturating_duration_since(until);
        if overrun > context.heartbeat_interval * 2 {
            return Err(Violation::new(
                "recovery",
                "overran".to_owned(),
                format!(
                    "recovery should have ended at {until}; still recovering at {}",
                    snapshot.at
                ),
            ));
        }
    }
    let limit = context.silence_limit();
    for agent in &snapshot.agents {
        if agent.link == Link::Lost {
            continue;
        }
        let silent = snapshot.at.saturating_duration_since(agent.last_heard);
        if silent > limit {
            return Err(Violation::new(
                "agent-monitor",
                "silent-agent-not-lost".to_owned(),
                format!(
                    "agent {} ({:?}) silent for {:.3}s, past the grace of {:.3}s, is not declared lost",
                    agent.id,
                    agent.link,
                    silent.as_secs_f64(),
                    context.heartbeat_silence.as_secs_f64()
                ),
            ));
        }
    }
    Ok(())
}
