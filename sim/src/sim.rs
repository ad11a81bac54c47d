//! [`Sim`]: the owner of a run. It advances the world one step at a time
//! (`&mut self`); node code reaches the world only through its handles.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use faultline_core::runtime::{BoxFuture, Instant, TaskHandle, TaskOutcome};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

use crate::buggify::{Buggify, BuggifySite};
use crate::choices::{Choices, Purpose, SimRng};
use crate::clock::{Event, EventQueue, Timeline, Timers};
use crate::config::{ConfigError, QuiescencePolicy, SimConfig};
use crate::disk::Disks;
use crate::executor::Executor;
use crate::failure::{Failure, TaskInfo, TaskState};
use crate::ids::{NodeId, TaskId};
use crate::net::{NetState, NetStats};
use crate::node::{NodeContext, NodeInfo, NodeInit, NodeState};
use crate::plan::FaultEvent;
use crate::scheduler::Scheduler;
use crate::task::TaskTable;
use crate::trace::layer::CaptureLayer;
use crate::trace::{TraceCapture, TraceSink};
use crate::world::{Shared, World};

/// What one [`Sim::step`] did.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Progress {
    /// Polled one task.
    Polled {
        /// The task.
        task: TaskId,
        /// Its node.
        node: NodeId,
    },
    /// Applied a planned fault (a [`Fault::Custom`](crate::Fault::Custom)
    /// is only reported: acting on it is the caller's business).
    Fault(FaultEvent),
    /// Nothing was ready: the clock jumped to the next pending event (or to
    /// the deadline of `run_until`).
    Advanced {
        /// The new time.
        to: Instant,
    },
    /// No task is left.
    Finished,
    /// Nothing is ready or pending, tasks still wait, and the
    /// [`QuiescencePolicy`] is `Idle`.
    Quiescent,
}

/// How `run`, `run_until` and `run_for` ended (a [`Failure`] is an `Err`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RunEnd<B = ()> {
    /// The deadline was reached.
    Reached,
    /// No task is left.
    Finished,
    /// Nothing more can happen (with [`QuiescencePolicy::Idle`]).
    Quiescent,
    /// The step callback stopped the run with this value.
    Stopped(B),
}

/// A deterministic simulation run. See the crate documentation.
pub struct Sim {
    pub(crate) config: SimConfig,
    pub(crate) shared: Arc<Shared>,
    pub(crate) trace: Arc<TraceSink>,
    pub(crate) dispatch: tracing::Dispatch,
    pub(crate) executor: Executor,
    workload_rng: SimRng,
    /// Polls and applied faults so far.
    steps: u64,
    /// The owner's clock; only the owner moves it. Published to the
    /// timeline (which handles read) whenever the world is locked through
    /// [`Sim::world`] and at every step.
    pub(crate) now: Instant,
    timeline: Arc<Timeline>,
    /// Every fault scheduled through a plan, by `Event::Fault` index.
    pub(crate) planned: Vec<FaultEvent>,
    pub(crate) failure: Option<Failure>,
    /// Whether a run loop has installed the trace as the thread's default
    /// subscriber (then polls need not install it one by one).
    trace_entered: Arc<AtomicBool>,
}

/// Clears [`Sim::trace_entered`] when a run loop ends, even by a panic.
struct TraceEntered(Arc<AtomicBool>);

impl Drop for TraceEntered {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Sim {
    /// A run with no nodes yet, or the contradiction in `config`.
    pub fn new(config: SimConfig) -> Result<Sim, ConfigError> {
        config.validate()?;
        let scheduler = config
            .scheduler
            .build(Choices::new(config.seed).stream(Purpose::Schedule));
        Sim::with_scheduler(config, scheduler)
    }

    /// A run whose ready tasks are ordered by `scheduler` instead of the one
    /// `config.scheduler` names (a replaying or exhaustive scheduler, say).
    /// A scheduler that draws randomness should take it from
    /// `Choices::new(seed).stream(Purpose::Schedule)` to stay replayable.
    pub fn with_scheduler(
        config: SimConfig,
        scheduler: Box<dyn Scheduler>,
    ) -> Result<Sim, ConfigError> {
        config.validate()?;
        let choices = Choices::new(config.seed);
        let trace = Arc::new(TraceSink::new(config.trace));
        let timeline = Arc::new(Timeline::default());
        let world = World {
            timeline: Arc::clone(&timeline),
            events: EventQueue::new(Arc::clone(&timeline)),
            timers: Timers::default(),
            nodes: Vec::new(),
            tasks: TaskTable::default(),
            net: NetState::new(config.link_default, choices.stream(Purpose::Network)),
            ids_rng: choices.stream(Purpose::Ids),
            buggify: Buggify::new(
                config.buggify,
                config.seed,
                choices.stream(Purpose::Buggify),
            ),
            trace: Arc::clone(&trace),
            disks: Disks::new(choices.stream(Purpose::Disk)),
        };
        let subscriber = tracing_subscriber::registry().with(CaptureLayer::new(Arc::clone(&trace)));
        let executor = Executor::new(
            scheduler,
            choices.stream(Purpose::Timing),
            config.poll_cost,
            config.trace.capture == TraceCapture::Full,
        );
        Ok(Sim {
            shared: Arc::new(Shared::new(world)),
            trace,
            dispatch: tracing::Dispatch::new(subscriber),
            executor,
            workload_rng: choices.stream(Purpose::Workload),
            steps: 0,
            now: Instant::ZERO,
            timeline,
            planned: Vec::new(),
            failure: None,
            trace_entered: Arc::new(AtomicBool::new(false)),
            config,
        })
    }

    /// Add a node named `name` whose tasks start with `init`, run now and
    /// again after every restart. Names are the host part of addresses.
    pub fn add_node<F>(&mut self, name: &str, init: F) -> Result<NodeId, ConfigError>
    where
        F: Fn(NodeContext) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
            return Err(ConfigError::NodeName(name.to_owned()));
        }
        let name: Arc<str> = Arc::from(name);
        let id = {
            let mut world = self.shared.world();
            if world.node_named(&name).is_some() {
                return Err(ConfigError::DuplicateNode(name.to_string()));
            }
            let id = NodeId(u32::try_from(world.nodes.len()).expect("fewer than 2^32 nodes"));
            let init: NodeInit = Arc::new(init);
            world.nodes.push(NodeState::new(Arc::clone(&name), init));
            world.trace.name_node(id, &name);
            id
        };
        self.executor.add_node();
        self.start_node(id);
        Ok(id)
    }

    /// Run the node's init as its first task.
    pub(crate) fn start_node(&mut self, node: NodeId) {
        let context = self.context(node);
        let init = Arc::clone(&self.shared.world().node(node).init);
        let future = tracing::dispatcher::with_default(&self.dispatch, || init(context.clone()));
        crate::task::spawn(&self.shared, node, context.incarnation(), "init", future);
        self.executor.absorb(&self.shared);
    }

    /// Run `f` with this run's trace as the thread's `tracing` subscriber,
    /// so that spans created in it (to instrument futures spawned from
    /// outside) and events it emits are captured. Polls and node inits run
    /// this way already.
    pub fn in_trace<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }

    /// The node's handles for its current incarnation.
    pub fn context(&self, node: NodeId) -> NodeContext {
        let world = self.shared.world();
        let state = world.node(node);
        NodeContext::new(
            &self.shared,
            node,
            Arc::clone(&state.name),
            state.incarnation,
        )
    }

    /// The id of the node named `name`.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.shared.world().node_named(name)
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let world = self.shared.world();
        world
            .nodes
            .iter()
            .enumerate()
            .map(|(index, state)| NodeInfo {
                id: NodeId(index as u32),
                name: state.name.to_string(),
                life: state.life,
                incarnation: state.incarnation,
                stalled_until: state.stalled_until.filter(|until| *until > world.now()),
                clock_offset_nanos: state.clock.offset_nanos(),
            })
            .collect()
    }

    /// Start a task on `node` from outside (a client, a probe).
    pub fn spawn(
        &mut self,
        node: NodeId,
        name: &str,
        future: BoxFuture<'static, ()>,
    ) -> TaskHandle {
        let incarnation = self.shared.world().node(node).incarnation;
        crate::task::spawn(&self.shared, node, incarnation, name, future)
    }

    /// Do one thing: apply a due planned fault, or poll one ready task, or
    /// (nothing ready) jump the clock to the next event.
    pub fn step(&mut self) -> Result<Progress, Failure> {
        self.step_within(None)
    }

    fn step_within(&mut self, horizon: Option<Instant>) -> Result<Progress, Failure> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        if self.steps >= self.config.limits.steps_max {
            let live = self.tasks();
            return Err(self.fail(Failure::StepLimit {
                steps_max: self.config.limits.steps_max,
                at: self.now,
                live,
            }));
        }
        if let Some(index) = self.fire_due() {
            self.steps += 1;
            let event = self.planned[index].clone();
            self.apply_planned(&event);
            return Ok(Progress::Fault(event));
        }
        self.executor.absorb(&self.shared);
        if let Some(progress) = self.poll_next()? {
            return Ok(progress);
        }
        self.idle(horizon)
    }

    /// Lock the world with its clock brought up to the owner's (the owner
    /// moves time after each poll without publishing it).
    pub(crate) fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.timeline.publish(self.now);
        self.shared.world()
    }

    /// Process due timers and deliveries; stop at a due planned fault and
    /// return its index. Bounded: each turn removes one event. Publishes
    /// the clock, and takes the world lock only when an event is due.
    fn fire_due(&mut self) -> Option<usize> {
        loop {
            self.timeline.publish(self.now);
            if !self.timeline.event_due(self.now) {
                return None;
            }
            let event = {
                let mut guard = self.world();
                let world = &mut *guard;
                let now = world.now();
                loop {
                    match world.events.pop_due(now) {
                        None => return None,
                        Some(Event::Timer(id)) => world.timers.fire(id),
                        Some(Event::Deliver(delivery)) => world.deliver(delivery),
                        Some(other) => break other,
                    }
                }
            };
            match event {
                Event::StallEnd(node) => self.end_stall(node),
                Event::Fault(index) => return Some(index),
                Event::Timer(_) | Event::Deliver(_) => unreachable!("handled under the lock"),
            }
        }
    }

    /// Poll the task the scheduler picks, if any is ready.
    fn poll_next(&mut self) -> Result<Option<Progress>, Failure> {
        let now = self.now;
        let Some(runnable) = self.executor.pick(now) else {
            return Ok(None);
        };
        let meta = runnable.metadata().meta;
        let cost = self.executor.draw_poll_cost();
        self.trace.stamp_poll(now, meta.node, meta.id);
        self.shared.poll_end.clear();
        if self.trace_entered.load(Ordering::Relaxed) {
            runnable.run();
        } else {
            tracing::dispatcher::with_default(&self.dispatch, || runnable.run());
        }
        self.executor.note_poll(now, cost, meta);
        self.steps += 1;
        self.now = self.executor.after_poll(now, cost);
        self.trace.stamp_idle(self.now);
        if let Some(outcome) = self.shared.poll_end.outcome() {
            let live = self.world().tasks.remove(meta.id);
            self.executor.scheduler.retire(meta.id);
            self.trace.forget_task(meta.id);
            if outcome == TaskOutcome::Panicked {
                let message = self
                    .shared
                    .poll_end
                    .take_panic_message()
                    .unwrap_or_default();
                let name = live
                    .as_ref()
                    .map_or_else(String::new, |live| live.name.to_string());
                let task = self.task_info(meta.id, &name, meta.node, TaskState::Ready);
                drop(live);
                return Err(self.fail(Failure::Panic {
                    at: now,
                    task,
                    message,
                }));
            }
            drop(live);
        }
        Ok(Some(Progress::Polled {
            task: meta.id,
            node: meta.node,
        }))
    }

    /// Nothing is ready: jump to the next event, finish, or report
    /// quiescence.
    fn idle(&mut self, horizon: Option<Instant>) -> Result<Progress, Failure> {
        let (next, live) = {
            let world = self.world();
            (world.events.next_time(), world.tasks.len())
        };
        let time_max = Instant::ZERO + self.config.limits.time_max;
        let target = match (next, horizon) {
            (Some(next), Some(horizon)) if next >= horizon => horizon,
            (Some(next), _) => next,
            (None, _) if live == 0 => return Ok(Progress::Finished),
            (None, horizon) => match (self.config.quiescence, horizon) {
                (QuiescencePolicy::Deadlock, _) => {
                    let blocked = self.tasks();
                    return Err(self.fail(Failure::Deadlock {
                        at: self.now,
                        blocked,
                    }));
                }
                (QuiescencePolicy::Idle, Some(horizon)) => horizon,
                (QuiescencePolicy::Idle, None) => return Ok(Progress::Quiescent),
            },
        };
        if target > time_max {
            let live = self.tasks();
            return Err(self.fail(Failure::TimeLimit {
                time_max: self.config.limits.time_max,
                live,
            }));
        }
        self.set_now(target.max(self.now));
        Ok(Progress::Advanced { to: self.now })
    }

    fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.timeline.publish(now);
        self.trace.stamp_idle(now);
    }

    /// Record `failure` as the run's (sticky) failure and return it.
    fn fail(&mut self, failure: Failure) -> Failure {
        self.trace.record_simulator(
            self.now,
            None,
            Level::ERROR,
            format_args!("run failed: {failure}"),
        );
        self.failure = Some(failure.clone());
        failure
    }

    /// Run `body` with the trace installed as the thread's default
    /// subscriber once for all its polls.
    fn entered<R>(&mut self, body: impl FnOnce(&mut Sim) -> R) -> R {
        if self.trace_entered.load(Ordering::Relaxed) {
            return body(self);
        }
        let dispatch = self.dispatch.clone();
        self.trace_entered.store(true, Ordering::Relaxed);
        let _entered = TraceEntered(Arc::clone(&self.trace_entered));
        tracing::dispatcher::with_default(&dispatch, || body(self))
    }

    /// Step until virtual time reaches `deadline`, the run finishes, or
    /// `on_step` breaks. `on_step` is called after every step that polled a
    /// task or applied a fault, with the simulator (to check oracles, or to
    /// inject faults of its own). What `on_step` logs through `tracing` is
    /// captured in the trace, without a task.
    pub fn run_until<B>(
        &mut self,
        deadline: Instant,
        mut on_step: impl FnMut(&mut Sim, &Progress) -> ControlFlow<B>,
    ) -> Result<RunEnd<B>, Failure> {
        self.entered(|sim| loop {
            if sim.now >= deadline {
                return Ok(RunEnd::Reached);
            }
            let progress = sim.step_within(Some(deadline))?;
            match progress {
                Progress::Finished => return Ok(RunEnd::Finished),
                Progress::Quiescent => return Ok(RunEnd::Quiescent),
                Progress::Advanced { .. } => {}
                Progress::Polled { .. } | Progress::Fault(_) => {
                    if let ControlFlow::Break(value) = on_step(sim, &progress) {
                        return Ok(RunEnd::Stopped(value));
                    }
                }
            }
        })
    }

    /// Step for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) -> Result<RunEnd, Failure> {
        let deadline = self.now + duration;
        self.run_until(deadline, |_, _| ControlFlow::Continue(()))
    }

    /// Step until no task is left (or nothing more can happen, with
    /// [`QuiescencePolicy::Idle`]).
    pub fn run(&mut self) -> Result<RunEnd, Failure> {
        self.entered(|sim| loop {
            // Every arm names its variant, so the common ones drop nothing.
            match sim.step()? {
                Progress::Finished => return Ok(RunEnd::Finished),
                Progress::Quiescent => return Ok(RunEnd::Quiescent),
                Progress::Fault(event) => drop(event),
                Progress::Polled { .. } | Progress::Advanced { .. } => {}
            }
        })
    }

    /// The global virtual time (nodes see it shifted by their skew).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// The run's configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The scheduler, described (`pct(d=3,k=1000)`).
    pub fn scheduler(&self) -> String {
        self.executor.scheduler.describe()
    }

    /// Steps taken (polls and applied faults).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Polls made.
    pub fn polls(&self) -> u64 {
        self.executor.polls
    }

    /// The run's failure, if it failed.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// The seed's streams, for the caller's own derived generators.
    pub fn choices(&self) -> Choices {
        Choices::new(self.config.seed)
    }

    /// The seed's workload stream, for the caller's workload decisions (the
    /// simulator never draws from it).
    pub fn workload_rng(&mut self) -> &mut SimRng {
        &mut self.workload_rng
    }

    /// What the network did so far.
    pub fn net_stats(&self) -> NetStats {
        self.shared.world().net.stats
    }

    /// Every buggify site asked so far.
    pub fn buggify_sites(&self) -> Vec<BuggifySite> {
        self.shared.world().buggify.sites()
    }

    /// Switch a buggify site on or off for the rest of the run.
    pub fn force_buggify(&mut self, site: &str, enabled: bool) {
        self.shared.world().buggify.force(site, enabled);
    }

    /// Every live task, in id order.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        let woken = self.shared.woken_tasks();
        let world = self.shared.world();
        world
            .tasks
            .in_order()
            .into_iter()
            .map(|live| {
                let id = &live.meta.id;
                let state = if self.executor.is_parked(*id) {
                    TaskState::Stalled
                } else if self.executor.is_runnable(*id) || woken.contains(id) {
                    TaskState::Ready
                } else {
                    TaskState::Blocked
                };
                TaskInfo {
                    id: *id,
                    name: live.name.to_string(),
                    node: live.meta.node,
                    node_name: world.node(live.meta.node).name.to_string(),
                    state,
                }
            })
            .collect()
    }

    fn task_info(&self, id: TaskId, name: &str, node: NodeId, state: TaskState) -> TaskInfo {
        TaskInfo {
            id,
            name: name.to_owned(),
            node,
            node_name: self.shared.world().node(node).name.to_string(),
            state,
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_scheduler_orders_the_tasks() {
        /// Always polls the newest ready task.
        #[derive(Default)]
        struct Newest(Vec<TaskId>);
        impl Scheduler for Newest {
            fn describe(&self) -> String {
                "newest".to_owned()
            }
            fn push(&mut self, task: TaskId) {
                self.0.push(task);
            }
            fn pop(&mut self) -> Option<TaskId> {
                let newest = self.0.iter().copied().max()?;
                self.0.retain(|task| *task != newest);
                Some(newest)
            }
            fn withdraw(&mut self, task: TaskId) {
                self.0.retain(|ready| *ready != task);
            }
            fn len(&self) -> usize {
                self.0.len()
            }
        }
        let mut sim =
            Sim::with_scheduler(SimConfig::new(1), Box::<Newest>::default()).expect("valid");
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&order);
        sim.add_node("n", move |node| {
            let log = Arc::clone(&log);
            Box::pin(async move {
                for index in 0..3 {
                    let log = Arc::clone(&log);
                    node.runtime().spawn(
                        "t",
                        Box::pin(async move { log.lock().expect("lock").push(index) }),
                    );
                }
            })
        })
        .expect("fresh");
        sim.run().expect("finishes");
        assert_eq!(sim.scheduler(), "newest");
        assert_eq!(*order.lock().expect("lock"), vec![2, 1, 0]);
    }

    #[test]
    fn a_sim_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Sim>();
        assert_send::<crate::node::NodeContext>();
    }
}
