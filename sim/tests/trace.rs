//! The trace: stamping, span fields, the fingerprint, exports, and runs on
//! several threads at once.

mod support;

use std::time::Duration;

use faultline_sim::workloads::chatter;
use faultline_sim::{BuggifyConfig, SchedulerKind, Sim, Source, TraceCapture};
use support::{exact_config, exact_sim, idle_node};
use tracing::Instrument;

/// One node "alpha" whose task "worker" logs inside a span, after 1.5 s.
fn logging_sim(capture: TraceCapture, seq: u32) -> Sim {
    let mut config = exact_config(1);
    config.trace.capture = capture;
    let mut sim = Sim::new(config).expect("valid");
    let node = idle_node(&mut sim, "alpha");
    let runtime = sim.context(node).runtime();
    let span = sim.in_trace(|| tracing::info_span!("op", job = 7, owner = "ada"));
    sim.spawn(
        node,
        "worker",
        Box::pin(
            async move {
                runtime.sleep(Duration::from_millis(1_500)).await;
                tracing::info!(seq, peer = %"beta", "sent");
                tracing::debug!("details");
                tracing::trace!("too verbose to capture");
            }
            .instrument(span),
        ),
    );
    sim.run().expect("finishes");
    sim
}

#[test]
fn events_carry_virtual_time_node_task_and_span_fields() {
    let sim = logging_sim(TraceCapture::Events, 3);
    tracing::info!("outside any run: never captured");
    let program: Vec<String> = sim
        .trace()
        .records()
        .into_iter()
        .filter(|record| record.source == Source::Program)
        .map(|record| record.line())
        .collect();
    assert_eq!(
        program,
        vec![
            "     1.500000s alpha/worker#2  INFO op{job=7 owner=ada}: sent seq=3 peer=beta",
            "     1.500000s alpha/worker#2 DEBUG op{job=7 owner=ada}: details",
        ]
    );
}

#[test]
fn the_hash_does_not_depend_on_what_the_trace_keeps() {
    let hashes: Vec<u64> = [
        TraceCapture::HashOnly,
        TraceCapture::Events,
        TraceCapture::Full,
    ]
    .into_iter()
    .map(|capture| {
        chatter::run(11, SchedulerKind::Random, capture)
            .0
            .trace()
            .hash()
    })
    .collect();
    assert_eq!(hashes[0], hashes[1]);
    assert_eq!(hashes[1], hashes[2]);
}

#[test]
fn the_hash_covers_event_fields() {
    let three = logging_sim(TraceCapture::HashOnly, 3).trace().hash();
    assert_eq!(three, logging_sim(TraceCapture::HashOnly, 3).trace().hash());
    assert_ne!(three, logging_sim(TraceCapture::HashOnly, 4).trace().hash());
}

#[test]
fn levels_past_the_capture_level_are_neither_kept_nor_hashed() {
    let mut config = exact_config(1);
    config.trace.level = tracing::Level::INFO;
    let mut sim = Sim::new(config).expect("valid");
    let node = idle_node(&mut sim, "n");
    sim.spawn(node, "quiet", Box::pin(async { tracing::debug!("hidden") }));
    sim.run().expect("finishes");
    let before = sim.trace().hash();
    assert!(sim
        .trace()
        .records()
        .iter()
        .all(|record| !record.text.contains("hidden")));

    let mut config = exact_config(1);
    config.trace.level = tracing::Level::INFO;
    let mut silent = Sim::new(config).expect("valid");
    let node = idle_node(&mut silent, "n");
    silent.spawn(node, "quiet", Box::pin(async {}));
    silent.run().expect("finishes");
    assert_eq!(before, silent.trace().hash());
}

#[test]
fn the_tail_keeps_the_last_lines_in_hash_only_mode() {
    let (sim, _) = chatter::run(5, SchedulerKind::Random, TraceCapture::HashOnly);
    assert!(
        sim.trace().records().is_empty(),
        "hash-only keeps no full record"
    );
    let (full, _) = chatter::run(5, SchedulerKind::Random, TraceCapture::Events);
    let expected: Vec<String> = full
        .trace()
        .records()
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(|r| r.line())
        .collect();
    assert_eq!(sim.trace().tail(5), expected);
    assert_eq!(sim.trace().event_count(), full.trace().event_count());
}

#[test]
fn the_chrome_export_is_trace_event_json_with_nodes_tasks_and_polls() {
    let (sim, _) = chatter::run(5, SchedulerKind::Random, TraceCapture::Full);
    let document: serde_json::Value =
        serde_json::from_str(&sim.trace().chrome_json()).expect("JSON");
    let events = document["traceEvents"]
        .as_array()
        .expect("an array of events");
    let count = |phase: &str| events.iter().filter(|event| event["ph"] == phase).count();
    assert_eq!(count("X") as u64, sim.polls(), "one slice per poll");
    assert_eq!(
        count("i") as u64,
        sim.trace().event_count(),
        "one instant per event"
    );
    let processes: Vec<&str> = events
        .iter()
        .filter(|event| event["name"] == "process_name")
        .filter_map(|event| event["args"]["name"].as_str())
        .collect();
    assert_eq!(processes, vec!["simulator", "n0", "n1", "n2", "n3"]);
    assert!(events.iter().any(|event| event["name"] == "thread_name"
        && event["args"]["name"]
            .as_str()
            .is_some_and(|name| name.starts_with("sender#"))));
    let times: Vec<f64> = events
        .iter()
        .filter(|event| event["ph"] == "X")
        .filter_map(|event| event["ts"].as_f64())
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "slices in time order"
    );
}

#[test]
fn runs_on_several_threads_match_runs_on_one() {
    let seeds: Vec<u64> = (100..116).collect();
    let alone: Vec<(u64, u64)> = seeds
        .iter()
        .map(|seed| {
            let (sim, _) = chatter::run(*seed, SchedulerKind::Random, TraceCapture::HashOnly);
            (sim.trace().hash(), sim.trace().event_count())
        })
        .collect();
    let together: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = seeds
            .chunks(4)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|seed| {
                            let (sim, _) =
                                chatter::run(*seed, SchedulerKind::Random, TraceCapture::HashOnly);
                            (sim.trace().hash(), sim.trace().event_count())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("no panic"))
            .collect()
    });
    assert_eq!(alone, together, "no state is shared between runs");
}

#[test]
fn buggify_sites_are_decided_per_run_and_fire_only_when_enabled() {
    let mut enabled_runs = 0;
    for seed in 0..40 {
        let mut config = exact_config(seed);
        config.buggify = BuggifyConfig::On {
            site_probability: 0.5,
            fire_probability: 0.5,
        };
        let mut sim = Sim::new(config).expect("valid");
        let node = idle_node(&mut sim, "n");
        let runtime = sim.context(node).runtime();
        sim.spawn(
            node,
            "asker",
            Box::pin(async move {
                for _ in 0..20 {
                    let _ = runtime.buggify("slow-reply");
                }
            }),
        );
        sim.run().expect("finishes");
        let sites = sim.buggify_sites();
        assert_eq!(sites.len(), 1);
        let site = &sites[0];
        assert_eq!(site.asked, 20);
        if site.enabled {
            enabled_runs += 1;
            assert!(site.fired > 0 && site.fired < 20, "{site:?}");
        } else {
            assert_eq!(site.fired, 0);
        }
        let fired_lines = sim
            .trace()
            .records()
            .iter()
            .filter(|r| r.text.contains("buggify slow-reply fired"))
            .count();
        assert_eq!(
            fired_lines as u64, site.fired,
            "every firing is in the trace"
        );
    }
    assert!(
        (8..32).contains(&enabled_runs),
        "{enabled_runs} of 40 runs enabled the site"
    );
    let mut off = exact_sim(1);
    let node = idle_node(&mut off, "n");
    let runtime = off.context(node).runtime();
    assert!(
        (0..100).all(|_| !runtime.buggify("anything")),
        "buggify off never fires"
    );
}

#[test]
fn events_with_a_probe_field_are_counted_by_name() {
    let mut sim = exact_sim(1);
    let node = idle_node(&mut sim, "alpha");
    let runtime = sim.context(node).runtime();
    sim.spawn(
        node,
        "worker",
        Box::pin(async move {
            runtime.sleep(Duration::from_millis(5)).await;
            tracing::info!(probe = "slot-hand-off", job = 3, "rare");
            tracing::info!(probe = "slot-hand-off", job = 4, "rare");
            tracing::info!(probe = "late-reply", "rarer");
            tracing::info!("no probe here");
        }),
    );
    sim.run().expect("finishes");
    let probes = sim.trace().probes();
    assert_eq!(probes.len(), 2);
    assert_eq!(probes["slot-hand-off"], 2);
    assert_eq!(probes["late-reply"], 1);
}
