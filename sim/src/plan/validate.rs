//! Contradictions in a fault plan, found by replaying its faults over a
//! model of node, partition, stall and clog state.
//!
//! A plan is contradictory when it is not sorted by time, repeats a fault,
//! heals a partition that is not in force, cuts a link that is already cut,
//! kills a dead node or restarts a live one, stalls a dead or already
//! stalled node, stalls for zero time, clogs a clogged link or unclogs a
//! free one, names a node twice in one partition or on both sides, or (when
//! checked against a topology) names an unknown node.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Fault, FaultPlan, PlanError};
use crate::net::Direction;

struct ActivePartition<'a> {
    index: usize,
    a: BTreeSet<&'a str>,
    b: BTreeSet<&'a str>,
    direction: Direction,
}

impl ActivePartition<'_> {
    /// Every directed link the partition cuts.
    fn links(&self) -> BTreeSet<(&str, &str)> {
        let mut links = BTreeSet::new();
        for x in &self.a {
            for y in &self.b {
                links.insert((*x, *y));
                if self.direction == Direction::Both {
                    links.insert((*y, *x));
                }
            }
        }
        links
    }
}

struct Checker<'a> {
    plan: &'a FaultPlan,
    topology: Option<&'a [String]>,
    /// Killed nodes, with the index of the kill.
    killed: BTreeMap<&'a str, usize>,
    /// Stalled nodes: until when, and the index of the stall.
    stalls: BTreeMap<&'a str, (Duration, usize)>,
    partitions: Vec<ActivePartition<'a>>,
    /// Clogged links, with the index of the clog.
    clogs: BTreeMap<(&'a str, &'a str), usize>,
}

impl FaultPlan {
    /// Check the plan for contradictions and, when `topology` is given, for
    /// node names outside it.
    pub fn validate(&self, topology: Option<&[String]>) -> Result<(), PlanError> {
        let mut checker = Checker {
            plan: self,
            topology,
            killed: BTreeMap::new(),
            stalls: BTreeMap::new(),
            partitions: Vec::new(),
            clogs: BTreeMap::new(),
        };
        for index in 0..self.events.len() {
            checker
                .check(index)
                .map_err(|problem| self.error_at(index, problem))?;
        }
        Ok(())
    }
}

impl<'a> Checker<'a> {
    /// How to refer to another event in a message.
    fn refer(&self, index: usize) -> String {
        match self.plan.line_of(index) {
            Some(line) => format!("line {line}"),
            None => format!("fault #{}", index + 1),
        }
    }

    fn check(&mut self, index: usize) -> Result<(), String> {
        let event = &self.plan.events[index];
        if let Some(previous) = index
            .checked_sub(1)
            .map(|previous| &self.plan.events[previous])
        {
            if previous.at > event.at {
                return Err(format!(
                    "faults must be sorted by time: this one at {:?} comes after one at {:?} ({})",
                    event.at,
                    previous.at,
                    self.refer(index - 1)
                ));
            }
        }
        if let Some(twin) = self.plan.events[..index]
            .iter()
            .position(|other| other == event)
        {
            return Err(format!("duplicates the fault on {}", self.refer(twin)));
        }
        self.check_names(&event.fault)?;
        self.expire_stalls(event.at);
        match &event.fault {
            Fault::Partition { a, b, direction } => self.partition(index, a, b, *direction),
            Fault::Heal { a, b, direction } => self.heal(a, b, *direction),
            Fault::Kill { node } => self.kill(index, node),
            Fault::Restart { node } => self.restart(node),
            Fault::Stall { node, duration } => self.stall(index, node, event.at, *duration),
            Fault::Reset {
                node,
                peer: Some(peer),
            } if node == peer => Err(format!("resets connections of {node} with itself")),
            Fault::Clog { from, to } => self.clog(index, from, to),
            Fault::Unclog { from, to } => self.unclog(from, to),
            Fault::Skew { .. } | Fault::Reset { .. } | Fault::Custom { .. } => Ok(()),
        }
    }

    fn check_names(&self, fault: &Fault) -> Result<(), String> {
        if let Fault::Custom { name, .. } = fault {
            if name.trim().is_empty() {
                return Err("a custom fault needs a non-empty name".to_owned());
            }
        }
        for node in fault.nodes() {
            if node.is_empty() {
                return Err("a node name is empty".to_owned());
            }
            if let Some(topology) = self.topology {
                if !topology.iter().any(|known| known == node) {
                    return Err(format!(
                        "unknown node {node:?} (the nodes are: {})",
                        topology.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    fn expire_stalls(&mut self, now: Duration) {
        self.stalls.retain(|_, (until, _)| *until > now);
    }

    fn groups(
        a: &'a [String],
        b: &'a [String],
    ) -> Result<(BTreeSet<&'a str>, BTreeSet<&'a str>), String> {
        if a.is_empty() || b.is_empty() {
            return Err("both sides of a partition need at least one node".to_owned());
        }
        let set_a: BTreeSet<&str> = a.iter().map(String::as_str).collect();
        let set_b: BTreeSet<&str> = b.iter().map(String::as_str).collect();
        if set_a.len() != a.len() || set_b.len() != b.len() {
            return Err("a node is named twice on one side of the partition".to_owned());
        }
        if let Some(both) = set_a.intersection(&set_b).next() {
            return Err(format!("{both} is on both sides of the partition"));
        }
        Ok((set_a, set_b))
    }

    fn partition(
        &mut self,
        index: usize,
        a: &'a [String],
        b: &'a [String],
        direction: Direction,
    ) -> Result<(), String> {
        let (a, b) = Self::groups(a, b)?;
        let candidate = ActivePartition {
            index,
            a,
            b,
            direction,
        };
        let links = candidate.links();
        for active in &self.partitions {
            if let Some((from, to)) = active.links().intersection(&links).next() {
                return Err(format!(
                    "overlaps the partition on {}, which already cuts {from} -> {to}",
                    self.refer(active.index)
                ));
            }
        }
        self.partitions.push(candidate);
        Ok(())
    }

    fn heal(
        &mut self,
        a: &'a [String],
        b: &'a [String],
        direction: Direction,
    ) -> Result<(), String> {
        let (a, b) = Self::groups(a, b)?;
        let position = self.partitions.iter().position(|active| {
            active.direction == direction
                && ((active.a == a && active.b == b)
                    || (direction == Direction::Both && active.a == b && active.b == a))
        });
        match position {
            Some(position) => {
                self.partitions.remove(position);
                Ok(())
            }
            None => Err(
                "heals a partition that is not in force (a heal names the same groups and direction as its partition)"
                    .to_owned(),
            ),
        }
    }

    fn kill(&mut self, index: usize, node: &'a str) -> Result<(), String> {
        if let Some(kill) = self.killed.get(node) {
            return Err(format!(
                "kills {node}, which is already killed on {}",
                self.refer(*kill)
            ));
        }
        self.stalls.remove(node);
        self.killed.insert(node, index);
        Ok(())
    }

    fn restart(&mut self, node: &str) -> Result<(), String> {
        match self.killed.remove(node) {
            Some(_) => Ok(()),
            None => Err(format!("restarts {node}, which is not killed")),
        }
    }

    fn stall(
        &mut self,
        index: usize,
        node: &'a str,
        at: Duration,
        duration: Duration,
    ) -> Result<(), String> {
        if duration.is_zero() {
            return Err("a stall must last longer than 0s".to_owned());
        }
        if let Some(kill) = self.killed.get(node) {
            return Err(format!(
                "stalls {node}, which is killed on {}",
                self.refer(*kill)
            ));
        }
        if let Some((until, stall)) = self.stalls.get(node) {
            return Err(format!(
                "overlaps the stall of {node} on {}, which lasts until {until:?}",
                self.refer(*stall)
            ));
        }
        self.stalls
            .insert(node, (at.saturating_add(duration), index));
        Ok(())
    }

    fn clog(&mut self, index: usize, from: &'a str, to: &'a str) -> Result<(), String> {
        if from == to {
            return Err(format!("clogs the loopback of {from}"));
        }
        if let Some(clog) = self.clogs.get(&(from, to)) {
            return Err(format!(
                "clogs {from} -> {to}, already clogged on {}",
                self.refer(*clog)
            ));
        }
        self.clogs.insert((from, to), index);
        Ok(())
    }

    fn unclog(&mut self, from: &'a str, to: &'a str) -> Result<(), String> {
        match self.clogs.remove(&(from, to)) {
            Some(_) => Ok(()),
            None => Err(format!("unclogs {from} -> {to}, which is not clogged")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::FaultEvent;

    fn at(seconds: u64, fault: Fault) -> FaultEvent {
        FaultEvent {
            at: Duration::from_secs(seconds),
            fault,
        }
    }

    fn kill(node: &str) -> Fault {
        Fault::Kill {
            node: node.to_owned(),
        }
    }

    fn restart(node: &str) -> Fault {
        Fault::Restart {
            node: node.to_owned(),
        }
    }

    fn partition(a: &[&str], b: &[&str]) -> Fault {
        Fault::Partition {
            a: a.iter().map(|name| (*name).to_owned()).collect(),
            b: b.iter().map(|name| (*name).to_owned()).collect(),
            direction: Direction::Both,
        }
    }

    fn heal(a: &[&str], b: &[&str]) -> Fault {
        match partition(a, b) {
            Fault::Partition { a, b, direction } => Fault::Heal { a, b, direction },
            _ => unreachable!(),
        }
    }

    fn problem(events: Vec<FaultEvent>) -> String {
        FaultPlan::new(events)
            .validate(None)
            .expect_err("contradictory")
            .problem
    }

    #[test]
    fn a_consistent_plan_passes() {
        let plan = FaultPlan::new(vec![
            at(1, partition(&["a"], &["b"])),
            at(2, kill("c")),
            at(3, heal(&["b"], &["a"])),
            at(4, restart("c")),
            at(5, kill("c")),
        ]);
        assert_eq!(plan.validate(None), Ok(()));
    }

    #[test]
    fn contradictions_are_named() {
        assert!(problem(vec![at(2, kill("a")), at(1, restart("a"))]).contains("sorted by time"));
        assert!(problem(vec![at(1, kill("a")), at(1, kill("a"))]).contains("duplicates"));
        assert!(problem(vec![at(1, kill("a")), at(2, kill("a"))]).contains("already killed"));
        assert!(problem(vec![at(1, restart("a"))]).contains("not killed"));
        assert!(problem(vec![at(1, heal(&["a"], &["b"]))]).contains("not in force"));
        assert!(problem(vec![
            at(1, partition(&["a"], &["b", "c"])),
            at(2, partition(&["c"], &["a"]))
        ])
        .contains("overlaps the partition"));
        assert!(problem(vec![at(1, partition(&["a"], &["a"]))]).contains("both sides"));
        assert!(problem(vec![at(1, partition(&[], &["a"]))]).contains("at least one node"));
        let stall = |node: &str, seconds| Fault::Stall {
            node: node.to_owned(),
            duration: Duration::from_secs(seconds),
        };
        assert!(problem(vec![at(1, stall("a", 0))]).contains("longer than 0s"));
        assert!(problem(vec![at(1, stall("a", 5)), at(3, stall("a", 1))])
            .contains("overlaps the stall"));
        assert!(problem(vec![at(1, kill("a")), at(3, stall("a", 1))]).contains("which is killed"));
        let unclog = Fault::Unclog {
            from: "a".to_owned(),
            to: "b".to_owned(),
        };
        assert!(problem(vec![at(1, unclog)]).contains("not clogged"));
    }

    #[test]
    fn back_to_back_stalls_do_not_overlap() {
        let stall = |seconds| Fault::Stall {
            node: "a".to_owned(),
            duration: Duration::from_secs(seconds),
        };
        let plan = FaultPlan::new(vec![at(1, stall(2)), at(3, stall(1))]);
        assert_eq!(plan.validate(None), Ok(()));
    }

    #[test]
    fn unknown_nodes_are_named_against_a_topology() {
        let plan = FaultPlan::new(vec![at(1, kill("ghost"))]);
        let topology = ["a".to_owned(), "b".to_owned()];
        let error = plan.validate(Some(&topology)).expect_err("unknown node");
        assert!(
            error
                .problem
                .contains("unknown node \"ghost\" (the nodes are: a, b)"),
            "{error}"
        );
    }
}
