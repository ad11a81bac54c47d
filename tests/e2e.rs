//! End to end on real tokio over loopback, with real processes: jobs run,
//! finish with their exit codes, are canceled and time out.

use crate::support::cluster::{eventually, process_gone, Cluster, Topology, ALICE, DEADLINE};

fn two_agents() -> Topology {
    Topology {
        sequential_slots: 2,
        parallel_slots: 6,
        agents: vec![("a-1", 4), ("a-2", 4)],
    }
}

#[test]
fn thirty_jobs_of_both_kinds_complete_with_their_exit_codes() {
    let cluster = Cluster::start("thirty", &two_agents());
    let jobs: Vec<(String, i64, &str)> = (0..30)
        .map(|n| {
            let code = i64::from(n % 4);
            let kind = if n % 3 == 0 { "sequential" } else { "parallel" };
            let script = format!("sleep 0.{}; echo job {n}; exit {code}", n % 3);
            let id = cluster.submit(ALICE, &["--kind", kind], &["sh", "-c", &script]);
            (id, code, kind)
        })
        .collect();
    let mut agents_used = std::collections::BTreeSet::new();
    for (n, (id, code, kind)) in jobs.iter().enumerate() {
        let job = cluster.wait_for_end(ALICE, id);
        let expected = if *code == 0 { "completed" } else { "failed" };
        assert_eq!(job["status"], expected, "job {n}: {job}");
        assert_eq!(job["kind"], *kind, "job {n}: {job}");
        assert_eq!(job["exit"]["code"], *code, "job {n}: {job}");
        let tail = job["exit"]["output_tail"].as_str().unwrap_or_default();
        assert!(tail.contains(&format!("job {n}")), "job {n} output: {job}");
        agents_used.insert(job["agent"].as_str().expect("an agent ran it").to_owned());
    }
    eventually("every slot to be free", DEADLINE, || {
        (cluster.pool_held("kind/parallel") == 0 && cluster.pool_held("kind/sequential") == 0)
            .then_some(())
    });
    assert!(!agents_used.is_empty());
}

#[test]
fn job_wait_exits_with_the_jobs_outcome() {
    let cluster = Cluster::start(
        "wait",
        &Topology {
            agents: vec![("a-1", 2)],
            ..two_agents()
        },
    );
    let good = cluster.submit(ALICE, &[], &["true"]);
    let bad = cluster.submit(ALICE, &[], &["sh", "-c", "exit 7"]);
    let waited = cluster.cli(ALICE, &["job", "wait", &good]);
    assert_eq!(
        waited.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(String::from_utf8_lossy(&waited.stdout).contains("completed"));
    let waited = cluster.cli(ALICE, &["job", "wait", &bad]);
    assert_eq!(waited.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&waited.stdout).contains("code 7"));
    let listed = cluster.cli(ALICE, &["job", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&good) && listed.contains(&bad), "{listed}");
}

#[test]
fn pending_and_running_jobs_are_canceled_and_the_process_is_really_gone() {
    let cluster = Cluster::start(
        "cancel",
        &Topology {
            sequential_slots: 1,
            ..two_agents()
        },
    );
    let command = cluster.pid_writing_sleep("running", 60);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let running = cluster.submit(ALICE, &["--kind", "sequential"], &command);
    cluster.wait_for_status(ALICE, &running, "running");
    let pid = cluster.wait_for_pid("running");
    assert!(!process_gone(pid));

    let pending = cluster.submit(ALICE, &["--kind", "sequential"], &["true"]);
    let job = cluster.job(ALICE, &pending);
    assert_eq!(
        job["status"], "pending",
        "the only sequential slot is taken: {job}"
    );

    let canceled = cluster.cli(ALICE, &["job", "cancel", &pending]);
    assert!(
        canceled.status.success(),
        "{}",
        String::from_utf8_lossy(&canceled.stderr)
    );
    let job = cluster.wait_for_end(ALICE, &pending);
    assert_eq!(job["status"], "canceled", "{job}");
    assert_eq!(
        job["attempts"], 0,
        "a canceled pending job never ran: {job}"
    );

    let canceled = cluster.cli(ALICE, &["job", "cancel", &running]);
    assert!(
        canceled.status.success(),
        "{}",
        String::from_utf8_lossy(&canceled.stderr)
    );
    let job = cluster.wait_for_end(ALICE, &running);
    assert_eq!(job["status"], "canceled", "{job}");
    eventually(&format!("process {pid} to be gone"), DEADLINE, || {
        process_gone(pid).then_some(())
    });
    eventually("the sequential slot to be free", DEADLINE, || {
        (cluster.pool_held("kind/sequential") == 0).then_some(())
    });
    let after = cluster.submit(ALICE, &["--kind", "sequential"], &["true"]);
    assert_eq!(cluster.wait_for_end(ALICE, &after)["status"], "completed");
}

#[test]
fn a_job_past_its_max_run_time_is_timed_out_and_stopped() {
    let cluster = Cluster::start(
        "timeout",
        &Topology {
            agents: vec![("a-1", 2)],
            ..two_agents()
        },
    );
    let command = cluster.pid_writing_sleep("slow", 60);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let id = cluster.submit(ALICE, &["--max-run", "1s"], &command);
    let pid = cluster.wait_for_pid("slow");
    let job = cluster.wait_for_end(ALICE, &id);
    assert_eq!(job["status"], "timed_out", "{job}");
    assert_eq!(job["max_run_ms"], 1000, "{job}");
    eventually(&format!("process {pid} to be gone"), DEADLINE, || {
        process_gone(pid).then_some(())
    });
}
