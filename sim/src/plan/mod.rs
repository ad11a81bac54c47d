//! Fault plans: an explicit, timed list of faults that a run applies at
//! their virtual times.
//!
//! A plan is generated from a seed and a [`FaultProfile`], or written by
//! hand, printed, edited, loaded from a TOML file and shrunk. Applying the
//! same plan to the same seed gives the same run.
//!
//! * durations and offsets (`1.5s`, `250ms`, `-2s`) are read and printed
//!   by [`faultline_core::duration`], exact to the nanosecond;
//! * [`document`]: the TOML/serde form and the loader with file and line
//!   errors;
//! * [`validate`]: contradictions (heal without partition, restart of a
//!   live node, overlapping stalls, unsorted or duplicated faults, unknown
//!   nodes);
//! * [`generate`]: plans drawn from a seed and a profile.
//!
//! The file format, one `[[fault]]` table per fault, sorted by `at`:
//!
//! ```toml
//! [[fault]]
//! at = "1s"                # virtual time since the start of the run
//! kind = "partition"       # partition | heal
//! a = ["sup"]
//! b = ["a-1", "a-2"]
//! direction = "both"       # both | one-way (a → b only); default both
//!
//! [[fault]]
//! at = "2.5s"
//! kind = "kill"            # kill | restart
//! node = "a-1"
//!
//! [[fault]]
//! at = "3s"
//! kind = "stall"
//! node = "sup"
//! duration = "500ms"
//!
//! [[fault]]
//! at = "4s"
//! kind = "skew"            # the node's clock reads true time + offset
//! node = "a-2"
//! offset = "-2s"
//!
//! [[fault]]
//! at = "5s"
//! kind = "reset"           # reset connections between node and peer
//! node = "sup"             # (every connection of node without peer)
//! peer = "a-2"
//!
//! [[fault]]
//! at = "6s"
//! kind = "clog"            # clog | unclog: hold messages from → to
//! from = "sup"
//! to = "a-1"
//!
//! [[fault]]
//! at = "7s"
//! kind = "custom"          # handed to the caller: a client disconnect, ...
//! name = "disconnect"
//! node = "c-1"             # optional
//! ```

pub mod document;
pub mod generate;
pub mod validate;

use std::fmt;
use std::time::Duration;

use crate::net::Direction;

pub use generate::FaultProfile;

/// One fault.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Fault {
    /// Cut the links between two groups of nodes.
    Partition {
        /// First group.
        a: Vec<String>,
        /// Second group.
        b: Vec<String>,
        /// Both ways, or only `a → b`.
        direction: Direction,
    },
    /// Undo the partition with the same groups and direction.
    Heal {
        /// First group.
        a: Vec<String>,
        /// Second group.
        b: Vec<String>,
        /// Both ways, or only `a → b`.
        direction: Direction,
    },
    /// Kill a node: its tasks are dropped, its connections reset.
    Kill {
        /// The node.
        node: String,
    },
    /// Restart a killed node: its init runs again.
    Restart {
        /// The node.
        node: String,
    },
    /// Freeze a node's tasks for a while (a GC pause, a blocking call).
    Stall {
        /// The node.
        node: String,
        /// How long.
        duration: Duration,
    },
    /// Set a node's clock to read true time plus `offset_nanos` (never going
    /// backwards: a negative step freezes it until true time catches up).
    Skew {
        /// The node.
        node: String,
        /// Offset from the true virtual time, in nanoseconds.
        offset_nanos: i64,
    },
    /// Reset every connection between `node` and `peer` (or every
    /// connection of `node`).
    Reset {
        /// The node.
        node: String,
        /// The peer, if only those connections.
        peer: Option<String>,
    },
    /// Hold every message from `from` to `to` until unclogged.
    Clog {
        /// Sending side.
        from: String,
        /// Receiving side.
        to: String,
    },
    /// Release a clog.
    Unclog {
        /// Sending side.
        from: String,
        /// Receiving side.
        to: String,
    },
    /// A fault the simulator does not know: returned to the caller by
    /// [`Sim::step`](crate::Sim::step) as [`Progress::Fault`](crate::Progress::Fault).
    Custom {
        /// What it is.
        name: String,
        /// Which node it concerns, if any.
        node: Option<String>,
    },
}

impl Fault {
    /// The `kind` of the fault in plan files.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition { .. } => "partition",
            Fault::Heal { .. } => "heal",
            Fault::Kill { .. } => "kill",
            Fault::Restart { .. } => "restart",
            Fault::Stall { .. } => "stall",
            Fault::Skew { .. } => "skew",
            Fault::Reset { .. } => "reset",
            Fault::Clog { .. } => "clog",
            Fault::Unclog { .. } => "unclog",
            Fault::Custom { .. } => "custom",
        }
    }

    /// Every node name the fault mentions.
    pub fn nodes(&self) -> Vec<&str> {
        match self {
            Fault::Partition { a, b, .. } | Fault::Heal { a, b, .. } => {
                a.iter().chain(b).map(String::as_str).collect()
            }
            Fault::Kill { node }
            | Fault::Restart { node }
            | Fault::Stall { node, .. }
            | Fault::Skew { node, .. } => vec![node],
            Fault::Reset { node, peer } => std::iter::once(node.as_str())
                .chain(peer.as_deref())
                .collect(),
            Fault::Clog { from, to } | Fault::Unclog { from, to } => vec![from, to],
            Fault::Custom { node, .. } => node.as_deref().into_iter().collect(),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = |names: &[String]| format!("{{{}}}", names.join(","));
        let arrow = |direction: &Direction| match direction {
            Direction::Both => "|",
            Direction::OneWay => "->",
        };
        match self {
            Fault::Partition { a, b, direction } => {
                write!(
                    f,
                    "partition {} {} {}",
                    group(a),
                    arrow(direction),
                    group(b)
                )
            }
            Fault::Heal { a, b, direction } => {
                write!(f, "heal {} {} {}", group(a), arrow(direction), group(b))
            }
            Fault::Kill { node } => write!(f, "kill {node}"),
            Fault::Restart { node } => write!(f, "restart {node}"),
            Fault::Stall { node, duration } => {
                write!(
                    f,
                    "stall {node} for {}",
                    faultline_core::duration::format_decimal(*duration)
                )
            }
            Fault::Skew { node, offset_nanos } => {
                write!(
                    f,
                    "skew {node} clock by {}",
                    faultline_core::duration::format_offset(*offset_nanos)
                )
            }
            Fault::Reset {
                node,
                peer: Some(peer),
            } => write!(f, "reset connections {node} <-> {peer}"),
            Fault::Reset { node, peer: None } => write!(f, "reset every connection of {node}"),
            Fault::Clog { from, to } => write!(f, "clog {from} -> {to}"),
            Fault::Unclog { from, to } => write!(f, "unclog {from} -> {to}"),
            Fault::Custom {
                name,
                node: Some(node),
            } => write!(f, "custom {name} on {node}"),
            Fault::Custom { name, node: None } => write!(f, "custom {name}"),
        }
    }
}

/// A fault at a virtual time.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FaultEvent {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// What happens.
    pub fault: Fault,
}

impl fmt::Display for FaultEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={:.3}s {}", self.at.as_secs_f64(), self.fault)
    }
}

/// Where a plan was loaded from, to point errors at lines.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct PlanOrigin {
    /// The file's name as given.
    pub file: String,
    /// `(line, column)` of each event's table, by index.
    pub positions: Vec<(usize, usize)>,
}

/// A timed list of faults, sorted by time.
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(into = "document::PlanDocument", try_from = "document::PlanDocument")]
pub struct FaultPlan {
    /// The faults, in the order they apply.
    pub events: Vec<FaultEvent>,
    origin: Option<PlanOrigin>,
}

impl FaultPlan {
    /// A plan of `events`, which must be sorted by time (see
    /// [`FaultPlan::validate`]).
    pub fn new(events: Vec<FaultEvent>) -> FaultPlan {
        FaultPlan {
            events,
            origin: None,
        }
    }

    /// A plan without faults.
    pub fn empty() -> FaultPlan {
        FaultPlan::default()
    }

    /// Whether the plan has no fault.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The plan without the events whose index is in `removed` (for
    /// shrinking), keeping the rest in order. The result may be
    /// contradictory (a restart without its kill): check it with
    /// [`FaultPlan::validate`].
    pub fn without(&self, removed: &[usize]) -> FaultPlan {
        FaultPlan::new(
            self.events
                .iter()
                .enumerate()
                .filter(|(index, _)| !removed.contains(index))
                .map(|(_, event)| event.clone())
                .collect(),
        )
    }

    /// The error for event `index`, at its line when the plan came from a
    /// file.
    pub(crate) fn error_at(&self, index: usize, problem: String) -> PlanError {
        match &self.origin {
            Some(origin) => {
                let position = origin.positions.get(index).copied();
                PlanError {
                    file: origin.file.clone(),
                    line: position.map(|(line, _)| line),
                    column: position.map(|(_, column)| column),
                    problem,
                }
            }
            None => PlanError {
                file: "<plan>".to_owned(),
                line: None,
                column: None,
                problem: format!("fault #{} ({}): {problem}", index + 1, self.events[index]),
            },
        }
    }

    /// The line of event `index` in its file, if loaded from one.
    pub(crate) fn line_of(&self, index: usize) -> Option<usize> {
        self.origin
            .as_ref()
            .and_then(|origin| origin.positions.get(index))
            .map(|(line, _)| *line)
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.events.is_empty() {
            return writeln!(f, "(no faults)");
        }
        for event in &self.events {
            writeln!(f, "{event}")?;
        }
        Ok(())
    }
}

/// A fault plan that cannot be read or used: names the file, the line and
/// the column when known, and the problem.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub struct PlanError {
    /// The file, as given (`<plan>` for a plan built in memory).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "{}:{line}:{column}: {}", self.file, self.problem)
            }
            (Some(line), None) => write!(f, "{}:{line}: {}", self.file, self.problem),
            _ => write!(f, "{}: {}", self.file, self.problem),
        }
    }
}
