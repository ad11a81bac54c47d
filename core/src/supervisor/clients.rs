//! Client requests: submit, status, cancel, list, overview.
//!
//! Every request makes all of its changes in one critical section, then
//! awaits one store commit, then answers. The commit covers every record put
//! before it, so what a client is told (a new job, a status, a cancel) is
//! durable before it hears it, and a future dropped at that await leaves
//! nothing half done: the job exists and runs whether or not its submitter
//! stayed to hear the answer (a retry with the same idempotency key finds
//! it). A user sees and cancels only their own jobs (another user's job is
//! `NotFound`); admins see everything.

use super::snapshot::{build_snapshot, view_of};
use super::state::State;
use super::Supervisor;
use crate::config::Role;
use crate::flaws::Flaw;
use crate::job::{JobRecord, NewJob};
use crate::protocol::{ClientRequest, ClientResponse, ErrorCode, JobId, SubmitRequest};
use crate::slots::{GrantOnWithdraw, SlotTicket};

/// Longest idempotency key accepted.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;

/// A refused request: the error answer, kept small until it is answered.
#[derive(Debug)]
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl From<Refusal> for ClientResponse {
    fn from(refusal: Refusal) -> ClientResponse {
        ClientResponse::Error {
            code: refusal.code,
            message: refusal.message,
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

impl Supervisor {
    /// Serve one request of the authenticated user `user` (a name returned
    /// by [`Supervisor::authenticate_user`]). Drop-safe at every await.
    pub async fn handle_client(&self, user: &str, request: ClientRequest) -> ClientResponse {
        let Some(role) = self.inner.config.users.get(user).map(|user| user.role) else {
            return error(ErrorCode::Unauthorized, "unknown user").into();
        };
        let answer = match request {
            ClientRequest::Submit(submit) => return self.submit(user, submit).await,
            ClientRequest::Status { job } => self.read_job(user, role, &job, false),
            ClientRequest::Cancel { job } => self.read_job(user, role, &job, true),
            ClientRequest::List => Ok(self.list_jobs(user)),
            ClientRequest::Overview => self.overview(user, role),
        };
        match answer {
            Ok(answer) => self.answer_when_durable(answer).await,
            Err(refusal) => refusal.into(),
        }
    }

    /// Commit, then answer `answer` (or `Unavailable` if the store fails).
    async fn answer_when_durable(&self, answer: ClientResponse) -> ClientResponse {
        match self.inner.store.commit().await {
            Ok(()) => answer,
            Err(store) => error(ErrorCode::Unavailable, format!("not durable: {store}")).into(),
        }
    }

    fn read_job(
        &self,
        user: &str,
        role: Role,
        job: &JobId,
        cancel: bool,
    ) -> Result<ClientResponse, Refusal> {
        let now = self.runtime().now();
        let mut state = self.lock();
        if cancel && state.shutting_down {
            return Err(error(
                ErrorCode::Unavailable,
                "the supervisor is shutting down",
            ));
        }
        let visible = state
            .jobs
            .get(job)
            .is_some_and(|found| role == Role::Admin || found.record.owner == user);
        if !visible {
            return Err(error(ErrorCode::NotFound, format!("no job {job}")));
        }
        if cancel {
            tracing::info!(%job, user, "cancel requested");
            self.cancel_job(&mut state, job, now);
        }
        let view = view_of(&state, &state.jobs[job], now);
        Ok(ClientResponse::Job { job: view })
    }

    fn list_jobs(&self, user: &str) -> ClientResponse {
        let now = self.runtime().now();
        let state = self.lock();
        let mut jobs: Vec<_> = state
            .jobs
            .values()
            .filter(|job| job.record.owner == user)
            .collect();
        jobs.sort_by_key(|job| job.record.seq);
        ClientResponse::Jobs {
            jobs: jobs
                .into_iter()
                .map(|job| view_of(&state, job, now))
                .collect(),
        }
    }

    fn overview(&self, user: &str, role: Role) -> Result<ClientResponse, Refusal> {
        let now = self.runtime().now();
        let snapshot = build_snapshot(&self.lock(), now).for_user(user, role);
        match serde_json::to_value(&snapshot) {
            Ok(overview) => Ok(ClientResponse::Overview { overview }),
            Err(failure) => Err(error(
                ErrorCode::Unavailable,
                format!("overview: {failure}"),
            )),
        }
    }

    /// Check a submit against the request limits; `Err` is the refusal.
    fn check_submit(&self, request: &SubmitRequest) -> Result<(), Refusal> {
        if request.command.is_empty() || request.command[0].is_empty() {
            return Err(error(
                ErrorCode::BadRequest,
                "the command must name a program",
            ));
        }
        let bytes: usize = request.command.iter().map(String::len).sum();
        let limit = self.inner.config.max_command_bytes as usize;
        if bytes > limit {
            return Err(error(
                ErrorCode::TooLarge,
                format!("command of {bytes} bytes exceeds {limit}"),
            ));
        }
        if request.max_run_ms == Some(0) {
            return Err(error(ErrorCode::BadRequest, "max_run_ms must be positive"));
        }
        match &request.idempotency_key {
            Some(key) if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX => Err(error(
                ErrorCode::BadRequest,
                format!("an idempotency key has 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes"),
            )),
            _ => Ok(()),
        }
    }

    /// The job an earlier submit with the same key created, if any.
    fn find_idempotent(
        &self,
        state: &State,
        user: &str,
        request: &SubmitRequest,
    ) -> Option<Result<ClientResponse, Refusal>> {
        let key = request.idempotency_key.as_ref()?;
        let job = state.idempotency.get(&(user.to_owned(), key.clone()))?;
        let found = &state.jobs[job];
        if found.record.kind != request.kind || found.record.command != request.command {
            return Some(Err(error(
                ErrorCode::BadRequest,
                format!("idempotency key already used for job {job} with another kind or command"),
            )));
        }
        tracing::info!(probe = "idempotent-resubmit", %job, user, "submit repeated");
        let view = view_of(state, found, self.runtime().now());
        Some(Ok(ClientResponse::Job { job: view }))
    }

    /// Admission under the lock: limits, then a new `Pending` record.
    fn admit(
        &self,
        state: &mut State,
        user: &str,
        request: SubmitRequest,
    ) -> Result<JobRecord, Refusal> {
        let config = &self.inner.config;
        if state.shutting_down {
            return Err(error(
                ErrorCode::Unavailable,
                "the supervisor is shutting down",
            ));
        }
        let plan = config.plan_of(user);
        if state.pending_count(Some(user)) >= plan.max_pending as usize {
            let limit = plan.max_pending;
            return Err(error(
                ErrorCode::LimitExceeded,
                format!("at most {limit} waiting jobs per user"),
            ));
        }
        if state.pending_count(None) >= config.max_pending_total as usize {
            return Err(error(ErrorCode::Unavailable, "the queue is full"));
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let max_run_ms = config.max_run_ms_for(user, request.kind, request.max_run_ms);
        let job = NewJob {
            seq,
            owner: user.to_owned(),
            kind: request.kind,
            command: request.command,
            max_run_ms,
            idempotency_key: request.idempotency_key,
        };
        Ok(JobRecord::new(job, self.runtime().now()))
    }

    fn register(
        &self,
        state: &mut State,
        record: JobRecord,
        reserved: Option<SlotTicket>,
    ) -> ClientResponse {
        let id = record.id.clone();
        if let Some(key) = &record.idempotency_key {
            state
                .idempotency
                .insert((record.owner.clone(), key.clone()), id.clone());
        }
        tracing::info!(job = %id, owner = %record.owner, kind = %record.kind, "job submitted");
        state.insert_job(record);
        self.spawn_op(state, &id, reserved);
        let view = view_of(state, &state.jobs[&id], self.runtime().now());
        ClientResponse::Job { job: view }
    }

    async fn submit(&self, user: &str, request: SubmitRequest) -> ClientResponse {
        if let Err(refusal) = self.check_submit(&request) {
            return refusal.into();
        }
        if self.flaws().is_on(Flaw::DropUnsafeSubmit) {
            return self.submit_reserving_first(user, request).await;
        }
        let answer = {
            let mut state = self.lock();
            if let Some(found) = self.find_idempotent(&state, user, &request) {
                found
            } else {
                self.admit(&mut state, user, request).map(|record| {
                    self.inner.store.put(record.clone());
                    self.register(&mut state, record, None)
                })
            }
        };
        match answer {
            Ok(answer) if self.flaws().is_on(Flaw::AckBeforeCommit) => answer,
            Ok(answer) => self.answer_when_durable(answer).await,
            Err(refusal) => refusal.into(),
        }
    }

    /// [`Flaw::DropUnsafeSubmit`]: the queue position is reserved before the
    /// store is awaited and the job registered only after, so a handler
    /// dropped at the await leaves a queue entry that belongs to no job.
    async fn submit_reserving_first(&self, user: &str, request: SubmitRequest) -> ClientResponse {
        let now = self.runtime().now();
        let reserved = {
            let mut state = self.lock();
            if let Some(found) = self.find_idempotent(&state, user, &request) {
                return found.unwrap_or_else(ClientResponse::from);
            }
            let record = match self.admit(&mut state, user, request) {
                Ok(record) => record,
                Err(refusal) => return refusal.into(),
            };
            let pool = state.pool_for(&self.inner.config, super::state::SlotStage::User, &record);
            let holder = State::holder_for(&record, None);
            let ticket = pool.enqueue(holder, record.seq, now, None, GrantOnWithdraw::Release);
            self.inner.store.put(record.clone());
            (
                record,
                pool,
                ticket.detach().expect("a new ticket is not taken"),
            )
        };
        let committed = self.inner.store.commit().await;
        let (record, pool, ticket) = reserved;
        let mut state = self.lock();
        let ticket = SlotTicket::reattach(&pool, ticket, GrantOnWithdraw::Release, now);
        let answer = self.register(&mut state, record, Some(ticket));
        match committed {
            Ok(()) => answer,
            Err(store) => error(ErrorCode::Unavailable, format!("not durable: {store}")).into(),
        }
    }
}
