//! The runtime traits the supervisor and the agent are written against.
//!
//! `core` owns no clock, no socket, no process and no source of randomness.
//! Everything of that kind reaches it through the four traits here:
//!
//! * [`Runtime`]: time, timers, tasks, randomness and buggify sites;
//! * [`Net`]: message-framed connections between nodes;
//! * [`Launcher`]: the processes that run jobs;
//! * the `Store` (durability) lives in `store.rs`.
//!
//! Two implementations exist: the tokio shell in the root package
//! (`src/real/`) and the deterministic simulator (`faultline-sim`). Both must
//! honour the contracts documented on every method, because the simulator is
//! only worth something if the code it tests cannot tell the two apart.
//!
//! Vocabulary used in the contracts:
//! * a **node** is one simulated or real process (a supervisor, an agent, a
//!   client). Each node sees its own `Runtime`, `Net` and `Launcher` handles;
//! * a node is **killed** when its process dies (SIGKILL, power loss, a
//!   simulator fault). Every task of a killed node is dropped at its current
//!   `.await`, without running any further code of it; its connections are
//!   reset; its processes keep running (a real agent's children do) unless the
//!   implementation documents otherwise. A killed node may be **restarted**:
//!   its init code runs again from scratch, with no in-memory state kept.

use std::fmt;
use std::future::Future;
use std::ops::{Add, Sub};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A boxed, sendable future. `core` uses object-safe traits with boxed
/// futures: at the granularity of network messages and job lifecycles the
/// allocation costs nothing measurable, and `Arc<dyn Runtime>` keeps every
/// signature readable.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A point in time as seen by one node, in nanoseconds since the runtime's
/// epoch (the UNIX epoch on tokio; the start of the run in the simulator,
/// shifted by that node's clock skew).
///
/// Monotone per node: two calls to [`Runtime::now`] on the same node never go
/// backwards. Two nodes' instants are only comparable up to their skew.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Instant {
    nanos: u64,
}

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant { nanos: 0 };

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant { nanos }
    }

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Instant {
        Instant {
            nanos: millis.saturating_mul(1_000_000),
        }
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// Milliseconds since the epoch (truncated).
    pub const fn as_millis(self) -> u64 {
        self.nanos / 1_000_000
    }

    /// Seconds since the epoch as a float, for display.
    pub fn as_secs_f64(self) -> f64 {
        self.nanos as f64 / 1e9
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let add = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant {
            nanos: self.nanos.saturating_add(add),
        }
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}s", self.as_secs_f64())
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}s", self.as_secs_f64())
    }
}

/// Time, timers, tasks and randomness for one node.
///
/// Object safe: `core` holds an `Arc<dyn Runtime>`.
pub trait Runtime: Send + Sync + 'static {
    /// The current time on this node. Monotone (see [`Instant`]). In the
    /// simulator it only advances between polls (each poll costs a small
    /// seeded amount of virtual time) and includes the node's clock skew.
    fn now(&self) -> Instant;

    /// A future that completes once `duration` has elapsed on this node's
    /// clock. Timers with the same deadline fire in the order they were
    /// created. Dropping the future cancels the timer. On a killed node the
    /// future is dropped with its task and never completes.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;

    /// Start `future` as a new task of this node, named `name` for traces,
    /// hang reports and leak checks. The task runs until it completes, is
    /// aborted through its handle, or its node is killed. Dropping the
    /// returned handle detaches the task; it does not abort it.
    ///
    /// A panic inside the task is a bug: the simulator reports it as a
    /// failure of the run; the tokio shell logs it and ends the task.
    fn spawn(&self, name: &str, future: BoxFuture<'static, ()>) -> TaskHandle;

    /// A random number. On tokio it comes from the operating system; in the
    /// simulator from the run's seed, so that the same seed gives the same
    /// values in the same order.
    fn random_u64(&self) -> u64;

    /// Whether to take a rare code path at `site` now (FoundationDB's
    /// BUGGIFY). Always `false` on tokio. In the simulator each site is
    /// switched on or off once per run from the seed, and an enabled site
    /// fires with a small probability each time it is asked. Code guarded by
    /// buggify must be *legal* behaviour (an extra delay, a spurious retry),
    /// never a bug.
    fn buggify(&self, site: &'static str) -> bool;
}

/// How a task ended, as reported by [`TaskHandle::join`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TaskOutcome {
    /// The future ran to completion.
    Completed,
    /// The task was aborted through its handle or dropped with its node.
    Aborted,
    /// The future panicked.
    Panicked,
}

/// The runtime's side of a [`TaskHandle`].
pub trait TaskControl: Send + Sync + 'static {
    /// Request that the task stop. The future is dropped at its current
    /// `.await` no later than the next time the runtime would have polled it;
    /// it is never polled again. Aborting a finished task does nothing.
    fn abort(&self);
    /// Whether the task has ended (completed, aborted or panicked).
    fn is_finished(&self) -> bool;
    /// Completes when the task has ended, with how it ended. May be called
    /// any number of times.
    fn join(&self) -> BoxFuture<'static, TaskOutcome>;
}

/// A handle on a spawned task. Dropping it detaches the task.
pub struct TaskHandle {
    control: Arc<dyn TaskControl>,
}

impl TaskHandle {
    /// Wrap a runtime's task control.
    pub fn new(control: impl TaskControl) -> TaskHandle {
        TaskHandle {
            control: Arc::new(control),
        }
    }

    /// Wrap a task control the runtime already shares with the task (its
    /// outcome cell, say), without allocating another one for the handle.
    pub fn from_shared(control: Arc<dyn TaskControl>) -> TaskHandle {
        TaskHandle { control }
    }

    /// See [`TaskControl::abort`].
    pub fn abort(&self) {
        self.control.abort();
    }

    /// See [`TaskControl::is_finished`].
    pub fn is_finished(&self) -> bool {
        self.control.is_finished()
    }

    /// See [`TaskControl::join`].
    pub fn join(&self) -> BoxFuture<'static, TaskOutcome> {
        self.control.join()
    }
}

impl fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Errors of the network traits.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum NetError {
    /// The connection was closed in order by either side; every frame sent
    /// before the close was delivered first.
    #[error("connection closed")]
    Closed,
    /// The connection was reset (peer killed, network reset fault, transport
    /// error); frames in flight may have been lost.
    #[error("connection reset")]
    Reset,
    /// Nothing listens at the address, or it cannot be reached right now
    /// (partition, unknown node).
    #[error("connection refused: {0}")]
    Refused(String),
    /// The address is already taken by another listener on this node.
    #[error("address in use: {0}")]
    AddressInUse(String),
    /// A frame is larger than [`MAX_FRAME_BYTES`]; it was not sent.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Size of the rejected frame.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
}

/// The largest frame any [`Net`] carries. Both implementations refuse
/// larger frames on send and drop (with a reset) connections that receive one.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Message-framed connections between nodes.
///
/// Addresses are strings: `node:port` in the simulator, a URL
/// (`ws://127.0.0.1:7070/agent`) on tokio.
pub trait Net: Send + Sync + 'static {
    /// Start accepting connections on `port` of this node.
    /// Fails with [`NetError::AddressInUse`] if the port is taken. When the
    /// node is killed the listener is gone; a restarted node listens again.
    fn listen(&self, port: u16) -> Result<Box<dyn Listener>, NetError>;

    /// Open a connection to `addr`. Fails with [`NetError::Refused`] if no
    /// listener is there or the peer cannot be reached.
    fn connect(&self, addr: &str) -> BoxFuture<'static, Result<Connection, NetError>>;
}

/// The accepting side of [`Net::listen`]. Dropping it stops listening.
pub trait Listener: Send {
    /// The next incoming connection. Cancel-safe: dropping the future loses
    /// no connection.
    fn accept(&mut self) -> BoxFuture<'_, Result<Connection, NetError>>;
}

/// One end of an established connection: a cloneable sender and a receiver.
pub struct Connection {
    /// Sends frames to the peer.
    pub sender: FrameSender,
    /// Receives frames from the peer, in order.
    pub receiver: FrameReceiver,
    /// The peer's address or name, for logs.
    pub peer: String,
}

/// The transport's side of a [`FrameSender`].
pub trait SendFrames: Send + Sync + 'static {
    /// Queue `frame` for delivery. Never blocks and never awaits, so no
    /// caller can be dropped half way through a send. `Ok` means queued, not
    /// delivered: the network may still lose it (loss fault, reset, killed
    /// peer). Fails with `Closed`/`Reset` once the connection is known to be
    /// over, and with `FrameTooLarge` without sending.
    fn send(&self, frame: Vec<u8>) -> Result<(), NetError>;
    /// Close the connection in order: frames queued before are still
    /// delivered, then the peer's receiver returns [`NetError::Closed`].
    /// Idempotent.
    fn close(&self);
    /// Whether this end knows the connection is over.
    fn is_closed(&self) -> bool;
}

/// The transport's side of a [`FrameReceiver`].
pub trait RecvFrames: Send + 'static {
    /// The next frame, in the order the peer sent them (the network may
    /// still duplicate or lose frames under faults; reordering within one
    /// connection only happens under an explicit reorder fault). Returns
    /// `Err(Closed)` after an orderly close and `Err(Reset)` after a reset,
    /// forever after. Cancel-safe: dropping the future loses no frame.
    fn recv(&mut self) -> BoxFuture<'_, Result<Vec<u8>, NetError>>;
}

/// Cloneable sending half of a [`Connection`].
#[derive(Clone)]
pub struct FrameSender {
    inner: Arc<dyn SendFrames>,
}

impl FrameSender {
    /// Wrap a transport's sender.
    pub fn new(inner: Arc<dyn SendFrames>) -> FrameSender {
        FrameSender { inner }
    }
    /// See [`SendFrames::send`].
    pub fn send(&self, frame: Vec<u8>) -> Result<(), NetError> {
        self.inner.send(frame)
    }
    /// See [`SendFrames::close`].
    pub fn close(&self) {
        self.inner.close();
    }
    /// See [`SendFrames::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl fmt::Debug for FrameSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Receiving half of a [`Connection`].
pub struct FrameReceiver {
    inner: Box<dyn RecvFrames>,
}

impl FrameReceiver {
    /// Wrap a transport's receiver.
    pub fn new(inner: Box<dyn RecvFrames>) -> FrameReceiver {
        FrameReceiver { inner }
    }
    /// See [`RecvFrames::recv`].
    pub fn recv(&mut self) -> BoxFuture<'_, Result<Vec<u8>, NetError>> {
        self.inner.recv()
    }
}

impl fmt::Debug for FrameReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameReceiver")
    }
}

/// What a [`Launcher`] is asked to start.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// The job this process runs, for logs and process naming.
    pub job_id: String,
    /// The run (attempt) of the job this process belongs to.
    pub run_id: u64,
    /// Program and arguments. Never empty.
    pub command: Vec<String>,
}

/// How a process ended.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ProcessExit {
    /// Exit code, if the process exited by itself.
    pub code: Option<i32>,
    /// Signal number, if a signal ended it (including our own kill).
    pub signal: Option<i32>,
    /// The last few KiB of stdout and stderr, interleaved as captured.
    pub output_tail: String,
}

impl ProcessExit {
    /// Whether the process exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none()
    }
}

/// Errors of [`Launcher::start`].
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LaunchError {
    /// The command is empty or names no runnable program.
    #[error("cannot start {command:?}: {reason}")]
    CannotStart {
        /// The command as given.
        command: Vec<String>,
        /// Why it cannot start.
        reason: String,
    },
}

/// Starts the processes that run jobs (on an agent's node).
pub trait Launcher: Send + Sync + 'static {
    /// Start a process for `spec`. Resolves once the process exists (or
    /// failed to), not when it ends.
    fn start(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Arc<dyn Process>, LaunchError>>;
}

/// A started process.
///
/// If the launching node is killed, its processes die with it: the tokio
/// launcher sets each job's parent-death signal (the kernel kills the job's
/// process when the agent dies) and kills whatever the job left in its
/// process group when it ends; the simulator ends them with the node. An agent that comes
/// back therefore runs nothing it does not know of, and the supervisor
/// settles the jobs the agent no longer declares.
pub trait Process: Send + Sync + 'static {
    /// An identifier unique on this node (the pid on tokio).
    fn id(&self) -> u64;
    /// Completes when the process has ended. May be called any number of
    /// times and after the end; every call gives the same exit. Cancel-safe.
    fn wait(&self) -> BoxFuture<'static, ProcessExit>;
    /// Kill the process (and, on tokio, its whole process group). Idempotent;
    /// killing a process that already ended does nothing. `wait` then
    /// resolves with the signal recorded, unless the process ended first.
    fn kill(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_arithmetic_saturates() {
        let a = Instant::from_millis(1_500);
        assert_eq!((a + Duration::from_millis(500)).as_millis(), 2_000);
        assert_eq!(a - Instant::from_millis(2_000), Duration::ZERO);
        assert_eq!(
            Instant::from_nanos(u64::MAX) + Duration::from_secs(1),
            Instant::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn instant_displays_seconds() {
        assert_eq!(Instant::from_millis(12_301).to_string(), "12.301000s");
    }
}
