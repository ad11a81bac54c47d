//! End to end on loopback: a supervisor with two agents running twenty jobs
//! is killed (SIGKILL) or stopped (SIGTERM) mid-run and started again on the
//! same data directory and port. Every acknowledged job is still there,
//! the runs that were out there are adopted and complete, and no job runs
//! twice: each job appends one line to its own file, and each file ends with
//! exactly one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::store_cluster::{Restartable, SHUTDOWN_TIMEOUT};
use crate::support::cluster::eventually;

const AGENTS: [(&str, u32); 2] = [("a-1", 4), ("a-2", 4)];
const JOBS: u32 = 20;

/// How long the twenty jobs may take once the supervisor is back.
const FINISH_DEADLINE: Duration = Duration::from_secs(40);

/// Job `n`'s command: append a line to `runs/<n>`, then sleep 1 to 3 s.
fn script(cluster: &Restartable, n: u32) -> String {
    let file = cluster.dir().join("runs").join(n.to_string());
    format!("echo ran >> {}; sleep {}", file.display(), 1 + n % 3)
}

/// Submit the twenty jobs (keys `job-<n>`); the acknowledged ids, by `n`.
fn submit_jobs(cluster: &Restartable) -> BTreeMap<u32, String> {
    std::fs::create_dir_all(cluster.dir().join("runs")).expect("create runs/");
    (0..JOBS)
        .map(|n| {
            let key = format!("job-{n}");
            let script = script(cluster, n);
            let id = cluster.submit(&["--idempotency-key", &key], &["sh", "-c", &script]);
            (n, id)
        })
        .collect()
}

/// The ids of the jobs running now, with their agents.
fn running(cluster: &Restartable, ids: &BTreeMap<u32, String>) -> BTreeMap<String, Value> {
    ids.values()
        .filter_map(|id| {
            let job = cluster.job(id);
            (job["status"] == "running").then(|| (id.clone(), job))
        })
        .collect()
}

/// Wait until at least `count` jobs run; those jobs.
fn wait_for_running(
    cluster: &Restartable,
    ids: &BTreeMap<u32, String>,
    count: usize,
) -> BTreeMap<String, Value> {
    eventually(&format!("{count} jobs to run"), FINISH_DEADLINE, || {
        let running = running(cluster, ids);
        (running.len() >= count).then_some(running)
    })
}

/// Lines in job `n`'s file (how many times it ran).
fn runs_of(dir: &Path, n: u32) -> usize {
    std::fs::read_to_string(dir.join("runs").join(n.to_string()))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// After the restart: every acknowledged job is known, ends `completed`
/// having run exactly once; the jobs running at the stop kept their run.
fn check_after_restart(
    cluster: &Restartable,
    ids: &BTreeMap<u32, String>,
    running_at_stop: &BTreeMap<String, Value>,
) {
    for (n, id) in ids {
        let job = eventually(&format!("job {id} to end"), FINISH_DEADLINE, || {
            let job = cluster.job(id);
            (!matches!(job["status"].as_str(), Some("pending" | "running"))).then_some(job)
        });
        assert_eq!(job["status"], "completed", "job {n}: {job}");
        assert_eq!(runs_of(cluster.dir(), *n), 1, "job {n} ran once: {job}");
    }
    for (id, before) in running_at_stop {
        let after = cluster.job(id);
        assert_eq!(
            after["attempts"], 1,
            "{id} was adopted, not run again: {after}"
        );
        assert_eq!(
            after["agent"], before["agent"],
            "{id} finished where it ran"
        );
    }
    let again = cluster.submit(
        &["--idempotency-key", "job-0"],
        &["sh", "-c", &script(cluster, 0)],
    );
    assert_eq!(again, ids[&0], "a retried submit returns the first job");
}

#[test]
fn a_supervisor_killed_mid_run_restarts_adopts_its_running_jobs_and_loses_none() {
    let mut cluster = Restartable::start("restart-sigkill", &AGENTS, 8);
    cluster.wait_for_agents(&["a-1", "a-2"]);
    let ids = submit_jobs(&cluster);
    let running_at_stop = wait_for_running(&cluster, &ids, 4);
    cluster.kill_supervisor();

    cluster.start_supervisor();
    cluster.wait_for_agents(&["a-1", "a-2"]);
    check_after_restart(&cluster, &ids, &running_at_stop);
}

#[test]
fn a_supervisor_stopped_by_sigterm_exits_cleanly_in_time_and_the_restart_adopts() {
    let mut cluster = Restartable::start("restart-sigterm", &AGENTS, 8);
    cluster.wait_for_agents(&["a-1", "a-2"]);
    let ids = submit_jobs(&cluster);
    let running_at_stop = wait_for_running(&cluster, &ids, 4);
    let (status, took) = cluster.terminate_supervisor();
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
    assert!(
        took <= SHUTDOWN_TIMEOUT,
        "stopped in {took:?}, beyond the shutdown timeout {SHUTDOWN_TIMEOUT:?}"
    );
    let log = std::fs::read_to_string(cluster.dir().join("serve.log")).unwrap_or_default();
    assert!(
        log.contains("job store closed"),
        "the store was closed: {log}"
    );

    cluster.start_supervisor();
    cluster.wait_for_agents(&["a-1", "a-2"]);
    check_after_restart(&cluster, &ids, &running_at_stop);
}
