//! Client nodes: each plays the workload actions of its users at their
//! times, through `faultline_core::client::call` over the simulated
//! network, and writes what it sees to the [`ClientBook`].
//!
//! Every action is a *script* on its own task:
//! * submit: call until answered (retrying with the same idempotency key
//!   after a network failure, a timeout or a disconnect), then poll the
//!   job's status until it ends;
//! * cancel: wait until the job's id is known, then cancel it;
//! * duplicate submit: submit the same request again.
//!
//! A disconnect drops the first attempt's call future after a number of
//! polls; the connection closes and the supervisor drops the request's
//! handler wherever it awaits. Every loop is bounded by the run's deadline.

use std::sync::Arc;
use std::time::Duration;

use faultline_core::client::{call, ClientError};
use faultline_core::protocol::{ClientRequest, ClientResponse, ErrorCode, JobId, SubmitRequest};
use faultline_core::runtime::{BoxFuture, Instant, Net, Runtime};
use faultline_sim::util::CancelAfterPolls;
use faultline_sim::NodeContext;
use futures::FutureExt;

use super::book::{ChainLast, ClientBook};
use super::launcher::job_command;
use crate::topology::{client_address, user_token};
use crate::workload::{Action, ClientAction, Workload};

/// How a client paces itself.
#[derive(Clone, Copy, Debug)]
pub struct ClientTiming {
    /// A call without an answer after this long is abandoned.
    pub call_timeout: Duration,
    /// Wait before retrying a failed call.
    pub retry_delay: Duration,
    /// Time between two status polls of a job.
    pub poll_interval: Duration,
    /// Run time after which scripts give up.
    pub deadline: Duration,
}

/// What one client node plays.
pub struct ClientProgram {
    /// `(index in the workload, action)` of this client's actions.
    pub actions: Vec<(usize, ClientAction)>,
    /// The whole workload (a duplicate submit repeats its original).
    pub workload: Arc<Workload>,
    /// Where observations go.
    pub book: ClientBook,
    /// Pacing.
    pub timing: ClientTiming,
}

/// The init of a client node.
pub fn client_init(
    program: Arc<ClientProgram>,
) -> impl Fn(NodeContext) -> BoxFuture<'static, ()> + Send + Sync + 'static {
    move |context: NodeContext| {
        let program = Arc::clone(&program);
        Box::pin(async move { play(context, program).await })
    }
}

/// Start each action's script at its time.
async fn play(context: NodeContext, program: Arc<ClientProgram>) {
    let runtime = context.runtime();
    for (index, action) in &program.actions {
        let due = Instant::ZERO + action.at;
        let now = runtime.now();
        if due > now {
            runtime.sleep(due - now).await;
        }
        let script = Script {
            runtime: context.runtime(),
            net: context.net(),
            program: Arc::clone(&program),
            index: *index,
            action: action.clone(),
        };
        let name = format!("client {} {}", op_name(&action.what), action.what.key());
        drop(runtime.spawn(&name, Box::pin(script.run())));
    }
}

fn op_name(action: &Action) -> &'static str {
    match action {
        Action::Submit { .. } => "submit",
        Action::Cancel { .. } => "cancel",
        Action::DuplicateSubmit { .. } => "resubmit",
    }
}

/// How one call ended, as the client sees it.
enum Answer {
    /// The supervisor answered.
    Response(Box<ClientResponse>),
    /// No answer: network failure, timeout, or the client went away.
    Nothing(String),
}

struct Script {
    runtime: Arc<dyn Runtime>,
    net: Arc<dyn Net>,
    program: Arc<ClientProgram>,
    index: usize,
    action: ClientAction,
}

impl Script {
    async fn run(self) {
        match &self.action.what {
            Action::Submit { .. } => self.submit_and_watch().await,
            Action::Cancel { key } => self.cancel(key).await,
            Action::DuplicateSubmit { key } => self.resubmit(key).await,
        }
        self.program.book.finish_script(self.index);
    }

    fn book(&self) -> &ClientBook {
        &self.program.book
    }

    fn past_deadline(&self) -> bool {
        self.runtime.now() >= Instant::ZERO + self.program.timing.deadline
    }

    /// One call, bounded by the call timeout; `disconnect` drops it after
    /// that many polls.
    async fn call_once(&self, request: ClientRequest, disconnect: Option<u32>) -> Answer {
        let token = user_token(&self.action.user);
        let address = client_address();
        let call = call(&*self.net, &address, &token, request);
        let outcome = async {
            match disconnect {
                Some(polls) => CancelAfterPolls::new(call, polls).await,
                None => Some(call.await),
            }
        }
        .fuse();
        let timeout = self.runtime.sleep(self.program.timing.call_timeout).fuse();
        futures::pin_mut!(outcome, timeout);
        let outcome = futures::select_biased! {
            outcome = outcome => outcome,
            () = timeout => return Answer::Nothing("no answer in time".to_owned()),
        };
        match outcome {
            Some(Ok(response)) => Answer::Response(Box::new(response)),
            Some(Err(ClientError::Net(error))) => Answer::Nothing(error.to_string()),
            Some(Err(ClientError::Codec(error))) => Answer::Nothing(error.to_string()),
            None => Answer::Nothing("the client went away mid-request".to_owned()),
        }
    }

    /// Call until the supervisor answers something other than
    /// `Unavailable`, or the deadline passes. The first attempt carries the
    /// action's disconnect.
    async fn call_until_answered(&self, request: ClientRequest) -> Option<ClientResponse> {
        let mut disconnect = self.action.disconnect_after_polls;
        const ATTEMPTS_MAX: u32 = 10_000;
        for _ in 0..ATTEMPTS_MAX {
            if self.past_deadline() {
                return None;
            }
            let answer = self.call_once(request.clone(), disconnect.take()).await;
            match answer {
                Answer::Response(response) => match *response {
                    ClientResponse::Error {
                        code: ErrorCode::Unavailable,
                        message,
                    } => {
                        tracing::debug!(%message, "supervisor unavailable; retrying");
                        self.runtime.sleep(self.program.timing.retry_delay).await;
                    }
                    response => return Some(response),
                },
                Answer::Nothing(reason) => {
                    tracing::debug!(%reason, "no answer; retrying");
                    self.runtime.sleep(self.program.timing.retry_delay).await;
                }
            }
        }
        None
    }

    async fn submit_and_watch(&self) {
        let Action::Submit {
            key,
            kind,
            duration,
            exit_code,
            max_run,
        } = &self.action.what
        else {
            unreachable!("only submit actions get here");
        };
        let request = ClientRequest::Submit(SubmitRequest {
            kind: *kind,
            command: job_command(*duration, *exit_code),
            max_run_ms: max_run.map(|max_run| max_run.as_millis() as u64),
            idempotency_key: Some(key.clone()),
        });
        let mut chain: ChainLast = None;
        let Some(id) = self.submit(key, request, &mut chain).await else {
            return;
        };
        self.watch(key, &id, &mut chain).await;
    }

    /// Submit; the job's id once acknowledged.
    async fn submit(
        &self,
        key: &str,
        request: ClientRequest,
        chain: &mut ChainLast,
    ) -> Option<JobId> {
        let user = &self.action.user;
        match self.call_until_answered(request).await {
            Some(ClientResponse::Job { job }) => {
                let now = self.runtime.now();
                self.book().acknowledge(key, user, &job.id, now);
                self.book().observe(key, job.status, chain, now);
                Some(job.id)
            }
            Some(ClientResponse::Error { code, message }) => {
                let reason = format!("{code:?}: {message}");
                self.book().refuse(key, user, reason, false);
                None
            }
            Some(other) => {
                let reason = format!("unexpected answer {other:?}");
                self.book().refuse(key, user, reason, false);
                None
            }
            None => {
                let reason = "no answer before the deadline".to_owned();
                self.book().refuse(key, user, reason, true);
                None
            }
        }
    }

    /// Poll the job's status until it ends (or the deadline passes).
    async fn watch(&self, key: &str, id: &JobId, chain: &mut ChainLast) {
        if chain.is_some_and(|status| status.is_terminal()) {
            return;
        }
        let polls_max = (self.program.timing.deadline.as_millis()
            / self.program.timing.poll_interval.as_millis().max(1)) as u64
            + 1;
        for _ in 0..polls_max {
            self.runtime.sleep(self.program.timing.poll_interval).await;
            if self.past_deadline() {
                return;
            }
            let request = ClientRequest::Status { job: id.clone() };
            let answer = self.call_once(request, None).await;
            if self.record(key, answer, chain) {
                return;
            }
        }
    }

    /// Record an answer about `key`'s job; whether the chain is over.
    fn record(&self, key: &str, answer: Answer, chain: &mut ChainLast) -> bool {
        let now = self.runtime.now();
        let Answer::Response(response) = answer else {
            return false;
        };
        match *response {
            ClientResponse::Job { job } => {
                self.book().observe(key, job.status, chain, now);
                job.status.is_terminal()
            }
            ClientResponse::Error {
                code: ErrorCode::NotFound,
                ..
            } => {
                self.book().lost(key, now);
                true
            }
            _ => false,
        }
    }

    /// The id of `key`'s job once a submit was acknowledged; `None` if the
    /// submit was refused or the deadline passed.
    async fn await_id(&self, key: &str) -> Option<JobId> {
        const WAIT_STEP: Duration = Duration::from_millis(500);
        let steps_max = self.program.timing.deadline.as_millis() / WAIT_STEP.as_millis() + 1;
        for _ in 0..steps_max {
            if let Some(entry) = self.book().entry(key) {
                if entry.id.is_some() {
                    return entry.id;
                }
                if entry.refused.is_some() {
                    return None;
                }
            }
            if self.past_deadline() || self.program.workload.submit_of(key).is_none() {
                return None;
            }
            self.runtime.sleep(WAIT_STEP).await;
        }
        None
    }

    async fn cancel(&self, key: &str) {
        let Some(id) = self.await_id(key).await else {
            return;
        };
        let request = ClientRequest::Cancel { job: id };
        let mut chain: ChainLast = None;
        match self.call_until_answered(request).await {
            Some(ClientResponse::Job { job }) => {
                let now = self.runtime.now();
                self.book().cancel_acknowledged(key, now);
                self.book().observe(key, job.status, &mut chain, now);
            }
            Some(ClientResponse::Error {
                code: ErrorCode::NotFound,
                ..
            }) => self.book().lost(key, self.runtime.now()),
            _ => {}
        }
    }

    async fn resubmit(&self, key: &str) {
        let Some(original) = self.program.workload.submit_of(key).cloned() else {
            return;
        };
        let Action::Submit {
            kind,
            duration,
            exit_code,
            max_run,
            ..
        } = original.what
        else {
            unreachable!("submit_of returns submit actions");
        };
        let request = ClientRequest::Submit(SubmitRequest {
            kind,
            command: job_command(duration, exit_code),
            max_run_ms: max_run.map(|max_run| max_run.as_millis() as u64),
            idempotency_key: Some(key.to_owned()),
        });
        let mut chain: ChainLast = None;
        if let Some(ClientResponse::Job { job }) = self.call_until_answered(request).await {
            let now = self.runtime.now();
            self.book()
                .acknowledge(key, &self.action.user, &job.id, now);
            self.book().observe(key, job.status, &mut chain, now);
        }
    }
}
