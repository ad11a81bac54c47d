//! Liveness after heal, durability and leaks.
//!
//! * **settled**: the supervisor is up and done recovering, every client
//!   script ended, every job is terminal, no op is live, every agent is
//!   connected, and no process runs. A run must settle within the liveness
//!   window after heal; otherwise the [`hang_report`] lists every live
//!   op with its situation, every job not ended, every agent, every live
//!   execution and every blocked task;
//! * **durability**: every job a client saw acknowledged is known to the
//!   supervisor (also right after each restart), and every status a client
//!   saw is in the job's history;
//! * **leaks**: once settled, no op task or max-run timer is left alive.

use std::fmt::Write as _;

use faultline_core::agents::Link;
use faultline_core::supervisor::Snapshot;
use faultline_sim::TaskInfo;

use super::Violation;
use crate::world::book::ClientBook;
use crate::world::launcher::ExecutionLedger;

/// Why the world has not settled yet.
pub fn unsettled(
    snapshot: Option<&Snapshot>,
    agents: usize,
    book: &ClientBook,
    ledger: &ExecutionLedger,
) -> Option<Violation> {
    let unsettled =
        |site: &str, message: String| Some(Violation::new("liveness", site.to_owned(), message));
    let Some(snapshot) = snapshot else {
        return unsettled(
            "supervisor-down",
            "the supervisor is not running".to_owned(),
        );
    };
    if snapshot.recovering_until.is_some() {
        return unsettled(
            "recovering",
            "the supervisor is still recovering".to_owned(),
        );
    }
    if let Some(job) = snapshot
        .jobs
        .iter()
        .find(|job| !job.record.status.is_terminal())
    {
        let record = &job.record;
        let site = if record.cancel_requested_at.is_some() {
            "canceled-job-not-ended"
        } else {
            "job-not-ended"
        };
        let situation = job.situation.as_deref().unwrap_or("no op acts for it");
        let message = format!("job {} is still {}: {situation}", record.id, record.status);
        return unsettled(site, message);
    }
    if let Some(op) = snapshot.ops.first() {
        let message = format!("op {} of job {} is live: {}", op.id, op.job, op.situation);
        return unsettled("op-live", message);
    }
    let connected = snapshot
        .agents
        .iter()
        .filter(|agent| agent.link == Link::Connected)
        .count();
    if connected < agents {
        let shown: Vec<String> = snapshot
            .agents
            .iter()
            .filter(|agent| agent.link != Link::Connected)
            .map(|agent| format!("{} {:?} since {}", agent.id, agent.link, agent.link_since))
            .collect();
        let message = format!(
            "{connected} of {agents} agents connected after heal ({})",
            shown.join(", ")
        );
        return unsettled("agent-not-connected", message);
    }
    if let Some(execution) = ledger.live().first() {
        let message = format!(
            "job {} run {} still executes on {} (since {})",
            execution.job, execution.run, execution.node, execution.started_at
        );
        return unsettled("execution-of-ended-job", message);
    }
    if !book.all_scripts_finished() {
        let message = format!("{} client script(s) still running", book.scripts_running());
        return unsettled("client-waiting", message);
    }
    None
}

/// Every acknowledged job is known to the supervisor.
pub fn check_acknowledged(snapshot: &Snapshot, book: &ClientBook) -> Result<(), Violation> {
    for (key, entry) in book.entries() {
        let Some(id) = &entry.id else {
            continue;
        };
        if !snapshot.jobs.iter().any(|job| job.record.id == *id) {
            return Err(Violation::new(
                "durability",
                "acknowledged-job-lost".to_owned(),
                format!("job {id} (key {key}) was acknowledged to {}, and the supervisor does not know it", entry.user),
            ));
        }
    }
    Ok(())
}

/// Every status a client saw is in its job's history, and a terminal
/// status a client saw is the job's.
pub fn check_observed(snapshot: &Snapshot, book: &ClientBook) -> Result<(), Violation> {
    for (key, entry) in book.entries() {
        let Some(id) = &entry.id else {
            continue;
        };
        let Some(job) = snapshot.jobs.iter().find(|job| job.record.id == *id) else {
            continue;
        };
        let record = &job.record;
        if let Some(status) = entry
            .seen
            .iter()
            .find(|status| !record.history.iter().any(|change| change.to == **status))
        {
            return Err(Violation::new(
                "client-history",
                "status-not-in-history".to_owned(),
                format!(
                    "a client saw job {id} (key {key}) {status}, which its history never records"
                ),
            ));
        }
        if let Some(terminal) = entry.terminal.filter(|terminal| *terminal != record.status) {
            return Err(Violation::new(
                "client-history",
                "terminal-changed".to_owned(),
                format!(
                    "a client saw job {id} end {terminal}; the supervisor says {}",
                    record.status
                ),
            ));
        }
    }
    Ok(())
}

/// Tasks that should have ended once the world settled.
pub fn check_leaks(tasks: &[TaskInfo]) -> Result<(), Violation> {
    const ENDED: [&str; 3] = ["run-op ", "max-run ", "process "];
    match tasks
        .iter()
        .find(|task| ENDED.iter().any(|prefix| task.name.starts_with(prefix)))
    {
        Some(task) => {
            let kind = task.name.split(' ').next().unwrap_or("task");
            Err(Violation::new(
                "task-leak",
                kind.to_owned(),
                format!("task {task} is alive though every job has ended"),
            ))
        }
        None => Ok(()),
    }
}

/// Everything live in the world, for a liveness failure.
pub fn hang_report(
    snapshot: Option<&Snapshot>,
    book: &ClientBook,
    ledger: &ExecutionLedger,
    tasks: &[TaskInfo],
) -> String {
    let mut report = String::new();
    let mut line = |text: String| {
        report.push_str(&text);
        report.push('\n');
    };
    match snapshot {
        None => line("supervisor: not running".to_owned()),
        Some(snapshot) => {
            line(format!("supervisor at {} (its clock)", snapshot.at));
            if let Some(until) = snapshot.recovering_until {
                line(format!("  recovering until {until}"));
            }
            line("jobs not ended:".to_owned());
            for job in snapshot
                .jobs
                .iter()
                .filter(|job| !job.record.status.is_terminal())
            {
                let record = &job.record;
                line(format!(
                    "  {} ({}, {}) {}: {}",
                    record.id,
                    record.owner,
                    record.kind,
                    record.status,
                    job.situation.as_deref().unwrap_or("no op")
                ));
            }
            line("live ops:".to_owned());
            for op in &snapshot.ops {
                line(format!(
                    "  op {} {} {}: {}",
                    op.id, op.job, op.phase, op.situation
                ));
            }
            line("agents:".to_owned());
            for agent in &snapshot.agents {
                let runs: Vec<String> = agent
                    .runs
                    .iter()
                    .map(|run| format!("{}#{}", run.job, run.run))
                    .collect();
                line(format!(
                    "  {} {:?} session {} last heard {} runs [{}]",
                    agent.id,
                    agent.link,
                    agent.session,
                    agent.last_heard,
                    runs.join(", ")
                ));
            }
        }
    }
    line("live executions:".to_owned());
    for execution in ledger.live() {
        line(format!(
            "  {}#{} on {} since {}",
            execution.job, execution.run, execution.node, execution.started_at
        ));
    }
    line(format!(
        "client scripts running: {}",
        book.scripts_running()
    ));
    line("tasks:".to_owned());
    let mut text = String::new();
    for task in tasks {
        let _ = writeln!(text, "  {task}");
    }
    report.push_str(&text);
    report
}
