//! End to end: agents killed with SIGKILL, and agents that come back.

use crate::support::cluster::{
    eventually, process_gone, Cluster, Topology, ALICE, DEADLINE, HEARTBEAT_MS,
};

fn two_agents() -> Topology {
    Topology {
        sequential_slots: 2,
        parallel_slots: 4,
        agents: vec![("a-1", 2), ("a-2", 2)],
    }
}

/// Submit a long job and return its id, its agent and its process id.
fn long_job(cluster: &Cluster, name: &str) -> (String, String, u32) {
    let command = cluster.pid_writing_sleep(name, 60);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let id = cluster.submit(ALICE, &[], &command);
    let job = cluster.wait_for_status(ALICE, &id, "running");
    let pid = cluster.wait_for_pid(name);
    let agent = job["agent"]
        .as_str()
        .expect("a running job has an agent")
        .to_owned();
    (id, agent, pid)
}

#[test]
fn an_agent_killed_mid_job_loses_its_job_frees_its_slots_and_others_finish() {
    let mut cluster = Cluster::start("sigkill", &two_agents());
    let (id, agent, pid) = long_job(&cluster, "victim");
    let survivor = if agent == "a-1" { "a-2" } else { "a-1" };
    let started = std::time::Instant::now();
    cluster.kill_agent(&agent);

    let job = cluster.wait_for_end(ALICE, &id);
    assert_eq!(job["status"], "lost", "{job}");
    let window = std::time::Duration::from_millis(HEARTBEAT_MS * 5);
    assert!(
        started.elapsed() < window + DEADLINE / 4,
        "settled {:?} after the kill; heartbeat window {window:?}",
        started.elapsed()
    );
    eventually(
        &format!("the job's process {pid} to die with its agent"),
        DEADLINE,
        || process_gone(pid).then_some(()),
    );
    cluster.wait_for_agent_link(&agent, "lost");
    eventually("the lost job's slot to be free", DEADLINE, || {
        (cluster.pool_held("kind/parallel") == 0).then_some(())
    });

    let others: Vec<String> = (0..4)
        .map(|n| cluster.submit(ALICE, &[], &["sh", "-c", &format!("exit {n}")]))
        .collect();
    for (n, other) in others.iter().enumerate() {
        let job = cluster.wait_for_end(ALICE, other);
        assert_eq!(job["exit"]["code"], n, "{job}");
        assert_eq!(job["agent"], survivor, "{job}");
    }
}

#[test]
fn a_restarted_agent_reconnects_and_is_reconciled() {
    let mut cluster = Cluster::start("restart", &two_agents());
    let (id, agent, pid) = long_job(&cluster, "orphan");
    let session = cluster.agent(&agent).expect("agent listed")["session"]
        .as_u64()
        .expect("session");
    cluster.kill_agent(&agent);
    cluster.start_agent(&agent, 2);

    // Back within the heartbeat window, without the run it had: the
    // supervisor settles that run instead of waiting for it forever.
    eventually("the agent to reconnect on a new session", DEADLINE, || {
        cluster.agent(&agent).filter(|entry| {
            entry["link"] == "connected" && entry["session"].as_u64() > Some(session)
        })
    });
    let job = cluster.wait_for_end(ALICE, &id);
    assert_eq!(job["status"], "lost", "{job}");
    eventually(&format!("process {pid} to be gone"), DEADLINE, || {
        process_gone(pid).then_some(())
    });

    let jobs: Vec<String> = (0..6)
        .map(|_| cluster.submit(ALICE, &[], &["sleep", "0.2"]))
        .collect();
    let mut agents = std::collections::BTreeSet::new();
    for job in &jobs {
        let job = cluster.wait_for_end(ALICE, job);
        assert_eq!(job["status"], "completed", "{job}");
        agents.insert(job["agent"].as_str().expect("agent").to_owned());
    }
    assert_eq!(
        agents.len(),
        2,
        "four at once need both agents' two slots: {agents:?}"
    );
    eventually("every slot to be free", DEADLINE, || {
        (cluster.pool_held("kind/parallel") == 0).then_some(())
    });
}
