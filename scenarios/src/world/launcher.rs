//! The simulated `Launcher`: a job's process is a task on its agent's node
//! that sleeps the job's drawn duration and exits with its drawn code.
//!
//! The duration and the exit code travel in the job's command
//! (`sim-job --duration-ms 12300 --exit 0`), so the supervisor and the agent
//! handle a command like any other. A kill ends the process with signal 9;
//! a process dies with its node (its task is dropped, and its guard records
//! the end). Every execution is written to the shared [`ExecutionLedger`],
//! which the "at most one live execution per job" oracle reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use faultline_core::runtime::{
    BoxFuture, Instant, LaunchError, LaunchSpec, Launcher, Process, ProcessExit, Runtime,
    TaskHandle,
};
use tokio::sync::watch;

/// The program name of simulated jobs.
const PROGRAM: &str = "sim-job";
/// SIGKILL.
const SIGNAL_KILL: i32 = 9;

/// The command of a simulated job that runs `duration` and exits `code`.
pub fn job_command(duration: Duration, code: i32) -> Vec<String> {
    vec![
        PROGRAM.to_owned(),
        "--duration-ms".to_owned(),
        duration.as_millis().to_string(),
        "--exit".to_owned(),
        code.to_string(),
    ]
}

/// The duration and exit code of a simulated job's command.
pub fn parse_job_command(command: &[String]) -> Result<(Duration, i32), String> {
    match command {
        [program, duration_flag, millis, exit_flag, code]
            if program == PROGRAM && duration_flag == "--duration-ms" && exit_flag == "--exit" =>
        {
            let millis: u64 = millis
                .parse()
                .map_err(|_| format!("bad duration {millis:?}"))?;
            let code: i32 = code
                .parse()
                .map_err(|_| format!("bad exit code {code:?}"))?;
            Ok((Duration::from_millis(millis), code))
        }
        _ => Err(format!("not a {PROGRAM} command: {command:?}")),
    }
}

/// One execution of a job's process.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Execution {
    /// The job.
    pub job: String,
    /// The run.
    pub run: u64,
    /// The agent node it runs on.
    pub node: String,
    /// When it started (the agent's clock).
    pub started_at: Instant,
    /// When it ended, if it did (the agent's clock).
    pub ended_at: Option<Instant>,
    /// How it ended.
    pub ending: Option<String>,
}

#[derive(Default)]
struct LedgerState {
    executions: Vec<Execution>,
    /// Live executions by job.
    live: BTreeMap<String, Vec<usize>>,
    /// Breaches of "at most one live execution per job", in order.
    violations: Vec<String>,
}

/// Every execution of the run, shared by every agent's launcher and the
/// oracles.
#[derive(Clone, Default)]
pub struct ExecutionLedger {
    state: Arc<Mutex<LedgerState>>,
}

impl ExecutionLedger {
    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state
            .lock()
            .expect("the ledger lock is never held across a panic")
    }

    /// Record a start; returns its index. A second live execution of the
    /// same job is recorded as a violation.
    fn start(&self, job: &str, run: u64, node: &str, at: Instant) -> usize {
        let mut state = self.lock();
        let index = state.executions.len();
        let live = state.live.entry(job.to_owned()).or_default().clone();
        if let Some(other) = live.first() {
            let other = &state.executions[*other];
            let violation = format!(
                "job {job} run {run} started on {node} at {at} while run {} still runs on {} (since {})",
                other.run, other.node, other.started_at
            );
            state.violations.push(violation);
        }
        state.executions.push(Execution {
            job: job.to_owned(),
            run,
            node: node.to_owned(),
            started_at: at,
            ended_at: None,
            ending: None,
        });
        state.live.get_mut(job).expect("inserted above").push(index);
        index
    }

    fn end(&self, index: usize, at: Instant, ending: &str) {
        let mut state = self.lock();
        let execution = &mut state.executions[index];
        if execution.ended_at.is_some() {
            return;
        }
        execution.ended_at = Some(at);
        execution.ending = Some(ending.to_owned());
        let job = execution.job.clone();
        if let Some(live) = state.live.get_mut(&job) {
            live.retain(|live| *live != index);
            if live.is_empty() {
                state.live.remove(&job);
            }
        }
    }

    /// The first breach of "at most one live execution per job", if any.
    pub fn first_violation(&self) -> Option<String> {
        self.lock().violations.first().cloned()
    }

    /// Every execution still running.
    pub fn live(&self) -> Vec<Execution> {
        let state = self.lock();
        state
            .live
            .values()
            .flatten()
            .map(|index| state.executions[*index].clone())
            .collect()
    }

    /// Whether any execution is still running.
    pub fn any_live(&self) -> bool {
        !self.lock().live.is_empty()
    }

    /// Every execution so far, in start order.
    pub fn executions(&self) -> Vec<Execution> {
        self.lock().executions.clone()
    }
}

/// A `Launcher` for one agent node.
pub struct SimLauncher {
    runtime: Arc<dyn Runtime>,
    node: String,
    ledger: ExecutionLedger,
    next_id: Mutex<u64>,
}

impl SimLauncher {
    /// The launcher of agent node `node`, on that node's runtime.
    pub fn new(runtime: Arc<dyn Runtime>, node: &str, ledger: ExecutionLedger) -> SimLauncher {
        SimLauncher {
            runtime,
            node: node.to_owned(),
            ledger,
            next_id: Mutex::new(1),
        }
    }
}

/// The end of one process: set once, by its exit, its kill or its node's
/// death, whichever comes first.
struct ProcessEnd {
    exit: watch::Sender<Option<ProcessExit>>,
    ledger: ExecutionLedger,
    index: usize,
    runtime: Arc<dyn Runtime>,
}

impl ProcessEnd {
    fn finish(&self, exit: ProcessExit, ending: &str) {
        let first = self.exit.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(exit);
            true
        });
        if first {
            self.ledger.end(self.index, self.runtime.now(), ending);
        }
    }
}

fn killed() -> ProcessExit {
    ProcessExit {
        code: None,
        signal: Some(SIGNAL_KILL),
        output_tail: String::new(),
    }
}

/// Ends the process when its task is dropped (a kill, or its node died).
struct EndOnDrop(Arc<ProcessEnd>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.finish(killed(), "killed");
    }
}

struct SimProcess {
    id: u64,
    end: Arc<ProcessEnd>,
    task: TaskHandle,
}

impl Process for SimProcess {
    fn id(&self) -> u64 {
        self.id
    }

    fn wait(&self) -> BoxFuture<'static, ProcessExit> {
        let mut exit = self.end.exit.subscribe();
        Box::pin(async move {
            match exit.wait_for(Option::is_some).await {
                Ok(exit) => exit.clone().expect("waited for Some"),
                // The process's end was dropped with its node.
                Err(_) => killed(),
            }
        })
    }

    fn kill(&self) {
        self.end.finish(killed(), "killed");
        self.task.abort();
    }
}

impl Launcher for SimLauncher {
    fn start(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Arc<dyn Process>, LaunchError>> {
        let result = self.start_now(spec);
        Box::pin(std::future::ready(result))
    }
}

impl SimLauncher {
    fn start_now(&self, spec: LaunchSpec) -> Result<Arc<dyn Process>, LaunchError> {
        let (duration, code) =
            parse_job_command(&spec.command).map_err(|reason| LaunchError::CannotStart {
                command: spec.command.clone(),
                reason,
            })?;
        let id = {
            let mut next = self
                .next_id
                .lock()
                .expect("the id lock is never held across a panic");
            let id = *next;
            *next += 1;
            id
        };
        let index = self
            .ledger
            .start(&spec.job_id, spec.run_id, &self.node, self.runtime.now());
        let end = Arc::new(ProcessEnd {
            exit: watch::Sender::new(None),
            ledger: self.ledger.clone(),
            index,
            runtime: Arc::clone(&self.runtime),
        });
        let guard = EndOnDrop(Arc::clone(&end));
        let sleep = self.runtime.sleep(duration);
        let task = self.runtime.spawn(
            &format!("process {}#{}", spec.job_id, spec.run_id),
            Box::pin(async move {
                sleep.await;
                let exit = ProcessExit {
                    code: Some(code),
                    signal: None,
                    output_tail: format!("sim-job exited with {code}"),
                };
                guard.0.finish(exit, "exited");
            }),
        );
        Ok(Arc::new(SimProcess { id, end, task }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_commands_round_trip() {
        let command = job_command(Duration::from_millis(12_300), 3);
        assert_eq!(
            parse_job_command(&command),
            Ok((Duration::from_millis(12_300), 3))
        );
        assert!(parse_job_command(&["true".to_owned()]).is_err());
    }

    #[test]
    fn the_ledger_flags_a_second_live_execution_of_a_job() {
        let ledger = ExecutionLedger::default();
        let first = ledger.start("j-1", 1, "a-1", Instant::ZERO);
        assert_eq!(ledger.first_violation(), None);
        ledger.end(first, Instant::from_millis(5), "exited");
        let second = ledger.start("j-1", 2, "a-2", Instant::from_millis(6));
        assert_eq!(ledger.first_violation(), None);
        ledger.start("j-1", 3, "a-1", Instant::from_millis(7));
        let violation = ledger.first_violation().expect("two live runs");
        assert!(
            violation.contains("run 3") && violation.contains("run 2"),
            "{violation}"
        );
        ledger.end(second, Instant::from_millis(8), "killed");
        assert_eq!(ledger.live().len(), 1);
    }
}
