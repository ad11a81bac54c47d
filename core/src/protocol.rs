//! The wire protocol: client ↔ supervisor and agent ↔ supervisor.
//!
//! Every message is a serde type wrapped in a versioned [`Envelope`] and
//! encoded by the one [`codec`](crate::codec). The same bytes travel over the
//! simulator's network and over HTTP/WebSocket in production, so the codec and
//! its error paths are exercised by every simulated run.
//!
//! Client requests are request/response: in production one HTTP request per
//! [`ClientRequest`] (the JSON body is the request), in the simulator one frame
//! each way over a client connection.
//!
//! Agent traffic is a long-lived connection (a WebSocket in production). The
//! agent speaks first with [`AgentMessage::Hello`]; the supervisor answers
//! [`SupervisorMessage::Welcome`] or [`SupervisorMessage::Rejected`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// The protocol version spoken by this build. A peer announcing another
/// version is refused with a clear reason.
pub const PROTOCOL_VERSION: u32 = 1;

/// Identifies a job: `j-<n>`, unique for the lifetime of a supervisor's store.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies an agent: chosen by its operator (`a-1`, a host name).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub String);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one run (attempt) of a job. Runs of the same job have
/// increasing ids; every agent message about a job names its run so that
/// messages about an earlier run can never affect a later one.
pub type RunId = u64;

/// The kind of a job, which selects its slot pool.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Runs alone on its agent's sequential lane.
    Sequential,
    /// Runs beside other parallel jobs.
    Parallel,
}

impl JobKind {
    /// Every kind, in a fixed order.
    pub const ALL: [JobKind; 2] = [JobKind::Sequential, JobKind::Parallel];

    /// The lowercase name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Sequential => "sequential",
            JobKind::Parallel => "parallel",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<JobKind, String> {
        match s {
            "sequential" => Ok(JobKind::Sequential),
            "parallel" => Ok(JobKind::Parallel),
            other => Err(format!(
                "unknown job kind `{other}` (expected `sequential` or `parallel`)"
            )),
        }
    }
}

/// A job's status. `Pending → Running → {Completed, Failed, Canceled,
/// TimedOut, Lost}`; a pending job may also go straight to `Canceled` (or
/// `TimedOut` if it waited past its limit). Terminal statuses are final.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted and queued, waiting for slots and an agent.
    Pending,
    /// Dispatched to an agent (starting or running there).
    Running,
    /// The process exited with code 0.
    Completed,
    /// The process exited non-zero, was killed by a signal we did not send,
    /// or could not be started.
    Failed,
    /// Canceled by its owner before it finished.
    Canceled,
    /// Ran (or waited) longer than its limit and was stopped.
    TimedOut,
    /// Its agent vanished (connection lost past the heartbeat grace, or the
    /// agent came back without it) and its outcome is unknown.
    Lost,
}

impl JobStatus {
    /// Whether the status is final.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Pending | JobStatus::Running)
    }

    /// The snake_case name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Lost => "lost",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A versioned wrapper around every message on the wire.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The message.
    pub body: T,
}

// ---------------------------------------------------------------------------
// Client ↔ supervisor
// ---------------------------------------------------------------------------

/// What a client submits.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// The job's kind.
    pub kind: JobKind,
    /// Program and arguments; must not be empty.
    pub command: Vec<String>,
    /// Maximum run time in milliseconds; capped by the owner's plan and the
    /// kind's limit. `None` takes the smaller of those.
    #[serde(default)]
    pub max_run_ms: Option<u64>,
    /// A client-chosen key: a retried submit with the same key (same owner)
    /// returns the job created by the first one instead of a second job.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A request from an authenticated client. The owner is not part of the
/// request: it comes from the credentials the transport checked.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientRequest {
    /// Create a job.
    Submit(SubmitRequest),
    /// One job's view.
    Status {
        /// The job.
        job: JobId,
    },
    /// Cancel a job. Acknowledged once the cancel is recorded; the job's
    /// status then becomes `Canceled` (or stays whatever terminal status won
    /// the race).
    Cancel {
        /// The job.
        job: JobId,
    },
    /// The caller's jobs, oldest first.
    List,
    /// The resource overview (ops, pools, agents) for the caller.
    Overview,
}

/// One client call over a [`Net`](crate::runtime::Net) connection (the
/// simulator's clients): the client sends one `ClientCall` frame and the
/// supervisor answers one [`ClientResponse`] frame. In production the token
/// travels in the HTTP `Authorization` header and the body is the request.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClientCall {
    /// The caller's secret.
    pub token: String,
    /// The request.
    pub request: ClientRequest,
}

/// How a job's process ended, as reported to clients.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, if the process exited by itself.
    pub code: Option<i32>,
    /// Signal, if one ended it.
    pub signal: Option<i32>,
    /// Tail of the process's output.
    pub output_tail: String,
}

/// A job as clients see it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// The job's id.
    pub id: JobId,
    /// Its owner (user name).
    pub owner: String,
    /// Its kind.
    pub kind: JobKind,
    /// Its command.
    pub command: Vec<String>,
    /// Its status now.
    pub status: JobStatus,
    /// 1-based position in its kind's queue while pending, if queued.
    pub queue_position: Option<u32>,
    /// The effective max run time in milliseconds.
    pub max_run_ms: u64,
    /// Number of runs started so far.
    pub attempts: u32,
    /// The agent running it (or that ran it last).
    pub agent: Option<AgentId>,
    /// What the job waits for right now, if anything.
    pub situation: Option<String>,
    /// Milliseconds since the epoch when it was accepted.
    pub created_ms: u64,
    /// When its current/last run started.
    pub started_ms: Option<u64>,
    /// When it reached a terminal status.
    pub finished_ms: Option<u64>,
    /// How its process ended, once terminal (when known).
    pub exit: Option<ExitInfo>,
    /// A human-readable reason for a terminal status other than `Completed`.
    pub reason: Option<String>,
}

/// Why a client request failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed or invalid request (HTTP 400).
    BadRequest,
    /// No valid credentials (HTTP 401).
    Unauthorized,
    /// No such job for this caller (HTTP 404). Another user's job is
    /// reported as not found, never as forbidden.
    NotFound,
    /// The request or a frame is too large (HTTP 413).
    TooLarge,
    /// A limit of the caller's plan refuses the request (HTTP 429).
    LimitExceeded,
    /// The supervisor is shutting down or recovering (HTTP 503).
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status the tokio shell answers with. The one place where
    /// error categories map to HTTP.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::LimitExceeded => 429,
            ErrorCode::Unavailable => 503,
        }
    }
}

/// The supervisor's answer to a [`ClientRequest`].
// One response is built per request and moved once; boxing the job view
// would only make every constructor noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ClientResponse {
    /// A job (answer to submit, status and cancel).
    Job {
        /// The job.
        job: JobView,
    },
    /// The caller's jobs.
    Jobs {
        /// The jobs, oldest first.
        jobs: Vec<JobView>,
    },
    /// The resource overview, as JSON (the supervisor's snapshot type).
    Overview {
        /// The overview.
        overview: serde_json::Value,
    },
    /// The request failed.
    Error {
        /// Category.
        code: ErrorCode,
        /// What was wrong, for humans.
        message: String,
    },
}

// ---------------------------------------------------------------------------
// Agent ↔ supervisor
// ---------------------------------------------------------------------------

/// A job an agent still runs, declared in its hello for reconciliation.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RunningJob {
    /// The job.
    pub job: JobId,
    /// The run the agent is executing.
    pub run: RunId,
}

/// Messages from an agent to the supervisor.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// First message on every connection.
    Hello {
        /// The agent's id.
        agent: AgentId,
        /// The agent's secret.
        token: String,
        /// Kinds it accepts.
        kinds: Vec<JobKind>,
        /// How many jobs it runs at once.
        slots: u32,
        /// Jobs it still runs (after a reconnect).
        running: Vec<RunningJob>,
    },
    /// Liveness, every heartbeat interval.
    Heartbeat {
        /// Increases by one per heartbeat on a connection.
        seq: u64,
    },
    /// The process for `run` has started.
    Started {
        /// The job.
        job: JobId,
        /// The run.
        run: RunId,
    },
    /// The process for `run` has ended (or could not start).
    Finished {
        /// The job.
        job: JobId,
        /// The run.
        run: RunId,
        /// How it ended.
        exit: ExitInfo,
        /// Whether it ended because the supervisor asked to kill it.
        killed: bool,
    },
}

/// Messages from the supervisor to an agent.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorMessage {
    /// The hello was accepted; `session` identifies this connection.
    Welcome {
        /// Connection generation for this agent; increases on each accept.
        session: u64,
        /// How often to heartbeat, in milliseconds.
        heartbeat_ms: u64,
        /// Runs from the hello the supervisor does not want: kill them.
        kill: Vec<RunningJob>,
    },
    /// Answer to [`AgentMessage::Heartbeat`]. An agent that has heard
    /// nothing from the supervisor for its grace period reconnects.
    HeartbeatAck {
        /// The heartbeat's sequence number.
        seq: u64,
    },
    /// The hello was refused; the connection is closed after this.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Start a process for this run.
    Run {
        /// The job.
        job: JobId,
        /// The run.
        run: RunId,
        /// The job's kind: an agent refuses (with a failed `Finished`) a kind
        /// it did not declare in its hello.
        kind: JobKind,
        /// Program and arguments.
        command: Vec<String>,
    },
    /// Kill the process of this run, if it still runs.
    Kill {
        /// The job.
        job: JobId,
        /// The run.
        run: RunId,
    },
}
