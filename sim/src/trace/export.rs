//! Trace export: text lines, and Chrome trace-event JSON that loads in
//! Perfetto (`ui.perfetto.dev`) and `chrome://tracing`.
//!
//! In the Chrome export each node is a process and each task a thread;
//! program events are instant events on their task's thread, simulator
//! events (faults) are global instant events, and with
//! [`TraceCapture::Full`](super::TraceCapture::Full) every poll is a slice
//! whose length is its virtual cost. Timestamps are virtual microseconds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{PollRecord, Source, TraceRecord};
use crate::ids::TaskId;

/// The records as text, one line each.
pub fn text(records: &[TraceRecord]) -> String {
    let mut out = String::new();
    for record in records {
        out.push_str(&record.line());
        out.push('\n');
    }
    out
}

/// Process id of the simulator's own events in the Chrome export.
const SIMULATOR_PID: u64 = 0;

/// The records and polls as a Chrome trace-event JSON document.
pub fn chrome_json(
    records: &[TraceRecord],
    polls: &[PollRecord],
    node_names: &[Arc<str>],
    task_names: &BTreeMap<TaskId, Arc<str>>,
) -> String {
    let mut events: Vec<Value> =
        Vec::with_capacity(records.len() + polls.len() + node_names.len() + 1);
    events.push(json!({
        "ph": "M", "name": "process_name", "pid": SIMULATOR_PID,
        "args": { "name": "simulator" },
    }));
    for (index, name) in node_names.iter().enumerate() {
        events.push(json!({
            "ph": "M", "name": "process_name", "pid": index as u64 + 1,
            "args": { "name": &**name },
        }));
    }
    let mut threads: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for poll in polls {
        let name = task_names.get(&poll.task).map_or("?", |name| &**name);
        threads
            .entry((poll.node.index() as u64 + 1, poll.task.as_u64()))
            .or_insert_with(|| format!("{name}#{}", poll.task.as_u64()));
        events.push(json!({
            "ph": "X", "name": name, "cat": "poll",
            "ts": micros(poll.time.as_nanos()),
            "dur": micros(u64::try_from(poll.cost.as_nanos()).unwrap_or(u64::MAX)),
            "pid": poll.node.index() as u64 + 1, "tid": poll.task.as_u64(),
        }));
    }
    for record in records {
        events.push(record_event(record, &mut threads));
    }
    for ((pid, tid), name) in threads {
        events.push(json!({
            "ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
            "args": { "name": name },
        }));
    }
    let document = json!({ "traceEvents": events, "displayTimeUnit": "ms" });
    serde_json::to_string(&document).expect("a JSON value always serialises")
}

fn record_event(record: &TraceRecord, threads: &mut BTreeMap<(u64, u64), String>) -> Value {
    let pid = record
        .node
        .map_or(SIMULATOR_PID, |node| node.index() as u64 + 1);
    let tid = record.task.map_or(0, TaskId::as_u64);
    if let (Some(task), Some(name)) = (record.task, &record.task_name) {
        threads
            .entry((pid, task.as_u64()))
            .or_insert_with(|| format!("{name}#{}", task.as_u64()));
    }
    let (category, scope) = match (record.source, record.node) {
        (Source::Simulator, None) => ("simulator", "g"),
        (Source::Simulator, Some(_)) => ("simulator", "p"),
        (Source::Program, _) => ("program", "t"),
    };
    json!({
        "ph": "i", "s": scope, "cat": category,
        "name": short_name(&record.text),
        "ts": micros(record.time.as_nanos()),
        "pid": pid, "tid": tid,
        "args": { "level": record.level.as_str(), "text": &record.text },
    })
}

fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1_000.0
}

/// The event's name in the timeline: its text without span prefixes,
/// shortened.
fn short_name(text: &str) -> String {
    let message = text.rsplit(": ").next().unwrap_or(text);
    let mut name: String = message.chars().take(60).collect();
    if message.chars().count() > 60 {
        name.push('…');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use faultline_core::runtime::Instant;
    use std::time::Duration;
    use tracing::Level;

    fn record(text: &str, source: Source, node: Option<NodeId>) -> TraceRecord {
        TraceRecord {
            time: Instant::from_millis(1_500),
            node,
            node_name: node.map(|_| Arc::from("alpha")),
            task: node.map(|_| TaskId::new(7, 0)),
            task_name: node.map(|_| Arc::from("sender")),
            level: Level::INFO,
            source,
            text: text.to_owned(),
        }
    }

    #[test]
    fn text_lines_carry_time_node_task_and_level() {
        let lines = text(&[record(
            "op{job=1}: sent seq=3",
            Source::Program,
            Some(NodeId(0)),
        )]);
        assert_eq!(
            lines,
            "     1.500000s alpha/sender#7  INFO op{job=1}: sent seq=3\n"
        );
    }

    #[test]
    fn chrome_export_is_valid_trace_event_json() {
        let records = [
            record("op{job=1}: sent seq=3", Source::Program, Some(NodeId(0))),
            record("partition {alpha} | {beta}", Source::Simulator, None),
        ];
        let polls = [PollRecord {
            time: Instant::from_millis(1),
            cost: Duration::from_micros(5),
            node: NodeId(0),
            task: TaskId::new(7, 0),
        }];
        let names = [Arc::from("alpha")];
        let tasks = BTreeMap::from([(TaskId::new(7, 0), Arc::from("sender"))]);
        let document: Value = serde_json::from_str(&chrome_json(&records, &polls, &names, &tasks))
            .expect("valid JSON");
        let events = document["traceEvents"].as_array().expect("an event array");
        let instant = events
            .iter()
            .find(|event| event["ph"] == "i" && event["cat"] == "program")
            .expect("the program event");
        assert_eq!(instant["ts"], 1_500_000.0);
        assert_eq!(instant["pid"], 1);
        assert_eq!(instant["tid"], 7);
        assert_eq!(instant["name"], "sent seq=3");
        let slice = events
            .iter()
            .find(|event| event["ph"] == "X")
            .expect("the poll");
        assert_eq!(slice["dur"], 5.0);
        assert!(events
            .iter()
            .any(|event| event["name"] == "thread_name" && event["args"]["name"] == "sender#7"));
        assert!(events
            .iter()
            .any(|event| event["s"] == "g" && event["cat"] == "simulator"));
    }
}
