//! [`ProcessLauncher`]: the [`Launcher`] trait on real processes (Linux).
//!
//! Each job runs in its own process group, so that a kill reaches every
//! process the job started, and with the parent-death signal set, so that
//! the job's main process dies with the agent. One monitor task per process
//! waits for its end, escalates a kill from SIGTERM to SIGKILL after a
//! grace period, ends whatever the job left behind in its group, and
//! publishes the exit with the last [`OUTPUT_TAIL_BYTES`] of stdout and
//! stderr, interleaved as they were read.

mod output;

use std::io;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_core::runtime::{BoxFuture, LaunchError, LaunchSpec, Launcher, Process, ProcessExit};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use output::OutputTail;

/// How much of a process's output its exit keeps: the last 4 KiB.
pub const OUTPUT_TAIL_BYTES: usize = 4 * 1024;

/// How long a killed process may take to end after SIGTERM before it gets
/// SIGKILL, unless configured otherwise.
pub const KILL_GRACE_DEFAULT: Duration = Duration::from_secs(5);

/// After the main process ended, how long to wait for the rest of its output.
const OUTPUT_DRAIN_MAX: Duration = Duration::from_secs(1);

/// Starts jobs as child processes of this process. Must be used inside a
/// tokio runtime with the process and time drivers enabled.
///
/// The parent-death signal is tied to the *thread* that spawns the child:
/// start processes from tokio worker threads (which live as long as the
/// runtime), never from short-lived threads such as `spawn_blocking`.
#[derive(Clone, Debug)]
pub struct ProcessLauncher {
    kill_grace: Duration,
}

impl ProcessLauncher {
    /// A launcher with the default kill grace ([`KILL_GRACE_DEFAULT`]).
    pub fn new() -> ProcessLauncher {
        ProcessLauncher::with_kill_grace(KILL_GRACE_DEFAULT)
    }

    /// A launcher whose kills send SIGTERM, then SIGKILL after `kill_grace`
    /// (at once if zero).
    pub fn with_kill_grace(kill_grace: Duration) -> ProcessLauncher {
        ProcessLauncher { kill_grace }
    }
}

impl Default for ProcessLauncher {
    fn default() -> ProcessLauncher {
        ProcessLauncher::new()
    }
}

impl Launcher for ProcessLauncher {
    fn start(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Arc<dyn Process>, LaunchError>> {
        let kill_grace = self.kill_grace;
        Box::pin(async move {
            let process = start_process(&spec, kill_grace)?;
            tracing::debug!(job = %spec.job_id, run = spec.run_id, pid = process.pid, "process started");
            Ok(process as Arc<dyn Process>)
        })
    }
}

fn start_process(
    spec: &LaunchSpec,
    kill_grace: Duration,
) -> Result<Arc<ChildProcess>, LaunchError> {
    let cannot_start = |reason: String| LaunchError::CannotStart {
        command: spec.command.clone(),
        reason,
    };
    let Some((program, arguments)) = spec.command.split_first() else {
        return Err(cannot_start("empty command".to_owned()));
    };
    let mut command = Command::new(program);
    command
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    set_parent_death_signal(&mut command);
    let mut child = command
        .spawn()
        .map_err(|error| cannot_start(describe_spawn_error(program, &error)))?;
    let pid = child
        .id()
        .expect("a child that was just spawned and not waited for has a pid");
    let tail = Arc::new(Mutex::new(OutputTail::new(OUTPUT_TAIL_BYTES)));
    let readers = [
        child
            .stdout
            .take()
            .map(|pipe| tokio::spawn(capture(pipe, Arc::clone(&tail)))),
        child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(capture(pipe, Arc::clone(&tail)))),
    ];
    let (exit_sender, exit) = watch::channel(None);
    let (kill_sender, kill_requested) = watch::channel(KillRequest::NotRequested);
    let monitor = Monitor {
        child,
        pid,
        kill_grace,
        tail,
        readers,
    };
    tokio::spawn(monitor.run(kill_requested, exit_sender));
    Ok(Arc::new(ChildProcess {
        pid,
        kill_grace,
        exit,
        kill: kill_sender,
    }))
}

/// Ask the kernel to SIGKILL the child when the thread that forked it ends
/// (with the agent, in practice), so that no job outlives its agent.
#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command) {
    let parent = libc::pid_t::try_from(std::process::id()).expect("pids fit in pid_t");
    // SAFETY: the closure runs in the forked child between fork and exec,
    // where only async-signal-safe operations are sound. It only makes two
    // system calls (prctl, getppid) and builds an io::Error from an errno
    // value, which neither allocates nor takes a lock.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the signal was armed; then it
            // will never come, so do not start the job at all.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

fn describe_spawn_error(program: &str, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => format!("program `{program}` not found"),
        io::ErrorKind::PermissionDenied => {
            format!("program `{program}` cannot be executed: {error}")
        }
        _ => format!("program `{program}` cannot start: {error}"),
    }
}

/// Send `signal` to every process of the group `pgid`. A group that no
/// longer exists is not an error.
#[allow(unsafe_code)]
fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: killpg takes two integers and no pointers; any values are
    // sound (a bad group or signal is reported through errno).
    let result = unsafe { libc::killpg(pgid, signal) };
    if result == -1 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, signal, %error, "cannot signal process group");
        }
    }
}

/// Copy a pipe into the shared tail until end of file.
async fn capture(mut pipe: impl AsyncRead + Unpin, tail: Arc<Mutex<OutputTail>>) {
    let mut buffer = vec![0u8; OUTPUT_TAIL_BYTES];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) => return,
            Ok(read) => lock_tail(&tail).push(&buffer[..read]),
            Err(error) => {
                tracing::debug!(%error, "output pipe read failed");
                return;
            }
        }
    }
}

fn lock_tail(tail: &Mutex<OutputTail>) -> std::sync::MutexGuard<'_, OutputTail> {
    tail.lock()
        .expect("output tail lock poisoned: a reader panicked")
}

/// Whether [`Process::kill`] was called.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KillRequest {
    NotRequested,
    Requested,
}

/// Owns the child until it ends; see the module docs.
struct Monitor {
    child: Child,
    pid: u32,
    kill_grace: Duration,
    tail: Arc<Mutex<OutputTail>>,
    readers: [Option<JoinHandle<()>>; 2],
}

impl Monitor {
    async fn run(
        mut self,
        mut kill_requested: watch::Receiver<KillRequest>,
        exit: watch::Sender<Option<ProcessExit>>,
    ) {
        let status = tokio::select! {
            biased;
            status = self.child.wait() => status,
            () = requested(&mut kill_requested) => {
                // kill() sent the first signal; escalate if it is ignored.
                tokio::select! {
                    biased;
                    status = self.child.wait() => status,
                    () = tokio::time::sleep(self.kill_grace) => {
                        signal_group(self.pid, libc::SIGKILL);
                        self.child.wait().await
                    }
                }
            }
        };
        // Whatever the job left running in its group ends with it.
        signal_group(self.pid, libc::SIGKILL);
        let drained = async {
            for reader in self.readers.iter_mut().flatten() {
                let _ = reader.await;
            }
        };
        if tokio::time::timeout(OUTPUT_DRAIN_MAX, drained)
            .await
            .is_err()
        {
            tracing::debug!(pid = self.pid, "output still open after the process ended");
        }
        for reader in self.readers.iter().flatten() {
            reader.abort();
        }
        let output_tail = lock_tail(&self.tail).text();
        let ended = match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                ProcessExit {
                    code: status.code(),
                    signal: status.signal(),
                    output_tail,
                }
            }
            Err(error) => ProcessExit {
                code: None,
                signal: None,
                output_tail: format!("{output_tail}\n[cannot wait for the process: {error}]"),
            },
        };
        exit.send_replace(Some(ended));
    }
}

/// Completes once a kill is requested; never if the handle is dropped first.
async fn requested(kill: &mut watch::Receiver<KillRequest>) {
    let asked = kill
        .wait_for(|request| *request == KillRequest::Requested)
        .await
        .is_ok();
    if !asked {
        std::future::pending::<()>().await;
    }
}

/// A started child process; see [`Process`].
struct ChildProcess {
    pid: u32,
    kill_grace: Duration,
    exit: watch::Receiver<Option<ProcessExit>>,
    kill: watch::Sender<KillRequest>,
}

impl Process for ChildProcess {
    fn id(&self) -> u64 {
        u64::from(self.pid)
    }

    fn wait(&self) -> BoxFuture<'static, ProcessExit> {
        let mut exit = self.exit.clone();
        Box::pin(async move {
            if let Ok(ended) = exit.wait_for(Option::is_some).await {
                return ended
                    .clone()
                    .expect("wait_for returns a value that is Some");
            }
            ProcessExit {
                code: None,
                signal: None,
                output_tail: "the process monitor stopped before the process ended \
                              (the runtime is shutting down)"
                    .to_owned(),
            }
        })
    }

    fn kill(&self) {
        if self.exit.borrow().is_some() {
            return;
        }
        let first = self.kill.send_if_modified(|request| {
            let first = *request == KillRequest::NotRequested;
            *request = KillRequest::Requested;
            first
        });
        if first {
            let signal = if self.kill_grace.is_zero() {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            signal_group(self.pid, signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn spec(command: &[&str]) -> LaunchSpec {
        LaunchSpec {
            job_id: "j-1".to_owned(),
            run_id: 1,
            command: command.iter().map(|part| part.to_string()).collect(),
        }
    }

    async fn start(launcher: &ProcessLauncher, command: &[&str]) -> Arc<dyn Process> {
        launcher
            .start(spec(command))
            .await
            .unwrap_or_else(|error| panic!("{command:?} starts: {error}"))
    }

    /// `wait`, failing the test if it takes more than 30 s.
    async fn wait(process: &Arc<dyn Process>) -> ProcessExit {
        tokio::time::timeout(Duration::from_secs(30), process.wait())
            .await
            .expect("the process ends within 30 s")
    }

    /// Poll `check` every 10 ms until it holds or 30 s have passed.
    async fn eventually(mut check: impl FnMut() -> bool) -> bool {
        for _ in 0..3_000 {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        check()
    }

    /// Whether no live process has `pid` (absent, or a zombie).
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => {
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|rest| rest.trim().chars().next());
                matches!(state, Some('Z' | 'X'))
            }
        }
    }

    fn temp_file(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("faultline-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    async fn read_pid(path: &Path) -> u32 {
        let mut pid = None;
        assert!(
            eventually(|| {
                pid = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|text| text.trim().parse().ok());
                pid.is_some()
            })
            .await,
            "the job wrote its child's pid"
        );
        pid.expect("checked above")
    }

    #[tokio::test]
    async fn exit_codes_propagate() {
        let launcher = ProcessLauncher::new();
        let process = start(&launcher, &["sh", "-c", "exit 3"]).await;
        let exit = wait(&process).await;
        assert_eq!((exit.code, exit.signal), (Some(3), None));
        let process = start(&launcher, &["true"]).await;
        assert!(wait(&process).await.success());
    }

    #[tokio::test]
    async fn output_tail_holds_stdout_and_stderr() {
        let launcher = ProcessLauncher::new();
        let process = start(&launcher, &["sh", "-c", "echo to-out; echo to-err >&2"]).await;
        let exit = wait(&process).await;
        assert!(
            exit.output_tail.contains("to-out\n"),
            "{:?}",
            exit.output_tail
        );
        assert!(
            exit.output_tail.contains("to-err\n"),
            "{:?}",
            exit.output_tail
        );
    }

    #[tokio::test]
    async fn output_tail_keeps_only_the_last_4_kib() {
        let launcher = ProcessLauncher::new();
        let script = "head -c 100000 /dev/zero | tr '\\0' a; echo END";
        let process = start(&launcher, &["sh", "-c", script]).await;
        let exit = wait(&process).await;
        assert!(exit.success());
        assert_eq!(exit.output_tail.len(), OUTPUT_TAIL_BYTES);
        assert!(exit.output_tail.ends_with("aaaEND\n"));
    }

    #[tokio::test]
    async fn kill_ends_the_whole_process_group() {
        let launcher = ProcessLauncher::with_kill_grace(Duration::from_secs(10));
        let file = temp_file("grandchild");
        let script = "sleep 100 & echo $! > \"$0\"; sleep 100";
        let file_name = file.to_str().expect("utf-8 temp path");
        let process = start(&launcher, &["sh", "-c", script, file_name]).await;
        let grandchild = read_pid(&file).await;
        assert!(!gone(grandchild), "the background sleep runs");
        process.kill();
        let exit = wait(&process).await;
        assert_eq!((exit.code, exit.signal), (None, Some(libc::SIGTERM)));
        assert!(
            eventually(|| gone(grandchild)).await,
            "grandchild {grandchild} survived the kill"
        );
        assert!(gone(u32::try_from(process.id()).expect("a pid")));
        let _ = std::fs::remove_file(&file);
    }

    #[tokio::test]
    async fn kill_escalates_to_sigkill_when_sigterm_is_ignored() {
        let launcher = ProcessLauncher::with_kill_grace(Duration::from_millis(200));
        let file = temp_file("ignores-term");
        let script = "trap '' TERM; echo ready > \"$0\"; while :; do sleep 1; done";
        let file_name = file.to_str().expect("utf-8 temp path");
        let process = start(&launcher, &["sh", "-c", script, file_name]).await;
        assert!(eventually(|| file.exists()).await, "the trap is set");
        process.kill();
        process.kill();
        let exit = wait(&process).await;
        assert_eq!(exit.signal, Some(libc::SIGKILL));
        let _ = std::fs::remove_file(&file);
    }

    #[tokio::test]
    async fn a_job_ending_by_itself_takes_its_leftover_processes_with_it() {
        let launcher = ProcessLauncher::new();
        let file = temp_file("leftover");
        let script = "sleep 100 & echo $! > \"$0\"; exit 0";
        let file_name = file.to_str().expect("utf-8 temp path");
        let process = start(&launcher, &["sh", "-c", script, file_name]).await;
        let exit = wait(&process).await;
        assert!(exit.success(), "{exit:?}");
        let leftover = read_pid(&file).await;
        assert!(
            eventually(|| gone(leftover)).await,
            "leftover {leftover} survived"
        );
        let _ = std::fs::remove_file(&file);
    }

    #[tokio::test]
    async fn a_missing_program_or_an_empty_command_cannot_start() {
        let launcher = ProcessLauncher::new();
        let missing = launcher
            .start(spec(&["faultline-no-such-program", "x"]))
            .await;
        match missing {
            Err(LaunchError::CannotStart { command, reason }) => {
                assert_eq!(command, ["faultline-no-such-program", "x"]);
                assert_eq!(reason, "program `faultline-no-such-program` not found");
            }
            Ok(_) => panic!("a missing program started"),
        }
        let empty = launcher.start(spec(&[])).await;
        assert!(
            matches!(empty, Err(LaunchError::CannotStart { reason, .. }) if reason == "empty command")
        );
    }

    #[tokio::test]
    async fn wait_after_the_exit_returns_the_same_exit_and_kill_changes_nothing() {
        let launcher = ProcessLauncher::new();
        let process = start(&launcher, &["sh", "-c", "echo done; exit 7"]).await;
        let first = wait(&process).await;
        process.kill();
        let second = wait(&process).await;
        assert_eq!(first, second);
        assert_eq!(
            (first.code, first.output_tail.as_str()),
            (Some(7), "done\n")
        );
    }

    #[test]
    fn the_child_dies_when_the_thread_that_started_it_ends() {
        let pid = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let process = start(&ProcessLauncher::new(), &["sleep", "100"]).await;
                u32::try_from(process.id()).expect("a pid")
            })
        })
        .join()
        .expect("the starting thread ends");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let died = runtime.block_on(eventually(|| gone(pid)));
        assert!(died, "process {pid} outlived the thread that started it");
    }
}
