//! [`FakeLauncher`]: a [`Launcher`] whose processes end when the test says so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::runtime::lock;
use crate::runtime::{BoxFuture, LaunchError, LaunchSpec, Launcher, Process, ProcessExit};

/// The signal number a [`FakeProcess`] reports when killed (SIGKILL).
pub const KILL_SIGNAL: i32 = 9;

/// A launcher for unit tests. Starting always succeeds at once, unless the
/// command is empty or its program was declared missing with
/// [`refuse_program`](FakeLauncher::refuse_program). A started process runs
/// until the test ends it with [`exit`](FakeLauncher::exit) or the code under
/// test kills it. Processes are identified by `(job_id, run_id)`.
///
/// Cloning gives another handle on the same launcher.
#[derive(Clone, Default)]
pub struct FakeLauncher {
    state: Arc<Mutex<LauncherState>>,
}

#[derive(Default)]
struct LauncherState {
    id_next: u64,
    refused_programs: BTreeSet<String>,
    starts: Vec<LaunchSpec>,
    processes: BTreeMap<(String, u64), Arc<FakeProcess>>,
}

impl FakeLauncher {
    /// A launcher with no process.
    pub fn new() -> FakeLauncher {
        FakeLauncher::default()
    }

    /// Fail every later start of `program` with [`LaunchError::CannotStart`].
    pub fn refuse_program(&self, program: &str) {
        lock(&self.state)
            .refused_programs
            .insert(program.to_owned());
    }

    /// Every spec started successfully so far, in order.
    pub fn starts(&self) -> Vec<LaunchSpec> {
        lock(&self.state).starts.clone()
    }

    /// The process started for `(job_id, run_id)`, if any.
    pub fn process(&self, job_id: &str, run_id: u64) -> Option<Arc<FakeProcess>> {
        lock(&self.state)
            .processes
            .get(&(job_id.to_owned(), run_id))
            .cloned()
    }

    /// End the process of `(job_id, run_id)` by itself with `code` and
    /// `output_tail`. Panics if no such process was started; does nothing if
    /// it already ended.
    pub fn exit(&self, job_id: &str, run_id: u64, code: i32, output_tail: &str) {
        let process = self
            .process(job_id, run_id)
            .unwrap_or_else(|| panic!("no process was started for {job_id}#{run_id}"));
        process.end(ProcessExit {
            code: Some(code),
            signal: None,
            output_tail: output_tail.to_owned(),
        });
    }

    /// `(job_id, run_id)` of every process that has not ended, in order.
    pub fn running(&self) -> Vec<(String, u64)> {
        lock(&self.state)
            .processes
            .iter()
            .filter(|(_, process)| process.exit().is_none())
            .map(|(key, _)| key.clone())
            .collect()
    }
}

impl Launcher for FakeLauncher {
    fn start(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Arc<dyn Process>, LaunchError>> {
        let mut state = lock(&self.state);
        let result = match spec.command.first() {
            None => Err(LaunchError::CannotStart {
                command: spec.command.clone(),
                reason: "empty command".to_owned(),
            }),
            Some(program) if state.refused_programs.contains(program) => {
                Err(LaunchError::CannotStart {
                    command: spec.command.clone(),
                    reason: format!("program `{program}` not found"),
                })
            }
            Some(_) => {
                let id = state.id_next;
                state.id_next += 1;
                let (exit, _) = watch::channel(None);
                let process = Arc::new(FakeProcess {
                    id,
                    kills: Mutex::new(0),
                    exit,
                });
                state.starts.push(spec.clone());
                state
                    .processes
                    .insert((spec.job_id.clone(), spec.run_id), Arc::clone(&process));
                Ok(process as Arc<dyn Process>)
            }
        };
        Box::pin(async move { result })
    }
}

/// A process of the [`FakeLauncher`].
pub struct FakeProcess {
    id: u64,
    kills: Mutex<u32>,
    exit: watch::Sender<Option<ProcessExit>>,
}

impl FakeProcess {
    /// How many times [`Process::kill`] was called.
    pub fn kills(&self) -> u32 {
        *lock(&self.kills)
    }

    /// How it ended, if it has.
    pub fn exit(&self) -> Option<ProcessExit> {
        self.exit.borrow().clone()
    }

    fn end(&self, exit: ProcessExit) {
        self.exit.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(exit);
            }
            first
        });
    }
}

impl Process for FakeProcess {
    fn id(&self) -> u64 {
        self.id
    }

    fn wait(&self) -> BoxFuture<'static, ProcessExit> {
        let mut exit = self.exit.subscribe();
        Box::pin(async move {
            if let Ok(ended) = exit.wait_for(Option::is_some).await {
                return ended
                    .clone()
                    .expect("wait_for returns a value that is Some");
            }
            // The process was dropped without ending: it never will.
            futures::future::pending().await
        })
    }

    fn kill(&self) {
        *lock(&self.kills) += 1;
        self.end(ProcessExit {
            code: None,
            signal: Some(KILL_SIGNAL),
            output_tail: String::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::ManualRuntime;

    fn spec(job: &str, run: u64, command: &[&str]) -> LaunchSpec {
        LaunchSpec {
            job_id: job.to_owned(),
            run_id: run,
            command: command.iter().map(|part| part.to_string()).collect(),
        }
    }

    #[test]
    fn wait_resolves_with_the_exit_the_test_chose_every_time() {
        let runtime = ManualRuntime::new(1);
        let launcher = FakeLauncher::new();
        let started = runtime.start("start", launcher.start(spec("j-1", 1, &["true"])));
        runtime.run_until_idle();
        let process = started.take().expect("resolved").expect("started");
        let first = runtime.start("wait", process.wait());
        runtime.run_until_idle();
        assert!(first.take().is_none());
        assert_eq!(launcher.running(), [("j-1".to_owned(), 1)]);

        launcher.exit("j-1", 1, 3, "bye");
        runtime.run_until_idle();
        let exit = first.take().expect("ended");
        assert_eq!((exit.code, exit.output_tail.as_str()), (Some(3), "bye"));
        let second = runtime.start("wait again", process.wait());
        runtime.run_until_idle();
        assert_eq!(second.take(), Some(exit));
        assert!(launcher.running().is_empty());
    }

    #[test]
    fn kill_after_exit_keeps_the_first_exit() {
        let runtime = ManualRuntime::new(1);
        let launcher = FakeLauncher::new();
        let started = runtime.start("start", launcher.start(spec("j-1", 1, &["true"])));
        runtime.run_until_idle();
        let process = started.take().expect("resolved").expect("started");
        launcher.exit("j-1", 1, 0, "");
        process.kill();
        let fake = launcher.process("j-1", 1).expect("started");
        assert_eq!(fake.kills(), 1);
        assert_eq!(fake.exit().and_then(|exit| exit.code), Some(0));
    }

    #[test]
    fn refused_programs_and_empty_commands_cannot_start() {
        let runtime = ManualRuntime::new(1);
        let launcher = FakeLauncher::new();
        launcher.refuse_program("nope");
        let missing = runtime.start("missing", launcher.start(spec("j-1", 1, &["nope", "x"])));
        let empty = runtime.start("empty", launcher.start(spec("j-2", 1, &[])));
        runtime.run_until_idle();
        assert!(matches!(
            missing.take(),
            Some(Err(LaunchError::CannotStart { reason, .. })) if reason.contains("nope")
        ));
        assert!(matches!(
            empty.take(),
            Some(Err(LaunchError::CannotStart { .. }))
        ));
        assert!(launcher.starts().is_empty());
    }
}
