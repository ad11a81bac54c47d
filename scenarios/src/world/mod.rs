//! The supervisor's world on the simulator: one supervisor node, agent
//! nodes, client nodes, all talking through the simulated network with
//! the production codec.
//!
//! * this file: building the [`Sim`] with its nodes, the shared handles the
//!   oracles read (the [`SupervisorSlot`], the [`ExecutionLedger`], the
//!   [`ClientBook`], the store), and healing the world at `heal`;
//! * [`launcher`]: simulated processes and the execution ledger;
//! * [`client`]: the client nodes' scripts;
//! * [`book`]: the client-observed history.
//!
//! The supervisor's store is a [`SimStore`] on its node's simulated disk,
//! which the simulator keeps across kills: a kill loses what was not
//! synced (a seeded tail may survive, the last write may land torn) and a
//! restart loads what was.

pub mod book;
pub mod client;
pub mod launcher;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use faultline_core::agent::{run_agent, AgentDeps};
use faultline_core::flaws::FlawSet;
use faultline_core::runtime::{BoxFuture, Instant};
use faultline_core::supervisor::{Snapshot, Supervisor, SupervisorDeps};
use faultline_sim::net::{Direction, Latency, LinkConfig, LossEffect};
use faultline_sim::{
    BuggifyConfig, CrashLoss, DiskConfig, Fault, FaultPlan, Life, Limits, NodeContext, NodeId,
    SchedulerKind, Sim, SimConfig, TraceCapture, TraceConfig,
};

use crate::report::TraceMode;
use crate::scenario::Scenario;
use crate::store::SimStore;
use crate::topology::{
    agent_config, agent_names, client_names, supervisor_config, AGENT_PORT, CLIENT_PORT,
    SUPERVISOR_NODE,
};
use crate::workload::Workload;
use book::ClientBook;
use client::{client_init, ClientProgram, ClientTiming};
use launcher::{ExecutionLedger, SimLauncher};

/// Trace lines kept for failure reports.
pub const TRACE_TAIL_LINES: usize = 300;

#[derive(Default)]
struct SlotState {
    current: Option<Supervisor>,
    /// Counts starts, so an observer can tell a restarted supervisor.
    generation: u64,
    start_error: Option<String>,
}

/// Where the running supervisor (if any) can be reached from outside its
/// node. Emptied when the node is killed, filled when a start completes.
#[derive(Clone, Default)]
pub struct SupervisorSlot {
    state: Arc<Mutex<SlotState>>,
}

impl SupervisorSlot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state
            .lock()
            .expect("the supervisor slot is never locked across a panic")
    }

    fn set(&self, supervisor: Supervisor) {
        let mut state = self.lock();
        state.current = Some(supervisor);
        state.generation += 1;
    }

    fn fail(&self, error: String) {
        self.lock().start_error.get_or_insert(error);
    }

    /// The node died: its supervisor is gone.
    pub fn clear(&self) {
        self.lock().current = None;
    }

    /// The running supervisor's snapshot and its start generation.
    pub fn snapshot(&self) -> Option<(Snapshot, u64)> {
        let (supervisor, generation) = {
            let state = self.lock();
            (state.current.clone()?, state.generation)
        };
        Some((supervisor.snapshot(), generation))
    }

    /// Why the supervisor could not start, if it could not.
    pub fn start_error(&self) -> Option<String> {
        self.lock().start_error.clone()
    }
}

/// The world of one run: the simulator and the handles the oracles read.
pub struct World {
    /// The simulator.
    pub sim: Sim,
    /// What the oracles read.
    pub handles: Handles,
}

/// The world's shared handles, apart from the simulator so that a step
/// callback can read them while the simulator steps.
pub struct Handles {
    /// The supervisor, as the oracles reach it.
    pub supervisor: SupervisorSlot,
    /// Every process execution.
    pub ledger: ExecutionLedger,
    /// What clients saw.
    pub book: ClientBook,
    /// The supervisor's node.
    pub supervisor_node: NodeId,
    /// Every node's id, by name.
    pub nodes: Vec<(String, NodeId)>,
}

/// The simulator configuration of a run.
pub fn sim_config(
    scenario: &Scenario,
    seed: u64,
    scheduler: SchedulerKind,
    trace: TraceMode,
) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.scheduler = scheduler;
    config.limits = Limits {
        steps_max: 20_000_000,
        time_max: scenario.duration + Duration::from_secs(3_600),
    };
    config.trace = TraceConfig {
        capture: match trace {
            TraceMode::Hash => TraceCapture::HashOnly,
            TraceMode::Full => TraceCapture::Full,
        },
        tail_lines: TRACE_TAIL_LINES,
        ..TraceConfig::default()
    };
    config.link_default = fault_phase_link(scenario);
    config.buggify = BUGGIFY;
    config
}

/// Buggify in the supervisor's world: half the sites are on in a run, and
/// an enabled site fires one time in five (core's sites are few and each
/// widens a window a race needs, such as a slot hand-off).
const BUGGIFY: BuggifyConfig = BuggifyConfig::On {
    site_probability: 0.5,
    fire_probability: 0.2,
};

/// The links during the fault phase: the scenario's network profile. A
/// lost frame breaks its connection (a TCP or WebSocket connection fails
/// rather than skip a frame).
fn fault_phase_link(scenario: &Scenario) -> LinkConfig {
    let network = &scenario.network;
    LinkConfig {
        latency: Latency::Uniform {
            min: network.latency_min,
            max: network.latency_max,
        },
        loss: network.loss,
        loss_effect: LossEffect::ResetConnection,
        duplicate: network.duplicate,
        reorder: network.reorder,
    }
}

/// The links after heal: the same latency, nothing lost, duplicated or
/// reordered.
fn healed_link(scenario: &Scenario) -> LinkConfig {
    LinkConfig {
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        ..fault_phase_link(scenario)
    }
}

/// How long client scripts keep going: until the end of the liveness window.
fn client_timing(scenario: &Scenario) -> ClientTiming {
    ClientTiming {
        call_timeout: scenario.supervisor.reply_timeout,
        retry_delay: Duration::from_secs(1),
        poll_interval: Duration::from_secs(5),
        deadline: scenario.heal + scenario.liveness_window,
    }
}

impl World {
    /// Build the world of `scenario` for a run.
    pub fn build(
        scenario: &Scenario,
        config: SimConfig,
        flaws: FlawSet,
        workload: &Workload,
    ) -> World {
        let mut sim = Sim::new(config).expect("the run's simulator configuration is valid");
        let supervisor = SupervisorSlot::default();
        let ledger = ExecutionLedger::default();
        let book = ClientBook::new(workload.actions.len());
        let supervisor_node = sim
            .add_node(
                SUPERVISOR_NODE,
                supervisor_init(scenario, &supervisor, flaws),
            )
            .expect("a fresh simulator has no node named sup");
        sim.set_disk(supervisor_node, SUPERVISOR_DISK)
            .expect("the supervisor's disk configuration is valid");
        let mut nodes = vec![(SUPERVISOR_NODE.to_owned(), supervisor_node)];
        for name in agent_names(scenario) {
            let init = agent_init(scenario, &name, &ledger);
            let id = sim.add_node(&name, init).expect("agent names are unique");
            nodes.push((name, id));
        }
        let workload = Arc::new(workload.clone());
        for name in client_names(scenario) {
            let program = Arc::new(ClientProgram {
                actions: workload
                    .actions
                    .iter()
                    .cloned()
                    .enumerate()
                    .filter(|(_, action)| action.client == name)
                    .collect(),
                workload: Arc::clone(&workload),
                book: book.clone(),
                timing: client_timing(scenario),
            });
            let id = sim
                .add_node(&name, client_init(program))
                .expect("client names are unique");
            nodes.push((name, id));
        }
        for (index, (_, id)) in nodes.iter().enumerate() {
            assert_eq!(
                id.index(),
                index,
                "nodes are numbered supervisor, agents, clients (the checker relies on it)"
            );
        }
        World {
            sim,
            handles: Handles {
                supervisor,
                ledger,
                book,
                supervisor_node,
                nodes,
            },
        }
    }

    /// End the fault phase: clean links, every killed node restarted, every
    /// partition and clog of `plan` still in force undone, clocks back to
    /// true time. Stalls end on their own.
    pub fn heal(&mut self, scenario: &Scenario, plan: &FaultPlan) {
        let link = healed_link(scenario);
        let ids: Vec<NodeId> = self.handles.nodes.iter().map(|(_, id)| *id).collect();
        for from in &ids {
            for to in &ids {
                if from != to {
                    self.sim
                        .set_link(*from, *to, link)
                        .expect("a healed link is a valid link");
                }
            }
        }
        let (partitions, clogs) = still_in_force(plan);
        for (a, b, direction) in partitions {
            let (a, b) = (self.ids(&a), self.ids(&b));
            self.sim.heal(&a, &b, direction);
        }
        for (from, to) in clogs {
            let (from, to) = (self.id(&from), self.id(&to));
            self.sim.unclog(from, to);
        }
        for node in self.sim.nodes() {
            if node.life == Life::Killed {
                self.sim
                    .restart(node.id)
                    .expect("a killed node can be restarted");
            }
            if node.clock_offset_nanos != 0 {
                self.sim.skew(node.id, 0);
            }
        }
    }

    fn id(&self, name: &str) -> NodeId {
        self.handles
            .nodes
            .iter()
            .find(|(node, _)| node == name)
            .map(|(_, id)| *id)
            .expect("plans name nodes of the world")
    }

    fn ids(&self, names: &[String]) -> Vec<NodeId> {
        names.iter().map(|name| self.id(name)).collect()
    }
}

impl Handles {
    /// The supervisor node was killed: its supervisor is gone (its disk
    /// lost what was not synced, by the simulator's doing).
    pub fn on_supervisor_killed(&self) {
        self.supervisor.clear();
    }
}

type Partition = (Vec<String>, Vec<String>, Direction);

/// The partitions and clogs `plan` leaves in force after its last event.
fn still_in_force(plan: &FaultPlan) -> (Vec<Partition>, Vec<(String, String)>) {
    let mut partitions: Vec<Partition> = Vec::new();
    let mut clogs: BTreeSet<(String, String)> = BTreeSet::new();
    for event in &plan.events {
        match &event.fault {
            Fault::Partition { a, b, direction } => {
                partitions.push((a.clone(), b.clone(), *direction));
            }
            Fault::Heal { a, b, direction } => {
                if let Some(index) = partitions
                    .iter()
                    .position(|(pa, pb, pd)| pa == a && pb == b && pd == direction)
                {
                    partitions.remove(index);
                }
            }
            Fault::Clog { from, to } => {
                clogs.insert((from.clone(), to.clone()));
            }
            Fault::Unclog { from, to } => {
                clogs.remove(&(from.clone(), to.clone()));
            }
            _ => {}
        }
    }
    (partitions, clogs.into_iter().collect())
}

/// The supervisor's disk: a kill loses a seeded tail of what was not
/// synced, and sometimes tears the last write.
const SUPERVISOR_DISK: DiskConfig = DiskConfig {
    sync_latency_min: Duration::from_micros(500),
    sync_latency_max: Duration::from_millis(4),
    crash_loss: CrashLoss::UnsyncedTail,
    torn_write_chance: 0.2,
    unsynced_writes_max: 100_000,
    value_bytes_max: 16 << 20,
};

/// The supervisor node's init: open the store on its disk as a restarted
/// process would, start the supervisor, publish it, serve agents and
/// clients.
fn supervisor_init(
    scenario: &Scenario,
    slot: &SupervisorSlot,
    flaws: FlawSet,
) -> impl Fn(NodeContext) -> BoxFuture<'static, ()> + Send + Sync + 'static {
    let config = supervisor_config(scenario);
    let slot = slot.clone();
    move |context: NodeContext| {
        let (config, slot) = (config.clone(), slot.clone());
        Box::pin(async move {
            let store = match SimStore::open(context.disk()) {
                Ok(store) => store,
                Err(error) => {
                    tracing::error!(%error, "the supervisor cannot open its store");
                    return slot.fail(error.to_string());
                }
            };
            let deps = SupervisorDeps {
                runtime: context.runtime(),
                store: Arc::new(store),
                flaws,
            };
            match Supervisor::start(config, deps).await {
                Ok(supervisor) => {
                    slot.set(supervisor.clone());
                    supervisor
                        .serve_net(context.net(), AGENT_PORT, CLIENT_PORT)
                        .await;
                }
                Err(error) => {
                    tracing::error!(%error, "the supervisor cannot start");
                    slot.fail(error.to_string());
                }
            }
        })
    }
}

/// An agent node's init: run the agent with a simulated launcher.
fn agent_init(
    scenario: &Scenario,
    name: &str,
    ledger: &ExecutionLedger,
) -> impl Fn(NodeContext) -> BoxFuture<'static, ()> + Send + Sync + 'static {
    let config = agent_config(scenario, name);
    let ledger = ledger.clone();
    let name = name.to_owned();
    move |context: NodeContext| {
        let runtime = context.runtime();
        let launcher = SimLauncher::new(runtime.clone(), &name, ledger.clone());
        let deps = AgentDeps {
            runtime,
            net: context.net(),
            launcher: Arc::new(launcher),
        };
        let config = config.clone();
        Box::pin(async move {
            if let Err(error) = run_agent(config, deps).await {
                tracing::error!(%error, "the agent stopped");
            }
        })
    }
}

/// Virtual time since the start of the run.
pub fn since_start(now: Instant) -> Duration {
    now - Instant::ZERO
}
