//! `chatter`: the determinism program. Four nodes each run a server (accept
//! connections, log and acknowledge every frame) and a sender (sleep a
//! random while, pick a random peer, connect or reuse the connection, send
//! a numbered greeting), under 5% loss, 5% duplication, 5% reordering and
//! 1–20 ms latency, with a partition `{n0,n1} | {n2,n3}` from 300 ms to
//! 700 ms and `n3` killed at 400 ms and restarted at 900 ms. The run lasts
//! 1.5 s of virtual time. Everything logs through `tracing` inside spans
//! with fields, so the trace hash covers all of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::runtime::{Connection, Instant, Net, NetError, Runtime};
use tracing::Instrument;

use crate::config::{QuiescencePolicy, SimConfig};
use crate::failure::Failure;
use crate::net::{Direction, Latency, LinkConfig, LossEffect};
use crate::node::NodeContext;
use crate::plan::{Fault, FaultEvent, FaultPlan};
use crate::scheduler::SchedulerKind;
use crate::sim::{RunEnd, Sim};
use crate::trace::TraceCapture;

/// The nodes of the program.
pub const NODES: [&str; 4] = ["n0", "n1", "n2", "n3"];
const PORT: u16 = 7;
const ROUNDS: u32 = 8;
/// How long the program runs, in virtual time.
pub const DURATION: Duration = Duration::from_millis(1_500);

/// The configuration of the program for `seed`.
pub fn config(seed: u64, scheduler: SchedulerKind, capture: TraceCapture) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.scheduler = scheduler;
    config.quiescence = QuiescencePolicy::Idle;
    config.trace.capture = capture;
    config.link_default = LinkConfig {
        latency: Latency::Uniform {
            min: Duration::from_millis(1),
            max: Duration::from_millis(20),
        },
        loss: 0.05,
        loss_effect: LossEffect::DropFrame,
        duplicate: 0.05,
        reorder: 0.05,
    };
    config
}

/// The fault plan of the program.
pub fn plan() -> FaultPlan {
    let group = |names: &[&str]| {
        names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>()
    };
    let at = |millis, fault| FaultEvent {
        at: Duration::from_millis(millis),
        fault,
    };
    FaultPlan::new(vec![
        at(
            300,
            Fault::Partition {
                a: group(&["n0", "n1"]),
                b: group(&["n2", "n3"]),
                direction: Direction::Both,
            },
        ),
        at(
            400,
            Fault::Kill {
                node: "n3".to_owned(),
            },
        ),
        at(
            700,
            Fault::Heal {
                a: group(&["n0", "n1"]),
                b: group(&["n2", "n3"]),
                direction: Direction::Both,
            },
        ),
        at(
            900,
            Fault::Restart {
                node: "n3".to_owned(),
            },
        ),
    ])
}

/// Build the program's simulation (nodes added, plan applied).
pub fn build(config: SimConfig) -> Sim {
    let mut sim = Sim::new(config).expect("the chatter configuration is valid");
    for name in NODES {
        sim.add_node(name, |node| Box::pin(start(node)))
            .expect("distinct node names");
    }
    sim.apply_plan(&plan()).expect("the chatter plan is valid");
    sim
}

/// Run the program for `seed`; returns the simulation (for its trace) and
/// how the run ended.
pub fn run(
    seed: u64,
    scheduler: SchedulerKind,
    capture: TraceCapture,
) -> (Sim, Result<RunEnd, Failure>) {
    let mut sim = build(config(seed, scheduler, capture));
    let end = sim.run_until(Instant::ZERO + DURATION, |_, _| {
        std::ops::ControlFlow::<()>::Continue(())
    });
    (sim, end)
}

/// A node's init: a server and a sender, in a span naming the node.
async fn start(node: NodeContext) {
    let span = tracing::info_span!("node", name = node.name(), incarnation = node.incarnation());
    let runtime = node.runtime();
    let net = node.net();
    let name = node.name().to_owned();
    runtime.spawn(
        "server",
        Box::pin(serve(Arc::clone(&runtime), Arc::clone(&net)).instrument(span.clone())),
    );
    runtime.spawn(
        "sender",
        Box::pin(send(runtime.clone(), net, name).instrument(span)),
    );
}

async fn serve(runtime: Arc<dyn Runtime>, net: Arc<dyn Net>) {
    let Ok(mut listener) = net.listen(PORT) else {
        tracing::warn!("cannot listen");
        return;
    };
    while let Ok(connection) = listener.accept().await {
        let peer = connection.peer.clone();
        let span = tracing::info_span!("conn", peer = %peer);
        runtime.spawn("reader", Box::pin(read(connection, true).instrument(span)));
    }
}

/// Log every frame; acknowledge it if `acknowledge`.
async fn read(mut connection: Connection, acknowledge: bool) {
    loop {
        match connection.receiver.recv().await {
            Ok(frame) => {
                let text = String::from_utf8_lossy(&frame).into_owned();
                tracing::info!(bytes = frame.len(), "received {text}");
                if acknowledge {
                    let _ = connection.sender.send(format!("ack {text}").into_bytes());
                }
            }
            Err(error) => {
                tracing::info!(%error, "connection over");
                return;
            }
        }
    }
}

async fn send(runtime: Arc<dyn Runtime>, net: Arc<dyn Net>, me: String) {
    let mut connections: BTreeMap<String, Connection> = BTreeMap::new();
    for round in 0..ROUNDS {
        let pause = Duration::from_millis(10 + runtime.random_u64() % 150);
        runtime.sleep(pause).await;
        let peers: Vec<&str> = NODES.iter().copied().filter(|peer| *peer != me).collect();
        let peer = peers[(runtime.random_u64() % peers.len() as u64) as usize].to_owned();
        if !connections.contains_key(&peer) {
            match net.connect(&format!("{peer}:{PORT}")).await {
                Ok(connection) => {
                    tracing::info!(%peer, "connected");
                    connections.insert(peer.clone(), connection);
                }
                Err(error) => {
                    tracing::info!(%peer, %error, "connect failed");
                    continue;
                }
            }
        }
        let connection = connections.get_mut(&peer).expect("inserted above");
        let greeting = format!("hello {round} from {me}");
        match connection.sender.send(greeting.into_bytes()) {
            Ok(()) => tracing::info!(%peer, round, "sent"),
            Err(error) => {
                tracing::info!(%peer, %error, "send failed");
                connections.remove(&peer);
            }
        }
        if let Some(connection) = connections.get_mut(&peer) {
            // Take one acknowledgement if it comes soon; give up otherwise.
            match acknowledgement(&runtime, connection).await {
                Some(Ok(frame)) => tracing::info!(%peer, "got {}", String::from_utf8_lossy(&frame)),
                Some(Err(error)) => {
                    tracing::info!(%peer, %error, "connection lost");
                    connections.remove(&peer);
                }
                None => tracing::info!(%peer, "no ack in time"),
            }
        }
    }
    tracing::info!(rounds = ROUNDS, "sender done");
}

/// The next frame on `connection` within 40 ms, if any.
async fn acknowledgement(
    runtime: &Arc<dyn Runtime>,
    connection: &mut Connection,
) -> Option<Result<Vec<u8>, NetError>> {
    use futures::FutureExt;
    let mut ack = connection.receiver.recv().fuse();
    let mut timeout = runtime.sleep(Duration::from_millis(40)).fuse();
    futures::select_biased! {
        ack = ack => Some(ack),
        () = timeout => None,
    }
}
