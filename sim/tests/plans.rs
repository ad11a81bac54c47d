//! Fault plans applied to a run: timing, custom faults, rejection,
//! replay of generated plans, and the drop-at-a-random-await utility.

mod support;

use std::ops::ControlFlow;
use std::time::Duration;

use faultline_sim::util::cancel_at_random_await;
use faultline_sim::workloads::chatter;
use faultline_sim::{Fault, FaultPlan, FaultProfile, Progress, SchedulerKind, Sim, TraceCapture};
use support::{exact_sim, idle_node, ms, now_ms, Log};

const PLAN: &str = r#"
[[fault]]
at = "100ms"
kind = "partition"
a = ["a"]
b = ["b", "c"]
direction = "one-way"

[[fault]]
at = "150ms"
kind = "custom"
name = "disconnect"
node = "c"

[[fault]]
at = "200ms"
kind = "heal"
a = ["a"]
b = ["b", "c"]
direction = "one-way"

[[fault]]
at = "250ms"
kind = "kill"
node = "b"

[[fault]]
at = "300ms"
kind = "stall"
node = "c"
duration = "50ms"

[[fault]]
at = "350ms"
kind = "restart"
node = "b"

[[fault]]
at = "400ms"
kind = "skew"
node = "a"
offset = "+2s"

[[fault]]
at = "450ms"
kind = "clog"
from = "a"
to = "c"

[[fault]]
at = "500ms"
kind = "unclog"
from = "a"
to = "c"

[[fault]]
at = "550ms"
kind = "reset"
node = "a"
"#;

/// Nodes `a`, `b`, `c`, each sleeping for an hour.
fn three_nodes() -> Sim {
    let mut sim = exact_sim(1);
    for name in ["a", "b", "c"] {
        support::node(&mut sim, name, |node| async move {
            node.runtime().sleep(Duration::from_secs(3600)).await;
        });
    }
    sim
}

#[test]
fn a_plan_file_applies_each_fault_at_its_time() {
    let mut sim = three_nodes();
    let plan = FaultPlan::from_toml(PLAN, "plan.toml").expect("valid");
    sim.apply_plan(&plan).expect("fits the nodes");
    let mut applied = Vec::new();
    sim.run_until(ms(1_000), |sim, progress| {
        if let Progress::Fault(event) = progress {
            applied.push((sim.now().as_millis(), event.fault.kind()));
        }
        ControlFlow::<()>::Continue(())
    })
    .expect("runs");
    let expected = [
        (100, "partition"),
        (150, "custom"),
        (200, "heal"),
        (250, "kill"),
        (300, "stall"),
        (350, "restart"),
        (400, "skew"),
        (450, "clog"),
        (500, "unclog"),
        (550, "reset"),
    ];
    assert_eq!(applied, expected);
    let nodes = sim.nodes();
    assert_eq!(nodes[1].incarnation, 1, "b was killed once and restarted");
    assert_eq!(nodes[0].clock_offset_nanos, 2_000_000_000);
    let text = sim.trace().text();
    for line in [
        "partition {a} | {b,c} (OneWay)",
        "custom disconnect on c",
        "stall c until",
        "stall of c ends",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}

#[test]
fn a_custom_fault_is_handed_to_the_caller() {
    let mut sim = three_nodes();
    sim.apply_plan(&FaultPlan::from_toml(PLAN, "plan.toml").expect("valid"))
        .expect("fits");
    let custom = loop {
        match sim.step().expect("runs") {
            Progress::Fault(event) if matches!(event.fault, Fault::Custom { .. }) => break event,
            _ => {}
        }
    };
    assert_eq!(
        custom.fault,
        Fault::Custom {
            name: "disconnect".into(),
            node: Some("c".into())
        }
    );
    assert_eq!(sim.now(), ms(150));
}

#[test]
fn a_plan_in_the_past_or_naming_unknown_nodes_is_rejected() {
    let mut sim = three_nodes();
    let ghost = FaultPlan::from_toml(
        "[[fault]]\nat = \"1s\"\nkind = \"kill\"\nnode = \"d\"\n",
        "ghost.toml",
    )
    .expect("valid alone");
    let error = sim.apply_plan(&ghost).expect_err("d is not a node");
    assert_eq!(
        error.to_string(),
        "ghost.toml:1:1: unknown node \"d\" (the nodes are: a, b, c)"
    );
    sim.run_until(ms(2_000), |_, _| ControlFlow::<()>::Continue(()))
        .expect("runs");
    let late = FaultPlan::from_toml(
        "[[fault]]\nat = \"1s\"\nkind = \"kill\"\nnode = \"a\"\n",
        "late.toml",
    )
    .expect("valid");
    let error = sim.apply_plan(&late).expect_err("in the past");
    assert!(
        error
            .to_string()
            .starts_with("late.toml:1:1: is in the past"),
        "{error}"
    );
}

#[test]
fn a_planned_fault_that_no_longer_fits_is_skipped_and_noted() {
    let mut sim = three_nodes();
    let plan = FaultPlan::from_toml(
        "[[fault]]\nat = \"100ms\"\nkind = \"kill\"\nnode = \"a\"\n",
        "p.toml",
    )
    .expect("valid");
    sim.apply_plan(&plan).expect("fits");
    sim.run_until(ms(50), |_, _| ControlFlow::<()>::Continue(()))
        .expect("runs");
    let a = sim.node_id("a").expect("a node");
    sim.kill(a).expect("alive");
    sim.run_until(ms(200), |_, _| ControlFlow::<()>::Continue(()))
        .expect("runs");
    let warning = sim
        .trace()
        .records()
        .into_iter()
        .find(|record| record.level == tracing::Level::WARN);
    let warning = warning.expect("a warning");
    assert_eq!(warning.time, ms(100));
    assert!(
        warning
            .text
            .contains("planned fault skipped: t=0.100s kill a: a is not alive"),
        "{}",
        warning.text
    );
}

fn chatter_with(plan: &FaultPlan, seed: u64) -> u64 {
    let mut sim = Sim::new(chatter::config(
        seed,
        SchedulerKind::Random,
        TraceCapture::HashOnly,
    ))
    .expect("valid");
    for name in chatter::NODES {
        sim.add_node(name, |node| {
            Box::pin(async move { chatter_node(node).await })
        })
        .expect("fresh");
    }
    sim.apply_plan(plan).expect("generated for these nodes");
    sim.run_for(Duration::from_secs(5)).expect("runs");
    sim.trace().hash()
}

/// A small node program: ping a random peer every 50 ms for 5 s.
async fn chatter_node(node: faultline_sim::NodeContext) {
    let (runtime, net) = (node.runtime(), node.net());
    let _listener = net.listen(1);
    for round in 0..100u64 {
        runtime.sleep(Duration::from_millis(50)).await;
        let peer = chatter::NODES[(runtime.random_u64() % 4) as usize];
        match net.connect(&format!("{peer}:1")).await {
            Ok(connection) => {
                let _ = connection.sender.send(round.to_be_bytes().to_vec());
                tracing::info!(peer, round, "sent");
            }
            Err(error) => tracing::info!(peer, round, %error, "refused"),
        }
    }
}

#[test]
fn a_generated_plan_replays_identically_and_through_its_toml() {
    let nodes: Vec<String> = chatter::NODES
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    // Many short faults, so that four seconds hold a dozen or more.
    let profile = FaultProfile {
        partitions_per_minute: 60.0,
        clogs_per_minute: 45.0,
        resets_per_minute: 60.0,
        kills_per_minute: 45.0,
        stalls_per_minute: 60.0,
        skews_per_minute: 30.0,
        partition_duration_max: Duration::from_secs(1),
        downtime_max: Duration::from_secs(1),
        stall_duration_max: Duration::from_millis(500),
        ..FaultProfile::none()
    };
    for seed in 0..10 {
        let plan = FaultPlan::generate(seed, &profile, &nodes, Duration::from_secs(4));
        assert!(
            plan.events.len() >= 8,
            "seed {seed}: {} faults",
            plan.events.len()
        );
        let first = chatter_with(&plan, seed);
        assert_eq!(
            first,
            chatter_with(&plan, seed),
            "seed {seed}: the same plan replays the same"
        );
        let reloaded = FaultPlan::from_toml(&plan.to_toml(), "printed.toml").expect("loads");
        assert_eq!(
            first,
            chatter_with(&reloaded, seed),
            "seed {seed}: the printed plan replays the same"
        );
        let shrunk = plan.without(&[0]);
        if shrunk.validate(Some(&nodes)).is_ok() {
            assert_ne!(
                first,
                chatter_with(&shrunk, seed),
                "seed {seed}: removing a fault changes the run"
            );
        }
    }
}

/// The stages a request went through before it was dropped (or finished).
fn dropped_at(seed: u64) -> (Vec<u32>, Option<u32>) {
    let mut sim = exact_sim(seed);
    let node = idle_node(&mut sim, "client");
    let runtime = sim.context(node).runtime();
    let stages = Log::new();
    let (log, clock) = (stages.clone(), runtime.clone());
    let request = async move {
        for stage in 0..5u32 {
            log.push(stage);
            clock.sleep(Duration::from_millis(10)).await;
        }
        now_ms(&clock) as u32
    };
    let wrapped = cancel_at_random_await(request, sim.workload_rng(), 6);
    let outcome = Log::new();
    let result = outcome.clone();
    sim.spawn(
        node,
        "request",
        Box::pin(async move { result.push(wrapped.await) }),
    );
    sim.run().expect("finishes");
    (stages.entries(), outcome.entries()[0])
}

#[test]
fn a_request_is_dropped_at_a_seeded_await() {
    let mut points = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let (stages, finished) = dropped_at(seed);
        assert_eq!(
            dropped_at(seed),
            (stages.clone(), finished),
            "seed {seed} replays"
        );
        match finished {
            Some(at) => assert_eq!(
                (stages.len(), at),
                (5, 50),
                "a request that finishes ran every stage"
            ),
            None => assert!(stages.len() < 6, "dropped after {} stages", stages.len()),
        }
        points.insert(stages.len());
    }
    assert!(
        points.len() >= 4,
        "the drop point varies with the seed: {points:?}"
    );
}
