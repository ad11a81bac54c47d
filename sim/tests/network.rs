//! The exact semantics of every network fault (see `sim/src/net/mod.rs`).
//! Timing is exact: links take 10 ms, polls cost nothing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use faultline_core::runtime::{Connection, NetError, Runtime, MAX_FRAME_BYTES};
use faultline_sim::{
    Direction, Fault, FaultEvent, FaultPlan, Latency, LinkConfig, LossEffect, NodeId, Sim,
};
use support::{exact_sim, ms, node, now_ms, Log, LATENCY};

/// A server on port 1 that logs `(arrival ms, frame)` for every frame of
/// every connection, and `(ms, error)` when a connection ends.
fn logging_server(
    sim: &mut Sim,
    frames: Log<(u64, Vec<u8>)>,
    ends: Log<(u64, NetError)>,
) -> NodeId {
    node(sim, "server", move |context| {
        let (frames, ends) = (frames.clone(), ends.clone());
        async move {
            let runtime = context.runtime();
            let mut listener = context.net().listen(1).expect("a free port");
            while let Ok(mut connection) = listener.accept().await {
                let (frames, ends, clock) = (frames.clone(), ends.clone(), runtime.clone());
                runtime.spawn(
                    "reader",
                    Box::pin(async move {
                        loop {
                            match connection.receiver.recv().await {
                                Ok(frame) => frames.push((now_ms(&clock), frame)),
                                Err(error) => return ends.push((now_ms(&clock), error)),
                            }
                        }
                    }),
                );
            }
        }
    })
}

/// A client that connects to `server:1` and sends frame `i` (4 bytes) every
/// `interval`, `count` times, logging `(ms, send result)`.
fn sending_client(
    sim: &mut Sim,
    count: u32,
    interval: Duration,
    sends: Log<(u64, Result<(), NetError>)>,
) -> NodeId {
    node(sim, "client", move |context| {
        let sends = sends.clone();
        async move {
            let runtime = context.runtime();
            let connection = context
                .net()
                .connect("server:1")
                .await
                .expect("the server listens");
            for seq in 0..count {
                runtime.sleep(interval).await;
                sends.push((
                    now_ms(&runtime),
                    connection.sender.send(seq.to_be_bytes().to_vec()),
                ));
            }
            // Keep the connection open until the run ends.
            runtime.sleep(Duration::from_secs(3600)).await;
        }
    })
}

fn seq(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame.try_into().expect("4-byte frames"))
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn at(millis: u64, fault: Fault) -> FaultEvent {
    FaultEvent {
        at: Duration::from_millis(millis),
        fault,
    }
}

/// Client and server partitioned from each other, in `direction`.
fn partition(direction: Direction) -> Fault {
    Fault::Partition {
        a: names(&["client"]),
        b: names(&["server"]),
        direction,
    }
}

/// The both-ways partition between client and server healed.
fn heal() -> Fault {
    Fault::Heal {
        a: names(&["client"]),
        b: names(&["server"]),
        direction: Direction::Both,
    }
}

struct Setup {
    sim: Sim,
    frames: Log<(u64, Vec<u8>)>,
    ends: Log<(u64, NetError)>,
    sends: Log<(u64, Result<(), NetError>)>,
    client: NodeId,
    server: NodeId,
}

impl Setup {
    /// The sequence numbers the server received, in arrival order.
    fn received(&self) -> Vec<u32> {
        self.frames
            .entries()
            .iter()
            .map(|(_, frame)| seq(frame))
            .collect()
    }

    /// Configure the link from the client to the server.
    fn set_link(&mut self, link: LinkConfig) {
        self.sim
            .set_link(self.client, self.server, link)
            .expect("a valid link");
    }

    /// Whether every send the client made was accepted.
    fn every_send_ok(&self) -> bool {
        self.sends
            .entries()
            .iter()
            .all(|(_, result)| result.is_ok())
    }
}

fn setup(count: u32, interval: Duration) -> Setup {
    let mut sim = exact_sim(1);
    let (frames, ends, sends) = (Log::new(), Log::new(), Log::new());
    let server = logging_server(&mut sim, frames.clone(), ends.clone());
    let client = sending_client(&mut sim, count, interval, sends.clone());
    Setup {
        sim,
        frames,
        ends,
        sends,
        client,
        server,
    }
}

#[test]
fn a_lost_frame_is_never_delivered() {
    let mut setup = setup(300, Duration::from_millis(1));
    let lossy = LinkConfig {
        loss: 0.3,
        ..LinkConfig::fixed(LATENCY)
    };
    setup.set_link(lossy);
    setup
        .sim
        .run_until(ms(2_000), |_, _| std::ops::ControlFlow::<()>::Continue(()))
        .expect("runs");
    let received = setup.received();
    let stats = setup.sim.net_stats();
    assert_eq!(stats.frames_sent, 300);
    assert!(
        stats.frames_lost > 30,
        "about 90 of 300 lost, got {}",
        stats.frames_lost
    );
    assert_eq!(received.len() as u64, stats.frames_sent - stats.frames_lost);
    assert_eq!(received.len() as u64, stats.frames_delivered);
    assert!(
        received.windows(2).all(|pair| pair[0] < pair[1]),
        "no frame twice, none out of order"
    );

    let mut setup = self::setup(50, Duration::from_millis(1));
    let black_hole = LinkConfig {
        loss: 1.0,
        ..LinkConfig::fixed(LATENCY)
    };
    setup.set_link(black_hole);
    setup.sim.run_for(Duration::from_secs(2)).expect("runs");
    assert!(setup.frames.entries().is_empty());
    assert_eq!(setup.sim.net_stats().frames_lost, 50);
}

#[test]
fn a_loss_that_resets_the_connection_fails_both_ends_at_once() {
    let mut setup = setup(100, Duration::from_millis(10));
    let breaking = LinkConfig {
        loss: 0.2,
        loss_effect: LossEffect::ResetConnection,
        ..LinkConfig::fixed(LATENCY)
    };
    setup.set_link(breaking);
    setup.sim.run_for(Duration::from_secs(2)).expect("runs");
    let received = setup.received();
    let first_failure = setup
        .sends
        .entries()
        .iter()
        .position(|(_, result)| result.is_err());
    let first_failure =
        first_failure.expect("a 20% loss breaks the connection in 100 frames") as u32;
    // Frame `first_failure - 1` was the lost one; every frame before it arrived.
    assert_eq!(
        received,
        (0..first_failure - 1).collect::<Vec<_>>(),
        "no gap: the stream broke instead"
    );
    assert_eq!(setup.sim.net_stats().frames_lost, 1);
    assert_eq!(setup.ends.entries().len(), 1);
    assert_eq!(setup.ends.entries()[0].1, NetError::Reset);
}

#[test]
fn a_duplicated_frame_is_delivered_twice() {
    let mut setup = setup(20, Duration::from_millis(5));
    let doubling = LinkConfig {
        duplicate: 1.0,
        ..LinkConfig::fixed(LATENCY)
    };
    setup.set_link(doubling);
    setup.sim.run_for(Duration::from_secs(1)).expect("runs");
    let received = setup.received();
    let expected: Vec<u32> = (0..20).flat_map(|seq| [seq, seq]).collect();
    assert_eq!(received, expected);
    assert_eq!(setup.sim.net_stats().frames_duplicated, 20);
}

#[test]
fn a_partition_drops_frames_until_it_heals_at_the_planned_time() {
    let mut setup = setup(100, Duration::from_millis(10));
    let plan = FaultPlan::new(vec![at(100, partition(Direction::Both)), at(500, heal())]);
    setup.sim.apply_plan(&plan).expect("a valid plan");
    setup.sim.run_for(Duration::from_secs(2)).expect("runs");
    // Connected at 20 ms (a round trip); frame i is sent at 30 + 10 i and
    // arrives 10 ms later, unless it is sent while the partition holds or is
    // in flight when it starts.
    let expected: Vec<(u64, u32)> = (0..100u32)
        .map(|seq| (30 + 10 * u64::from(seq), seq))
        .filter(|(sent, _)| sent + 10 < 100 || *sent >= 500)
        .map(|(sent, seq)| (sent + 10, seq))
        .collect();
    let received: Vec<(u64, u32)> = setup
        .frames
        .entries()
        .iter()
        .map(|(at, frame)| (*at, seq(frame)))
        .collect();
    assert_eq!(received, expected);
    let first_after = received
        .iter()
        .find(|(at, _)| *at >= 100)
        .map(|(at, _)| *at);
    assert_eq!(
        first_after,
        Some(510),
        "the first frame sent at the heal arrives"
    );
    assert!(setup.every_send_ok(), "a partition is silent");
}

#[test]
fn a_partition_breaks_a_stream_connection_rather_than_skip_a_frame() {
    let mut setup = setup(100, Duration::from_millis(10));
    let stream = LinkConfig {
        loss_effect: LossEffect::ResetConnection,
        ..LinkConfig::fixed(LATENCY)
    };
    setup.set_link(stream);
    let plan = FaultPlan::new(vec![at(100, partition(Direction::Both)), at(500, heal())]);
    setup.sim.apply_plan(&plan).expect("a valid plan");
    setup.sim.run_for(Duration::from_secs(2)).expect("runs");
    let received = setup.received();
    // Frame i is sent at 30 + 10 i: frames 0..=5 arrive before the
    // partition; frame 6 is due at 100 ms, as it starts, so it is cut and the
    // connection breaks: nothing arrives after a gap.
    assert_eq!(received, (0..6).collect::<Vec<_>>());
    assert_eq!(setup.ends.entries(), vec![(100, NetError::Reset)]);
    assert!(
        setup
            .sends
            .entries()
            .iter()
            .any(|(_, result)| result.is_err()),
        "the sender learns the connection is over"
    );
}

/// Send 50 numbered frames on `connection`, one every 10 ms, while logging
/// every frame received (with its arrival time) until the connection ends.
async fn chat(runtime: &Arc<dyn Runtime>, mut connection: Connection, log: &Log<(u64, u32)>) {
    let sender = connection.sender.clone();
    let clock = runtime.clone();
    runtime.spawn(
        "writer",
        Box::pin(async move {
            for seq in 0..50u32 {
                clock.sleep(Duration::from_millis(10)).await;
                let _ = sender.send(seq.to_be_bytes().to_vec());
            }
        }),
    );
    while let Ok(frame) = connection.receiver.recv().await {
        log.push((now_ms(runtime), seq(&frame)));
    }
}

#[test]
fn a_one_way_partition_cuts_only_its_direction() {
    let mut sim = exact_sim(1);
    let at_client = Log::new();
    let at_server = Log::new();
    let server_log = at_server.clone();
    node(&mut sim, "server", move |context| {
        let log = server_log.clone();
        async move {
            let runtime = context.runtime();
            let mut listener = context.net().listen(1).expect("a free port");
            let connection = listener.accept().await.expect("one client");
            chat(&runtime, connection, &log).await;
        }
    });
    let client_log = at_client.clone();
    node(&mut sim, "client", move |context| {
        let log = client_log.clone();
        async move {
            let runtime = context.runtime();
            let connection = context.net().connect("server:1").await.expect("listening");
            chat(&runtime, connection, &log).await;
        }
    });
    let plan = FaultPlan::new(vec![at(200, partition(Direction::OneWay))]);
    sim.apply_plan(&plan).expect("a valid plan");
    sim.run_for(Duration::from_secs(1)).expect("runs");
    let client_to_server = at_server.entries();
    assert!(!client_to_server.is_empty());
    assert!(
        client_to_server.iter().all(|(arrival, _)| *arrival < 200),
        "{client_to_server:?}"
    );
    let server_to_client: Vec<u32> = at_client.entries().iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        server_to_client,
        (0..50).collect::<Vec<_>>(),
        "the other way still works"
    );
}

#[test]
fn a_clogged_link_holds_frames_and_delivers_them_in_order_when_unclogged() {
    let mut setup = setup(40, Duration::from_millis(10));
    let plan = FaultPlan::new(vec![
        at(
            100,
            Fault::Clog {
                from: "client".into(),
                to: "server".into(),
            },
        ),
        at(
            300,
            Fault::Unclog {
                from: "client".into(),
                to: "server".into(),
            },
        ),
    ]);
    setup.sim.apply_plan(&plan).expect("a valid plan");
    setup.sim.run_for(Duration::from_secs(1)).expect("runs");
    let received: Vec<(u64, u32)> = setup
        .frames
        .entries()
        .iter()
        .map(|(at, frame)| (*at, seq(frame)))
        .collect();
    let expected: Vec<(u64, u32)> = (0..40u32)
        .map(|seq| {
            let arrival = 30 + 10 * u64::from(seq) + 10;
            let held = (100..300).contains(&arrival);
            (if held { 300 } else { arrival }, seq)
        })
        .collect();
    assert_eq!(
        received, expected,
        "nothing lost, order kept, held frames arrive at the unclog"
    );
}

#[test]
fn a_reset_fails_both_ends_at_once() {
    let mut setup = setup(30, Duration::from_millis(10));
    let plan = FaultPlan::new(vec![at(
        200,
        Fault::Reset {
            node: "client".into(),
            peer: Some("server".into()),
        },
    )]);
    setup.sim.apply_plan(&plan).expect("a valid plan");
    setup.sim.run_for(Duration::from_secs(1)).expect("runs");
    assert_eq!(setup.ends.entries(), vec![(200, NetError::Reset)]);
    let sends = setup.sends.entries();
    assert!(sends
        .iter()
        .filter(|(at, _)| *at < 200)
        .all(|(_, result)| result.is_ok()));
    assert!(sends
        .iter()
        .filter(|(at, _)| *at >= 200)
        .all(|(_, result)| *result == Err(NetError::Reset)));
    assert!(setup
        .frames
        .entries()
        .iter()
        .all(|(arrival, _)| *arrival <= 200));
}

#[test]
fn frames_sent_to_a_killed_node_are_lost_and_its_peer_learns_one_latency_later() {
    let mut setup = setup(40, Duration::from_millis(10));
    let plan = FaultPlan::new(vec![
        at(
            200,
            Fault::Kill {
                node: "server".into(),
            },
        ),
        at(
            300,
            Fault::Restart {
                node: "server".into(),
            },
        ),
    ]);
    setup.sim.apply_plan(&plan).expect("a valid plan");
    setup.sim.run_for(Duration::from_secs(1)).expect("runs");
    let frames = setup.frames.entries();
    assert!(
        frames.iter().all(|(arrival, _)| *arrival < 200),
        "nothing reaches a killed node: {frames:?}"
    );
    let first_failure = setup
        .sends
        .entries()
        .into_iter()
        .find(|(_, result)| result.is_err());
    assert_eq!(
        first_failure,
        Some((210, Err(NetError::Reset))),
        "the reset notice takes one latency"
    );
    assert!(
        setup.sim.net_stats().frames_dropped >= 1,
        "the frame sent at 200 ms was dropped on arrival"
    );
}

#[test]
fn a_peer_behind_a_partition_never_learns_of_a_kill() {
    let mut setup = setup(40, Duration::from_millis(10));
    let plan = FaultPlan::new(vec![
        at(100, partition(Direction::Both)),
        at(
            150,
            Fault::Kill {
                node: "server".into(),
            },
        ),
        at(250, heal()),
    ]);
    setup.sim.apply_plan(&plan).expect("a valid plan");
    setup.sim.run_for(Duration::from_secs(1)).expect("runs");
    assert!(setup.every_send_ok(), "half-open: sends still succeed");
    assert!(
        setup.sim.net_stats().frames_dropped > 0,
        "frames after the heal reach a dead end"
    );
}

#[test]
fn connection_attempts_are_refused_and_never_hang() {
    let mut sim = exact_sim(1);
    let results = Log::new();
    node(&mut sim, "server", |context| async move {
        let _listener = context.net().listen(1).expect("a free port");
        context.runtime().sleep(Duration::from_secs(10)).await;
    });
    let log = results.clone();
    let client = node(&mut sim, "client", move |context| {
        let log = log.clone();
        async move {
            let runtime = context.runtime();
            for address in ["server:9", "nowhere:1", "server", "server:1", "server:1"] {
                let result = context.net().connect(address).await.map(|_| ());
                log.push((now_ms(&runtime), address, result));
            }
        }
    });
    let server = sim.node_id("server").expect("added");
    // The fourth attempt is under way at 35 ms when the way back is cut: its
    // answer still arrives (answers always do); the fifth is refused at once.
    sim.run_until(ms(35), |_, _| std::ops::ControlFlow::<()>::Continue(()))
        .expect("runs");
    sim.partition(&[server], &[client], Direction::OneWay);
    sim.run_for(Duration::from_secs(1)).expect("runs");
    let results = results.entries();
    assert!(
        matches!(&results[0], (20, "server:9", Err(NetError::Refused(why))) if why.contains("nothing listens"))
    );
    assert!(
        matches!(&results[1], (20, "nowhere:1", Err(NetError::Refused(why))) if why.contains("no node named"))
    );
    assert!(matches!(
        &results[2],
        (20, "server", Err(NetError::Refused(_)))
    ));
    assert!(matches!(&results[3], (40, "server:1", Ok(()))));
    assert!(
        matches!(&results[4], (40, "server:1", Err(NetError::Refused(why))) if why.contains("unreachable"))
    );
}

#[test]
fn frames_keep_their_order_unless_reordering_is_on() {
    for (reorder, expect_order) in [(0.0, true), (1.0, false)] {
        let mut setup = setup(200, Duration::from_millis(1));
        let jittery = LinkConfig {
            latency: Latency::Uniform {
                min: Duration::from_millis(1),
                max: Duration::from_millis(50),
            },
            reorder,
            ..LinkConfig::default()
        };
        setup.set_link(jittery);
        setup.sim.run_for(Duration::from_secs(2)).expect("runs");
        let received: Vec<u32> = setup
            .frames
            .entries()
            .iter()
            .map(|(_, frame)| seq(frame))
            .collect();
        assert_eq!(received.len(), 200, "nothing lost");
        let in_order = received.windows(2).all(|pair| pair[0] < pair[1]);
        assert_eq!(in_order, expect_order, "reorder = {reorder}");
    }
}

#[test]
fn an_oversized_frame_is_refused_without_sending() {
    let mut sim = exact_sim(1);
    let (frames, ends) = (Log::new(), Log::new());
    logging_server(&mut sim, frames.clone(), ends.clone());
    let results = Log::new();
    let log = results.clone();
    node(&mut sim, "client", move |context| {
        let log = log.clone();
        async move {
            let connection = context.net().connect("server:1").await.expect("listening");
            log.push(connection.sender.send(vec![0; MAX_FRAME_BYTES + 1]));
            log.push(connection.sender.send(vec![0; MAX_FRAME_BYTES]));
        }
    });
    sim.run_for(Duration::from_secs(1)).expect("runs");
    assert_eq!(
        results.entries(),
        vec![
            Err(NetError::FrameTooLarge {
                size: MAX_FRAME_BYTES + 1,
                limit: MAX_FRAME_BYTES
            }),
            Ok(())
        ]
    );
    assert_eq!(sim.net_stats().frames_sent, 1);
    assert_eq!(frames.entries().len(), 1);
}

#[test]
fn an_orderly_close_delivers_every_frame_then_closed() {
    let mut sim = exact_sim(1);
    let (frames, ends) = (Log::new(), Log::new());
    logging_server(&mut sim, frames.clone(), ends.clone());
    let after = Log::new();
    let log = after.clone();
    node(&mut sim, "client", move |context| {
        let log = log.clone();
        async move {
            let connection = context.net().connect("server:1").await.expect("listening");
            for seq in 0..5u32 {
                connection
                    .sender
                    .send(seq.to_be_bytes().to_vec())
                    .expect("open");
            }
            connection.sender.close();
            log.push((
                connection.sender.is_closed(),
                connection.sender.send(vec![1]),
            ));
        }
    });
    sim.run_for(Duration::from_secs(1)).expect("runs");
    let received: Vec<u32> = frames
        .entries()
        .iter()
        .map(|(_, frame)| seq(frame))
        .collect();
    assert_eq!(received, vec![0, 1, 2, 3, 4]);
    assert_eq!(ends.entries(), vec![(30, NetError::Closed)]);
    assert_eq!(after.entries(), vec![(true, Err(NetError::Closed))]);
}

#[test]
fn listening_twice_on_a_port_is_address_in_use() {
    let mut sim = exact_sim(1);
    let results = Log::new();
    let log = results.clone();
    node(&mut sim, "server", move |context| {
        let log = log.clone();
        async move {
            let first = context.net().listen(5).map(|_| ());
            let kept = context.net().listen(6).expect("a free port");
            log.push(first);
            log.push(context.net().listen(6).map(|_| ()));
            drop(kept);
            log.push(context.net().listen(6).map(|_| ()));
        }
    });
    sim.run_for(Duration::from_secs(1)).expect("runs");
    assert_eq!(
        results.entries(),
        vec![
            Ok(()),
            Err(NetError::AddressInUse("server:6".into())),
            Ok(())
        ]
    );
}
