//! [`Trace`]: what a run leaves behind, read through [`Sim::trace`].

use crate::sim::Sim;
use crate::trace::hash::combine;
use crate::trace::{export, TraceRecord};

/// A view of the run's trace.
pub struct Trace<'a> {
    sim: &'a Sim,
}

impl Sim {
    /// The run's trace.
    pub fn trace(&self) -> Trace<'_> {
        Trace { sim: self }
    }
}

impl Trace<'_> {
    /// The determinism fingerprint: every captured event (virtual time,
    /// node, task, level, text with span fields) and every poll (time and
    /// task), folded with a fixed hash. Two runs of the same program with
    /// the same seed and configuration have the same hash, in any process
    /// and build.
    pub fn hash(&self) -> u64 {
        combine(
            self.sim.trace.fingerprint(),
            self.sim.executor.poll_fingerprint.value(),
        )
    }

    /// The hash as 16 hex digits.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash())
    }

    /// Events captured (kept or not).
    pub fn event_count(&self) -> u64 {
        self.sim.trace.event_count()
    }

    /// Every kept event (none with
    /// [`TraceCapture::HashOnly`](crate::TraceCapture::HashOnly)).
    pub fn records(&self) -> Vec<TraceRecord> {
        self.sim.trace.records()
    }

    /// Every kept event as text, one line each.
    pub fn text(&self) -> String {
        export::text(&self.records())
    }

    /// Sometimes-probes reached so far: how many captured events carried
    /// each value of a `probe` field (`tracing::info!(probe = "name", ..)`).
    /// Counted in every capture mode, at the captured level.
    pub fn probes(&self) -> std::collections::BTreeMap<String, u64> {
        self.sim.trace.probes()
    }

    /// The last `count` events as lines (available in every capture mode,
    /// up to the configured tail length).
    pub fn tail(&self, count: usize) -> Vec<String> {
        self.sim
            .trace
            .tail(count)
            .iter()
            .map(TraceRecord::line)
            .collect()
    }

    /// Every kept event and poll as Chrome trace-event JSON (opens in
    /// Perfetto).
    pub fn chrome_json(&self) -> String {
        let (node_names, task_names) = self.sim.trace.names();
        let polls = self.sim.executor.poll_records.as_deref().unwrap_or(&[]);
        export::chrome_json(&self.records(), polls, &node_names, &task_names)
    }
}
