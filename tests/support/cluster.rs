//! A real supervisor and real agents on loopback, as child processes of the
//! test, with a temporary data directory. Dropping a [`Cluster`] kills every
//! process it started, so a failing test leaves nothing behind (and prints
//! the processes' logs to help explain the failure).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::faultline;

/// How long any expected event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Heartbeat interval of test clusters: short, so a killed agent is noticed
/// within about a second (five intervals).
pub const HEARTBEAT_MS: u64 = 200;

/// Header read timeout of test clusters: short, so a test can watch a
/// silent client being cut off.
pub const HEADER_READ_TIMEOUT_MS: u64 = 1_000;

/// Tokens of the test users.
pub const ALICE: &str = "alice-token-0123456789";
/// Bob: another ordinary user.
pub const BOB: &str = "bob-token-0123456789";
/// An admin, who sees everything in the overview.
pub const ADMIN: &str = "admin-token-0123456789";

/// Poll `check` every 50 ms until it returns `Some`, or fail after `deadline`.
pub fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            matches!(state, Some("Z" | "X"))
        }
    }
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory named after `name`.
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "faultline-e2e-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test directory");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shape of a test cluster.
pub struct Topology {
    /// Sequential slots across all agents.
    pub sequential_slots: u32,
    /// Parallel slots across all agents.
    pub parallel_slots: u32,
    /// Agents to start: id and slots.
    pub agents: Vec<(&'static str, u32)>,
}

/// A supervisor and its agents.
pub struct Cluster {
    /// The supervisor's URL.
    pub url: String,
    supervisor: Child,
    agents: BTreeMap<String, Child>,
    dir: TempDir,
}

/// Start `faultline serve` with `args` (plus `--data` in `dir`), wait for it
/// to print its URL, and return it with the URL. Stderr goes to `serve.log`.
pub fn spawn_serve(dir: &TempDir, args: &[&str]) -> (Child, String) {
    let log = std::fs::File::create(dir.path().join("serve.log")).expect("create serve.log");
    let mut child = faultline()
        .arg("serve")
        .args(args)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env_remove("FAULTLINE_URL")
        .env_remove("FAULTLINE_TOKEN")
        .env("FAULTLINE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start faultline serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    let url = loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let line = received.recv_timeout(left).unwrap_or_else(|_| {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
            panic!("faultline serve printed no URL within {DEADLINE:?}; its log:\n{log}")
        });
        if let Some(url) = line.strip_prefix("faultline supervisor listening on ") {
            break url.trim().to_owned();
        }
    };
    (child, url)
}

impl Cluster {
    /// Start a supervisor with the test users and agents of `topology`,
    /// start those agents, and wait until every one is connected.
    pub fn start(name: &str, topology: &Topology) -> Cluster {
        let dir = TempDir::new(name);
        let config = dir.path().join("faultline.toml");
        std::fs::write(&config, config_text(topology)).expect("write the config");
        let config = config.to_str().expect("UTF-8 path").to_owned();
        let (supervisor, url) =
            spawn_serve(&dir, &["--config", &config, "--listen", "127.0.0.1:0"]);
        let mut cluster = Cluster {
            url,
            supervisor,
            agents: BTreeMap::new(),
            dir,
        };
        for (id, slots) in &topology.agents {
            cluster.start_agent(id, *slots);
        }
        for (id, _) in &topology.agents {
            cluster.wait_for_agent_link(id, "connected");
        }
        cluster
    }

    /// `host:port` of the supervisor.
    pub fn addr(&self) -> &str {
        self.url.strip_prefix("http://").expect("an http URL")
    }

    /// Start (or restart) agent `id` with its configured token.
    pub fn start_agent(&mut self, id: &str, slots: u32) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("agent-{id}.log")))
            .expect("open the agent's log");
        let child = faultline()
            .args([
                "agent",
                "--supervisor",
                &self.url,
                "--id",
                id,
                "--slots",
                &slots.to_string(),
            ])
            .env("FAULTLINE_AGENT_TOKEN", agent_token(id))
            .env("FAULTLINE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start faultline agent");
        if let Some(mut old) = self.agents.insert(id.to_owned(), child) {
            let _ = old.kill();
            let _ = old.wait();
        }
    }

    /// SIGKILL agent `id` and reap it.
    pub fn kill_agent(&mut self, id: &str) {
        let mut child = self.agents.remove(id).expect("a running agent");
        child.kill().expect("SIGKILL the agent");
        child.wait().expect("reap the agent");
    }

    /// Run `faultline` with `FAULTLINE_URL` and `FAULTLINE_TOKEN` set.
    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        faultline()
            .args(args)
            .env("FAULTLINE_URL", &self.url)
            .env("FAULTLINE_TOKEN", token)
            .env("FAULTLINE_DATA", self.dir.path().join("no-local-data"))
            .output()
            .expect("run faultline")
    }

    /// Submit a job as `token`'s user; its id.
    pub fn submit(&self, token: &str, options: &[&str], command: &[&str]) -> String {
        submit_with(|args| self.cli(token, args), options, command)
    }

    /// A job as `token`'s user sees it (`job status --json`).
    pub fn job(&self, token: &str, id: &str) -> Value {
        job_with(|args| self.cli(token, args), id)
    }

    /// Wait until job `id` has `status`; the job then.
    pub fn wait_for_status(&self, token: &str, id: &str, status: &str) -> Value {
        eventually(&format!("job {id} to be {status}"), DEADLINE, || {
            let job = self.job(token, id);
            if job["status"] == status {
                return Some(job);
            }
            let terminal = !matches!(job["status"].as_str(), Some("pending" | "running"));
            assert!(
                !terminal,
                "job {id} ended {} while waiting for {status}: {job}",
                job["status"]
            );
            None
        })
    }

    /// Wait until job `id` is terminal; the job then.
    pub fn wait_for_end(&self, token: &str, id: &str) -> Value {
        eventually(&format!("job {id} to end"), DEADLINE, || {
            let job = self.job(token, id);
            (!matches!(job["status"].as_str(), Some("pending" | "running"))).then_some(job)
        })
    }

    /// The admin's overview (`status --json`).
    pub fn overview(&self) -> Value {
        let output = self.cli(ADMIN, &["status", "--json"]);
        assert!(
            output.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("overview JSON")
    }

    /// An agent's entry in the overview.
    pub fn agent(&self, id: &str) -> Option<Value> {
        let overview = self.overview();
        overview["agents"]
            .as_array()?
            .iter()
            .find(|agent| agent["id"] == id)
            .cloned()
    }

    /// Wait until agent `id` has `link` (`connected`, `lost`, …); its entry.
    pub fn wait_for_agent_link(&self, id: &str, link: &str) -> Value {
        eventually(&format!("agent {id} to be {link}"), DEADLINE, || {
            self.agent(id).filter(|agent| agent["link"] == link)
        })
    }

    /// A pool's `held` count in the overview.
    pub fn pool_held(&self, name: &str) -> u64 {
        let overview = self.overview();
        let pools = overview["pools"].as_array().expect("pools");
        let pool = pools
            .iter()
            .find(|pool| pool["name"] == name)
            .unwrap_or_else(|| panic!("no pool {name}"));
        pool["held"].as_u64().expect("held count")
    }

    /// A command that writes its shell's pid to `name.pid` in the test
    /// directory, then becomes `sleep seconds`.
    pub fn pid_writing_sleep(&self, name: &str, seconds: u32) -> Vec<String> {
        let file = self.dir.path().join(format!("{name}.pid"));
        let script = format!(
            "echo $$ > {}.tmp && mv {0}.tmp {0} && exec sleep {seconds}",
            file.display()
        );
        vec!["sh".into(), "-c".into(), script]
    }

    /// The pid written by [`Cluster::pid_writing_sleep`], once it exists.
    pub fn wait_for_pid(&self, name: &str) -> u32 {
        let file = self.dir.path().join(format!("{name}.pid"));
        eventually(&format!("{} to exist", file.display()), DEADLINE, || {
            std::fs::read_to_string(&file).ok()?.trim().parse().ok()
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.agents.values_mut().chain([&mut self.supervisor]) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            print_logs(self.dir.path());
        }
    }
}

/// Print every `*.log` of the test directory (their last 80 lines).
pub fn print_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|extension| extension == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "---- {} (last {} lines)\n{}",
                path.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// `job submit OPTIONS -- COMMAND` through `cli`; the acknowledged id.
pub fn submit_with(cli: impl Fn(&[&str]) -> Output, options: &[&str], command: &[&str]) -> String {
    let mut args = vec!["job", "submit"];
    args.extend_from_slice(options);
    args.push("--");
    args.extend_from_slice(command);
    let output = cli(&args);
    assert!(
        output.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

/// `job status ID --json` through `cli`, parsed.
pub fn job_with(cli: impl Fn(&[&str]) -> Output, id: &str) -> Value {
    let output = cli(&["job", "status", id, "--json"]);
    assert!(
        output.status.success(),
        "status of {id} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("job JSON")
}

/// Agent `id`'s token in the test config.
pub fn agent_token(id: &str) -> String {
    format!("agent-token-{id}-0123456789")
}

fn config_text(topology: &Topology) -> String {
    let mut text = format!(
        "[server]\n\
         header_read_timeout = \"{HEADER_READ_TIMEOUT_MS}ms\"\n\n\
         [supervisor]\n\
         heartbeat_interval = \"{HEARTBEAT_MS}ms\"\n\
         heartbeat_grace_intervals = 5\n\
         agent_reply_timeout = \"2s\"\n\
         agent_start_timeout = \"5s\"\n\
         agent_hello_timeout = \"2s\"\n\
         recovery_grace = \"2s\"\n\
         pools = {{ sequential = {}, parallel = {} }}\n\n\
         [supervisor.plans.default]\n\
         max_running = 16\n\
         max_pending = 100\n\n\
         [supervisor.users.alice]\ntoken = \"{ALICE}\"\n\n\
         [supervisor.users.bob]\ntoken = \"{BOB}\"\n\n\
         [supervisor.users.admin]\ntoken = \"{ADMIN}\"\nrole = \"admin\"\n",
        topology.sequential_slots, topology.parallel_slots
    );
    for (id, _) in &topology.agents {
        text.push_str(&format!(
            "\n[supervisor.agents.{id}]\ntoken = \"{}\"\n",
            agent_token(id)
        ));
    }
    text
}
