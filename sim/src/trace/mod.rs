//! The trace: every event of a run, stamped with virtual time, node and
//! task, folded into a fingerprint (the determinism check) and optionally
//! kept for export.
//!
//! * [`hash`]: the fixed 64-bit `Fingerprint`;
//! * `layer`: the `tracing` layer that captures what the code under test
//!   logs, with the fields of its enclosing spans;
//! * [`export`]: text lines and Chrome trace-event JSON (Perfetto).
//!
//! Two sources write to the trace: the program (through `tracing`, captured
//! by the layer, which the simulator installs as the thread's default
//! subscriber only while it polls a task) and the simulator itself (faults,
//! lost frames, buggify, panics), which writes directly. Polls are folded
//! into a separate fingerprint by the executor; [`Trace::hash`](crate::Trace::hash)
//! combines both.

pub mod export;
pub mod hash;
pub(crate) mod layer;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use faultline_core::runtime::Instant;
use tracing::level_filters::LevelFilter;
use tracing::Level;

use crate::ids::{NodeId, TaskId};
use hash::Fingerprint;

/// What a trace keeps besides its fingerprint (which is always computed).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TraceCapture {
    /// The fingerprint, the event count and the last lines only: the
    /// fastest, for fuzzing.
    HashOnly,
    /// Every event, for replay and text export.
    Events,
    /// Every event and every poll (polls become slices in the Chrome
    /// export).
    Full,
}

/// How the trace is captured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceConfig {
    /// What is kept. Default: [`TraceCapture::HashOnly`].
    pub capture: TraceCapture,
    /// The most verbose level captured (and hashed). Default: `DEBUG`.
    pub level: Level,
    /// How many of the last events are kept in every capture mode, for
    /// failure reports. Default: 200.
    pub tail_lines: usize,
}

impl Default for TraceConfig {
    fn default() -> TraceConfig {
        TraceConfig {
            capture: TraceCapture::HashOnly,
            level: Level::DEBUG,
            tail_lines: 200,
        }
    }
}

/// Who wrote a trace record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// The code under test, through `tracing`.
    Program,
    /// The simulator (faults, network decisions, buggify, panics).
    Simulator,
}

/// One event of the trace.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TraceRecord {
    /// Global virtual time.
    pub time: Instant,
    /// The node it happened on, if any.
    pub node: Option<NodeId>,
    /// That node's name.
    pub node_name: Option<Arc<str>>,
    /// The task that was being polled, if any.
    pub task: Option<TaskId>,
    /// That task's name.
    pub task_name: Option<Arc<str>>,
    /// Its level.
    pub level: Level,
    /// Who wrote it.
    pub source: Source,
    /// Enclosing spans with their fields, then the message and fields:
    /// `op{job=j-1}: reply sent seq=3`.
    pub text: String,
}

impl TraceRecord {
    /// The record as one line of the text export.
    pub fn line(&self) -> String {
        let mut line = String::new();
        self.write_line(&mut line)
            .expect("writing to a String cannot fail");
        line
    }

    fn write_line(&self, out: &mut String) -> fmt::Result {
        write!(out, "{:>14} ", self.time.to_string())?;
        match (&self.node_name, self.node) {
            (Some(name), _) => out.push_str(name),
            (None, Some(node)) => write!(out, "{node}")?,
            (None, None) => out.push('-'),
        }
        match (&self.task_name, self.task) {
            (Some(name), Some(task)) => write!(out, "/{name}#{}", task.as_u64())?,
            (None, Some(task)) => write!(out, "/{task}")?,
            _ => {}
        }
        let source = match self.source {
            Source::Program => "",
            Source::Simulator => " sim:",
        };
        write!(out, " {:>5}{source} {}", self.level.as_str(), self.text)
    }
}

/// One poll of a task, kept with [`TraceCapture::Full`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PollRecord {
    /// When the poll started (global virtual time).
    pub time: Instant,
    /// The virtual time it cost.
    pub cost: Duration,
    /// The task's node.
    pub node: NodeId,
    /// The task.
    pub task: TaskId,
}

const NO_NODE: u32 = u32::MAX;
const NO_TASK: u64 = 0;

/// Where the executor is: read by the layer to stamp events.
struct Stamp {
    time_nanos: AtomicU64,
    node: AtomicU32,
    task: AtomicU64,
    task_slot: AtomicU32,
}

/// The trace of one run, shared by the layer, the world and the executor.
pub(crate) struct TraceSink {
    stamp: Stamp,
    level: LevelFilter,
    /// Whether task names can ever be read: by kept records, the tail, or
    /// the polls of the Chrome export. Not with a hash-only trace without a
    /// tail, which then skips naming tasks (and its lock) altogether.
    names_needed: bool,
    buffer: Mutex<TraceBuffer>,
}

struct TraceBuffer {
    capture: TraceCapture,
    fingerprint: Fingerprint,
    events: u64,
    /// Every record, unless `HashOnly`.
    records: Vec<TraceRecord>,
    /// The last records, with `HashOnly` (otherwise `records` has them).
    tail: VecDeque<TraceRecord>,
    tail_max: usize,
    /// Reused to format each event without allocating.
    scratch: String,
    node_names: Vec<Arc<str>>,
    /// Names of live tasks (of every task with `Full`).
    task_names: TaskNames,
    /// Sometimes-probes reached: events with a `probe` field, by its value.
    probes: BTreeMap<String, u64>,
}

impl TraceSink {
    pub fn new(config: TraceConfig) -> TraceSink {
        TraceSink {
            stamp: Stamp {
                time_nanos: AtomicU64::new(0),
                node: AtomicU32::new(NO_NODE),
                task: AtomicU64::new(NO_TASK),
                task_slot: AtomicU32::new(0),
            },
            level: LevelFilter::from_level(config.level),
            names_needed: config.capture != TraceCapture::HashOnly || config.tail_lines > 0,
            buffer: Mutex::new(TraceBuffer {
                capture: config.capture,
                fingerprint: Fingerprint::new(),
                events: 0,
                records: Vec::new(),
                tail: VecDeque::with_capacity(config.tail_lines.min(4096)),
                tail_max: config.tail_lines,
                scratch: String::with_capacity(256),
                node_names: Vec::new(),
                task_names: TaskNames::default(),
                probes: BTreeMap::new(),
            }),
        }
    }

    fn buffer(&self) -> MutexGuard<'_, TraceBuffer> {
        self.buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether events at `level` are captured.
    pub fn enabled(&self, level: &Level) -> bool {
        self.level >= *level
    }

    /// The most verbose level captured.
    pub fn level(&self) -> LevelFilter {
        self.level
    }

    /// The executor is about to poll `task` of `node` at `time`.
    pub fn stamp_poll(&self, time: Instant, node: NodeId, task: TaskId) {
        self.stamp
            .time_nanos
            .store(time.as_nanos(), Ordering::Relaxed);
        self.stamp.node.store(node.0, Ordering::Relaxed);
        self.stamp.task.store(task.as_u64(), Ordering::Relaxed);
        self.stamp
            .task_slot
            .store(task.slot_u32(), Ordering::Relaxed);
    }

    /// No task is being polled; the clock reads `time`.
    pub fn stamp_idle(&self, time: Instant) {
        self.stamp
            .time_nanos
            .store(time.as_nanos(), Ordering::Relaxed);
        self.stamp.node.store(NO_NODE, Ordering::Relaxed);
        self.stamp.task.store(NO_TASK, Ordering::Relaxed);
    }

    pub fn name_node(&self, node: NodeId, name: &Arc<str>) {
        let mut buffer = self.buffer();
        assert_eq!(
            buffer.node_names.len(),
            node.index(),
            "nodes are named in id order"
        );
        buffer.node_names.push(Arc::clone(name));
    }

    pub fn name_task(&self, task: TaskId, name: &Arc<str>) {
        if !self.names_needed {
            return;
        }
        let mut buffer = self.buffer();
        let keep_ended = buffer.capture == TraceCapture::Full;
        buffer.task_names.name(task, name, keep_ended);
    }

    /// `task` ended; its name is no longer needed unless polls are kept.
    pub fn forget_task(&self, task: TaskId) {
        if !self.names_needed {
            return;
        }
        let mut buffer = self.buffer();
        let keep_ended = buffer.capture == TraceCapture::Full;
        buffer.task_names.forget(task, keep_ended);
    }

    /// Record an event of the simulator itself.
    pub fn record_simulator(
        &self,
        time: Instant,
        node: Option<NodeId>,
        level: Level,
        message: fmt::Arguments<'_>,
    ) {
        if !self.enabled(&level) {
            return;
        }
        let mut buffer = self.buffer();
        let mut text = std::mem::take(&mut buffer.scratch);
        text.clear();
        text.write_fmt(message)
            .expect("writing to a String cannot fail");
        buffer.record(time, node, None, level, Source::Simulator, &text);
        buffer.scratch = text;
    }

    /// Record an event of the program, stamped with where the executor is.
    /// `write` formats the event's text.
    pub fn record_program(&self, level: Level, write: impl FnOnce(&mut String)) {
        let time = Instant::from_nanos(self.stamp.time_nanos.load(Ordering::Relaxed));
        let node = match self.stamp.node.load(Ordering::Relaxed) {
            NO_NODE => None,
            node => Some(NodeId(node)),
        };
        let task = match self.stamp.task.load(Ordering::Relaxed) {
            NO_TASK => None,
            task => Some(TaskId::new(
                task,
                self.stamp.task_slot.load(Ordering::Relaxed),
            )),
        };
        let mut buffer = self.buffer();
        let mut text = std::mem::take(&mut buffer.scratch);
        text.clear();
        write(&mut text);
        buffer.record(time, node, task, level, Source::Program, &text);
        buffer.scratch = text;
    }

    /// Count one event naming the sometimes-probe `name`.
    pub fn count_probe(&self, name: &str) {
        let mut buffer = self.buffer();
        match buffer.probes.get_mut(name) {
            Some(count) => *count += 1,
            None => {
                buffer.probes.insert(name.to_owned(), 1);
            }
        }
    }

    /// How many events named each sometimes-probe.
    pub fn probes(&self) -> BTreeMap<String, u64> {
        self.buffer().probes.clone()
    }

    /// The fingerprint of every record so far.
    pub fn fingerprint(&self) -> u64 {
        self.buffer().fingerprint.value()
    }

    /// How many records were captured.
    pub fn event_count(&self) -> u64 {
        self.buffer().events
    }

    /// Every kept record (empty with `HashOnly`).
    pub fn records(&self) -> Vec<TraceRecord> {
        self.buffer().records.clone()
    }

    /// The last `count` records, oldest first (at most `tail_lines` with
    /// `HashOnly`).
    pub fn tail(&self, count: usize) -> Vec<TraceRecord> {
        let buffer = self.buffer();
        if buffer.capture == TraceCapture::HashOnly {
            let skip = buffer.tail.len().saturating_sub(count);
            buffer.tail.iter().skip(skip).cloned().collect()
        } else {
            let skip = buffer.records.len().saturating_sub(count);
            buffer.records[skip..].to_vec()
        }
    }

    /// Node names by id, and the names of known tasks.
    pub fn names(&self) -> (Vec<Arc<str>>, BTreeMap<TaskId, Arc<str>>) {
        let buffer = self.buffer();
        (buffer.node_names.clone(), buffer.task_names.to_map())
    }
}

impl TraceBuffer {
    fn record(
        &mut self,
        time: Instant,
        node: Option<NodeId>,
        task: Option<TaskId>,
        level: Level,
        source: Source,
        text: &str,
    ) {
        self.events += 1;
        let fingerprint = &mut self.fingerprint;
        fingerprint.write_u64(time.as_nanos());
        fingerprint.write_u64(node.map_or(0, |node| u64::from(node.0) + 1));
        fingerprint.write_u64(task.map_or(0, TaskId::as_u64));
        fingerprint.write_u64(level_number(level));
        fingerprint.write_u64(match source {
            Source::Program => 1,
            Source::Simulator => 2,
        });
        fingerprint.write_bytes(text.as_bytes());
        if self.capture == TraceCapture::HashOnly && self.tail_max == 0 {
            return;
        }
        let node_name = node.and_then(|node| self.node_names.get(node.index()).cloned());
        let task_name = task.and_then(|task| self.task_names.get(task).cloned());
        let full = self.capture != TraceCapture::HashOnly;
        // In the tail, reuse the oldest record's text buffer once it is full.
        let mut kept = if !full && self.tail.len() >= self.tail_max {
            self.tail
                .pop_front()
                .expect("a full tail is not empty")
                .text
        } else {
            String::new()
        };
        kept.clear();
        kept.push_str(text);
        let record = TraceRecord {
            time,
            node,
            node_name,
            task,
            task_name,
            level,
            source,
            text: kept,
        };
        if full {
            self.records.push(record);
        } else {
            self.tail.push_back(record);
        }
    }
}

/// Task names: those of live tasks by slot (a slot serves one live task at
/// a time), and those of ended tasks when they are kept.
#[derive(Default)]
struct TaskNames {
    live: Vec<Option<(TaskId, Arc<str>)>>,
    ended: BTreeMap<TaskId, Arc<str>>,
}

impl TaskNames {
    /// Name the new task `task`; a name still in its slot belongs to an
    /// ended task, kept if `keep_ended`.
    fn name(&mut self, task: TaskId, name: &Arc<str>, keep_ended: bool) {
        let slot = task.slot();
        if self.live.len() <= slot {
            self.live.resize_with(slot + 1, || None);
        }
        if let Some((previous, name)) = self.live[slot].replace((task, Arc::clone(name))) {
            if keep_ended && previous != task {
                self.ended.insert(previous, name);
            }
        }
    }

    /// `task` ended: drop its name, or keep it with the ended ones.
    fn forget(&mut self, task: TaskId, keep_ended: bool) {
        let Some(entry) = self.live.get_mut(task.slot()) else {
            return;
        };
        if entry.as_ref().is_some_and(|(live, _)| *live == task) {
            let (_, name) = entry.take().expect("checked above");
            if keep_ended {
                self.ended.insert(task, name);
            }
        }
    }

    fn get(&self, task: TaskId) -> Option<&Arc<str>> {
        match self.live.get(task.slot()) {
            Some(Some((live, name))) if *live == task => Some(name),
            _ => self.ended.get(&task),
        }
    }

    /// Every known name, by task.
    fn to_map(&self) -> BTreeMap<TaskId, Arc<str>> {
        let mut names = self.ended.clone();
        for (task, name) in self.live.iter().flatten() {
            names.insert(*task, Arc::clone(name));
        }
        names
    }
}

fn level_number(level: Level) -> u64 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_only_trace_without_a_tail_names_no_task() {
        let name: Arc<str> = Arc::from("worker");
        let task = TaskId::new(1, 0);
        let names = |capture, tail_lines| {
            let sink = TraceSink::new(TraceConfig {
                capture,
                tail_lines,
                ..TraceConfig::default()
            });
            sink.name_task(task, &name);
            sink.names().1.len()
        };
        assert_eq!(names(TraceCapture::HashOnly, 0), 0);
        assert_eq!(names(TraceCapture::HashOnly, 10), 1);
        assert_eq!(names(TraceCapture::Events, 0), 1);
    }

    #[test]
    fn ended_task_names_are_kept_only_when_asked() {
        let name: Arc<str> = Arc::from("worker");
        let first = TaskId::new(1, 0);
        let second = TaskId::new(2, 0);
        for keep_ended in [false, true] {
            let mut names = TaskNames::default();
            names.name(first, &name, keep_ended);
            assert_eq!(names.get(first).map(|name| &**name), Some("worker"));
            names.forget(first, keep_ended);
            names.name(second, &Arc::from("reader"), keep_ended);
            assert_eq!(names.get(first).is_some(), keep_ended);
            assert_eq!(names.get(second).map(|name| &**name), Some("reader"));
            assert_eq!(names.to_map().len(), if keep_ended { 2 } else { 1 });
        }
    }
}
