//! Faults applied by the owner: kill and restart, stall, clock skew,
//! partitions, clogs, link settings, connection resets, and fault plans
//! applied at their planned times.

use std::sync::Arc;
use std::time::Duration;

use faultline_core::runtime::Instant;
use tracing::Level;

use crate::clock::Event;
use crate::config::ConfigError;
use crate::ids::{NodeId, TaskId};
use crate::net::{Direction, LinkConfig};
use crate::node::Life;
use crate::plan::{Fault, FaultEvent, FaultPlan, PlanError};
use crate::sim::Sim;
use crate::world::World;

/// A fault that cannot be applied in the current state.
#[derive(Clone, PartialEq, Debug, thiserror::Error)]
pub enum FaultError {
    /// Kill or stall of a node that is not running.
    #[error("{0} is not alive")]
    NotAlive(String),
    /// Restart of a node that is running.
    #[error("{0} is not killed")]
    NotKilled(String),
    /// A link setting that contradicts itself.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Sim {
    fn record(&self, node: Option<NodeId>, message: std::fmt::Arguments<'_>) {
        self.trace
            .record_simulator(self.now, node, Level::INFO, message);
    }

    fn name(&self, node: NodeId) -> Arc<str> {
        Arc::clone(&self.world().node(node).name)
    }

    /// Kill `node`: every task of it is dropped at its current `.await`
    /// without running further, its connections are reset, its listeners
    /// disappear. Its clock skew is kept for the restart.
    pub fn kill(&mut self, node: NodeId) -> Result<(), FaultError> {
        let (ids, doomed, disk_crash) = {
            let mut guard = self.world();
            let world = &mut *guard;
            let state = &mut world.nodes[node.index()];
            if !state.is_alive() {
                return Err(FaultError::NotAlive(state.name.to_string()));
            }
            state.life = Life::Killed;
            state.incarnation += 1;
            state.stalled_until = None;
            let ids: Vec<TaskId> = world.tasks.ids_of(node);
            let doomed: Vec<_> = ids
                .iter()
                .filter_map(|id| world.tasks.remove(*id))
                .collect();
            world.drop_node_connections(node);
            let disk_crash = world.disks.crash(node);
            (ids, doomed, disk_crash)
        };
        self.record(
            Some(node),
            format_args!("kill {} ({} tasks dropped)", self.name(node), ids.len()),
        );
        if let Some(report) = disk_crash {
            self.record(Some(node), format_args!("{}: {report}", self.name(node)));
        }
        self.executor.incarnations[node.index()] = None;
        self.executor.set_stall(node, None);
        for id in &ids {
            self.trace.forget_task(*id);
        }
        let runnables = self.executor.withdraw(node, &ids);
        let dispatch = self.dispatch.clone();
        tracing::dispatcher::with_default(&dispatch, || {
            // Futures are dropped here, without the world lock: first those
            // that were ready, then (through their async-task handles) the
            // idle ones, which async-task hands back through the inbox.
            drop(runnables);
            drop(doomed);
            self.executor.absorb(&self.shared);
        });
        Ok(())
    }

    /// Restart a killed `node`: its init runs again, with fresh handles.
    pub fn restart(&mut self, node: NodeId) -> Result<(), FaultError> {
        let incarnation = {
            let mut world = self.world();
            let state = &mut world.nodes[node.index()];
            if state.is_alive() {
                return Err(FaultError::NotKilled(state.name.to_string()));
            }
            state.life = Life::Alive;
            state.incarnation
        };
        self.record(
            Some(node),
            format_args!("restart {} (incarnation {incarnation})", self.name(node)),
        );
        self.executor.incarnations[node.index()] = Some(incarnation);
        self.start_node(node);
        Ok(())
    }

    /// Freeze `node` for `duration`: its tasks are not polled (timers still
    /// fire and messages still arrive; they are handled when it resumes).
    pub fn stall(&mut self, node: NodeId, duration: Duration) -> Result<(), FaultError> {
        let until = self.now + duration;
        let until = {
            let mut guard = self.world();
            let world = &mut *guard;
            let state = &mut world.nodes[node.index()];
            if !state.is_alive() {
                return Err(FaultError::NotAlive(state.name.to_string()));
            }
            let until = state.stalled_until.map_or(until, |old| old.max(until));
            state.stalled_until = Some(until);
            world.events.schedule(until, Event::StallEnd(node));
            until
        };
        self.executor.set_stall(node, Some(until));
        self.record(
            Some(node),
            format_args!("stall {} until {until}", self.name(node)),
        );
        Ok(())
    }

    /// A stall's end is due: resume the node unless the stall was extended.
    pub(crate) fn end_stall(&mut self, node: NodeId) {
        let ended = {
            let mut world = self.world();
            let now = world.now();
            let state = &mut world.nodes[node.index()];
            let ended = state.stalled_until.is_some_and(|until| until <= now);
            if ended {
                state.stalled_until = None;
            }
            ended
        };
        if ended {
            self.record(
                Some(node),
                format_args!("stall of {} ends", self.name(node)),
            );
            self.executor.unpark(node);
        }
    }

    /// Set `node`'s clock to read the global time plus `offset_nanos`. A
    /// step back freezes the node's clock until the global time catches up
    /// (it never goes backwards). Timers keep their deadlines on the node's
    /// clock: a step forward fires those it jumps over.
    pub fn skew(&mut self, node: NodeId, offset_nanos: i64) {
        {
            let mut guard = self.world();
            let now = guard.now();
            let World {
                nodes,
                timers,
                events,
                ..
            } = &mut *guard;
            let clock = &mut nodes[node.index()].clock;
            clock.set_offset(offset_nanos, now);
            let clock = *clock;
            timers.rekey_node(events, node, &clock, now);
        }
        self.record(
            Some(node),
            format_args!("skew {} clock to {offset_nanos}ns", self.name(node)),
        );
    }

    fn set_partition(&mut self, a: &[NodeId], b: &[NodeId], direction: Direction, cut: bool) {
        let mut world = self.world();
        for x in a {
            for y in b {
                world.set_cut(*x, *y, cut);
                if direction == Direction::Both {
                    world.set_cut(*y, *x, cut);
                }
            }
        }
    }

    fn group(&self, nodes: &[NodeId]) -> String {
        let names: Vec<String> = nodes
            .iter()
            .map(|node| self.name(*node).to_string())
            .collect();
        format!("{{{}}}", names.join(","))
    }

    /// Cut the links between groups `a` and `b` (only `a → b` with
    /// [`Direction::OneWay`]).
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId], direction: Direction) {
        self.set_partition(a, b, direction, true);
        let text = format!(
            "partition {} | {} ({direction:?})",
            self.group(a),
            self.group(b)
        );
        self.record(None, format_args!("{text}"));
    }

    /// Restore the links cut by the matching [`Sim::partition`].
    pub fn heal(&mut self, a: &[NodeId], b: &[NodeId], direction: Direction) {
        self.set_partition(a, b, direction, false);
        let text = format!("heal {} | {} ({direction:?})", self.group(a), self.group(b));
        self.record(None, format_args!("{text}"));
    }

    /// Hold every message from `from` to `to` until [`Sim::unclog`].
    pub fn clog(&mut self, from: NodeId, to: NodeId) {
        self.world().set_clogged(from, to, true);
        self.record(
            None,
            format_args!("clog {} -> {}", self.name(from), self.name(to)),
        );
    }

    /// Release a clog: held messages are delivered in order.
    pub fn unclog(&mut self, from: NodeId, to: NodeId) {
        self.world().set_clogged(from, to, false);
        self.record(
            None,
            format_args!("unclog {} -> {}", self.name(from), self.name(to)),
        );
    }

    /// Configure the link `from → to` (latency, loss, duplication, order).
    pub fn set_link(
        &mut self,
        from: NodeId,
        to: NodeId,
        config: LinkConfig,
    ) -> Result<(), FaultError> {
        config.validate()?;
        self.shared
            .world()
            .net
            .links
            .entry((from, to))
            .or_default()
            .config = Some(config);
        Ok(())
    }

    /// Configure both directions between `a` and `b`.
    pub fn set_link_both(
        &mut self,
        a: NodeId,
        b: NodeId,
        config: LinkConfig,
    ) -> Result<(), FaultError> {
        self.set_link(a, b, config)?;
        self.set_link(b, a, config)
    }

    /// Reset every connection between `node` and `peer` (every connection
    /// of `node` when `peer` is `None`), on both ends, now. Returns how
    /// many were reset.
    pub fn reset(&mut self, node: NodeId, peer: Option<NodeId>) -> usize {
        let count = self.world().reset_conns(node, peer);
        let target = peer.map_or_else(|| "*".to_owned(), |peer| self.name(peer).to_string());
        self.record(
            Some(node),
            format_args!(
                "reset {count} connection(s) {} <-> {target}",
                self.name(node)
            ),
        );
        count
    }

    /// Schedule every fault of `plan` at its time. The plan must be valid,
    /// name only nodes of this run, and lie in the future.
    pub fn apply_plan(&mut self, plan: &FaultPlan) -> Result<(), PlanError> {
        let names: Vec<String> = self.nodes().into_iter().map(|node| node.name).collect();
        plan.validate(Some(&names))?;
        for (index, event) in plan.events.iter().enumerate() {
            if Instant::ZERO + event.at < self.now {
                return Err(plan.error_at(
                    index,
                    format!("is in the past (the run is at {})", self.now),
                ));
            }
        }
        for event in &plan.events {
            let index = self.planned.len();
            self.planned.push(event.clone());
            self.shared
                .world()
                .events
                .schedule(Instant::ZERO + event.at, Event::Fault(index));
        }
        Ok(())
    }

    fn ids(&self, names: &[String]) -> Vec<NodeId> {
        names.iter().map(|name| self.id(name)).collect()
    }

    fn id(&self, name: &str) -> NodeId {
        self.node_id(name)
            .expect("apply_plan checked every name against the nodes")
    }

    /// Apply a planned fault now. A fault that no longer fits the state
    /// (the node was restarted by hand in between) is skipped and noted.
    pub(crate) fn apply_planned(&mut self, event: &FaultEvent) {
        let result = match &event.fault {
            Fault::Partition { a, b, direction } => {
                self.partition(&self.ids(a), &self.ids(b), *direction);
                Ok(())
            }
            Fault::Heal { a, b, direction } => {
                self.heal(&self.ids(a), &self.ids(b), *direction);
                Ok(())
            }
            Fault::Kill { node } => self.kill(self.id(node)),
            Fault::Restart { node } => self.restart(self.id(node)),
            Fault::Stall { node, duration } => self.stall(self.id(node), *duration),
            Fault::Skew { node, offset_nanos } => {
                self.skew(self.id(node), *offset_nanos);
                Ok(())
            }
            Fault::Reset { node, peer } => {
                let peer = peer.as_deref().map(|peer| self.id(peer));
                self.reset(self.id(node), peer);
                Ok(())
            }
            Fault::Clog { from, to } => {
                self.clog(self.id(from), self.id(to));
                Ok(())
            }
            Fault::Unclog { from, to } => {
                self.unclog(self.id(from), self.id(to));
                Ok(())
            }
            Fault::Custom { .. } => {
                self.record(None, format_args!("{}", event.fault));
                Ok(())
            }
        };
        if let Err(error) = result {
            self.trace.record_simulator(
                self.now,
                None,
                Level::WARN,
                format_args!("planned fault skipped: {event}: {error}"),
            );
        }
    }

    /// Kill every node and drop everything left, so that no future outlives
    /// the run and no reference cycle keeps the world alive.
    pub(crate) fn teardown(&mut self) {
        let alive: Vec<NodeId> = self
            .nodes()
            .into_iter()
            .filter(|node| node.life == Life::Alive)
            .map(|node| node.id)
            .collect();
        for node in alive {
            let killed = self.kill(node);
            debug_assert!(killed.is_ok(), "listed as alive");
        }
        let rest = self.executor.drain();
        drop(rest);
        let leftovers = {
            let mut world = self.world();
            let events = world.events.drain();
            let timers = world.timers.take_all();
            let conns = std::mem::take(&mut world.net.conns);
            let listeners = std::mem::take(&mut world.net.listeners);
            let connects = std::mem::take(&mut world.net.connects);
            let tasks = world.tasks.take_all();
            (events, timers, conns, listeners, connects, tasks)
        };
        drop(leftovers);
        const ROUNDS_MAX: usize = 64;
        for _ in 0..ROUNDS_MAX {
            let mut woken = Vec::new();
            self.shared.take_ready(&mut woken);
            if woken.is_empty() {
                break;
            }
            drop(woken);
        }
    }
}
