//! A supervisor that the durability tests kill (SIGKILL) or stop (SIGTERM)
//! and start again on the same data directory and port, with agents that
//! outlive it. Dropping a [`Restartable`] kills every process it started
//! and, if the test failed, prints their logs.

use std::path::Path;
use std::process::{Child, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cluster::{
    agent_token, eventually, job_with, print_logs, spawn_serve, submit_with, TempDir, ADMIN, ALICE,
    DEADLINE,
};
use crate::support::faultline;

/// The graceful stop bound given to `serve` in these tests.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The configuration: short heartbeats, and a recovery grace long enough
/// for agents to come back to a restarted supervisor.
fn config_text(agents: &[(&str, u32)], slots: u32) -> String {
    let mut text = format!(
        "[supervisor]\n\
         heartbeat_interval = \"200ms\"\n\
         heartbeat_grace_intervals = 5\n\
         agent_reply_timeout = \"2s\"\n\
         agent_start_timeout = \"5s\"\n\
         agent_hello_timeout = \"2s\"\n\
         recovery_grace = \"20s\"\n\
         pools = {{ sequential = {slots}, parallel = {slots} }}\n\n\
         [supervisor.plans.default]\n\
         max_running = {slots}\n\
         max_pending = 100\n\n\
         [supervisor.users.alice]\ntoken = \"{ALICE}\"\n\n\
         [supervisor.users.admin]\ntoken = \"{ADMIN}\"\nrole = \"admin\"\n"
    );
    for (id, _) in agents {
        text.push_str(&format!(
            "\n[supervisor.agents.{id}]\ntoken = \"{}\"\n",
            agent_token(id)
        ));
    }
    text
}

/// A supervisor, its data directory and port, and its agents.
pub struct Restartable {
    dir: TempDir,
    config: String,
    /// `127.0.0.1:PORT`, fixed by the first start.
    listen: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    supervisor: Option<Child>,
    agents: Vec<Child>,
    starts: u32,
}

impl Restartable {
    /// Start a supervisor (no agents yet) whose pools hold `slots` each.
    pub fn start(name: &str, agents: &[(&str, u32)], slots: u32) -> Restartable {
        let dir = TempDir::new(name);
        let config = dir.path().join("faultline.toml");
        std::fs::write(&config, config_text(agents, slots)).expect("write the config");
        let config = config.to_str().expect("UTF-8 path").to_owned();
        let mut cluster = Restartable {
            dir,
            config,
            listen: "127.0.0.1:0".into(),
            url: String::new(),
            supervisor: None,
            agents: Vec::new(),
            starts: 0,
        };
        cluster.start_supervisor();
        cluster.listen = cluster
            .url
            .strip_prefix("http://")
            .expect("an http URL")
            .to_owned();
        for (id, slots) in agents {
            cluster.start_agent(id, *slots);
        }
        cluster
    }

    /// The test's directory (the data directory is `data/` in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Start the supervisor on the same data directory and port.
    pub fn start_supervisor(&mut self) {
        assert!(
            self.supervisor.is_none(),
            "the supervisor is already running"
        );
        let log = self.dir.path().join("serve.log");
        if log.exists() {
            let kept = self.dir.path().join(format!("serve-{}.log", self.starts));
            std::fs::rename(&log, kept).expect("keep the previous supervisor's log");
        }
        let timeout = format!("{}s", SHUTDOWN_TIMEOUT.as_secs());
        let args = [
            "--config",
            &self.config,
            "--listen",
            &self.listen,
            "--shutdown-timeout",
            &timeout,
        ];
        let (child, url) = spawn_serve(&self.dir, &args);
        assert!(
            self.url.is_empty() || self.url == url,
            "restarted on {url}, not {}",
            self.url
        );
        self.url = url;
        self.supervisor = Some(child);
        self.starts += 1;
    }

    /// SIGKILL the supervisor and reap it.
    pub fn kill_supervisor(&mut self) {
        let mut child = self.supervisor.take().expect("a running supervisor");
        child.kill().expect("SIGKILL the supervisor");
        child.wait().expect("reap the supervisor");
    }

    /// SIGTERM the supervisor; its exit status and how long it took.
    pub fn terminate_supervisor(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.supervisor.take().expect("a running supervisor");
        let started = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let bound = SHUTDOWN_TIMEOUT + Duration::from_secs(5);
        let status = eventually("the supervisor to exit after SIGTERM", bound, || {
            child.try_wait().expect("try_wait")
        });
        (status, started.elapsed())
    }

    /// Start agent `id` with `slots` slots, connecting to the supervisor's
    /// URL (it reconnects there across restarts).
    pub fn start_agent(&mut self, id: &str, slots: u32) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("agent-{id}.log")))
            .expect("open the agent's log");
        let child = faultline()
            .args(["agent", "--supervisor", &self.url, "--id", id])
            .args(["--slots", &slots.to_string()])
            .env("FAULTLINE_AGENT_TOKEN", agent_token(id))
            .env("FAULTLINE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start faultline agent");
        self.agents.push(child);
    }

    /// Run `faultline` as alice against the supervisor.
    pub fn cli(&self, args: &[&str]) -> Output {
        faultline()
            .args(args)
            .env("FAULTLINE_URL", &self.url)
            .env("FAULTLINE_TOKEN", ALICE)
            .env("FAULTLINE_DATA", self.dir.path().join("no-local-data"))
            .output()
            .expect("run faultline")
    }

    /// Submit `command` (with `options`) as alice; the acknowledged id.
    pub fn submit(&self, options: &[&str], command: &[&str]) -> String {
        submit_with(|args| self.cli(args), options, command)
    }

    /// Job `id` as alice sees it.
    pub fn job(&self, id: &str) -> Value {
        job_with(|args| self.cli(args), id)
    }

    /// Wait until every agent in `ids` is connected.
    pub fn wait_for_agents(&self, ids: &[&str]) {
        eventually("the agents to connect", DEADLINE, || {
            let output = faultline()
                .args(["status", "--json"])
                .env("FAULTLINE_URL", &self.url)
                .env("FAULTLINE_TOKEN", ADMIN)
                .env("FAULTLINE_DATA", self.dir.path().join("no-local-data"))
                .output()
                .expect("run faultline");
            let overview: Value = serde_json::from_slice(&output.stdout).ok()?;
            let agents = overview["agents"].as_array()?;
            ids.iter()
                .all(|id| {
                    agents
                        .iter()
                        .any(|agent| agent["id"] == *id && agent["link"] == "connected")
                })
                .then_some(())
        });
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        for child in self.agents.iter_mut().chain(self.supervisor.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            print_logs(self.dir.path());
        }
    }
}
