//! Virtual time: clock jumps, timer order, poll cost.

mod support;

use std::time::Duration;

use faultline_sim::{PollCost, RunEnd, SchedulerKind, Sim, SimConfig};
use support::{exact_config, idle_node, now_ms, Log};

#[test]
fn an_hour_of_virtual_sleep_takes_a_handful_of_steps() {
    let mut sim = Sim::new(SimConfig::new(3)).expect("valid");
    let node = idle_node(&mut sim, "sleeper");
    let runtime = sim.context(node).runtime();
    let woke = Log::new();
    let log = woke.clone();
    sim.spawn(
        node,
        "hour",
        Box::pin(async move {
            runtime.sleep(Duration::from_secs(3600)).await;
            log.push(runtime.now());
        }),
    );
    assert_eq!(sim.run(), Ok(RunEnd::Finished));
    let woke = woke.entries()[0];
    assert!(
        woke.as_secs_f64() >= 3600.0 && woke.as_secs_f64() < 3600.001,
        "woke at {woke}"
    );
    // The clock jumps: one poll to sleep, one jump, one poll to wake (and
    // the node's empty init).
    assert!(sim.steps() <= 4, "{} steps", sim.steps());
}

fn wake_order(config: SimConfig) -> Vec<(usize, u64)> {
    let mut sim = Sim::new(config).expect("valid");
    let node = idle_node(&mut sim, "timers");
    let runtime = sim.context(node).runtime();
    let order = Log::new();
    for (index, millis) in [30u64, 10, 20, 10, 30, 0].into_iter().enumerate() {
        // Timers are created here, in index order, before any task runs.
        let sleep = runtime.sleep(Duration::from_millis(millis));
        let (log, clock) = (order.clone(), runtime.clone());
        sim.spawn(
            node,
            "timer",
            Box::pin(async move {
                sleep.await;
                log.push((index, now_ms(&clock)));
            }),
        );
    }
    sim.run().expect("finishes");
    order.entries()
}

#[test]
fn timers_fire_in_deadline_order_with_ties_in_creation_order() {
    let order = wake_order(exact_config(1));
    assert_eq!(
        order,
        vec![(5, 0), (1, 10), (3, 10), (2, 20), (0, 30), (4, 30)]
    );
}

#[test]
fn timers_fire_in_deadline_order_under_a_random_scheduler_too() {
    for seed in 0..20 {
        let mut config = SimConfig::new(seed);
        config.scheduler = SchedulerKind::Random;
        let order = wake_order(config.clone());
        let deadlines: Vec<u64> = order
            .iter()
            .map(|(index, _)| [30, 10, 20, 10, 30, 0][*index])
            .collect();
        assert!(
            deadlines.windows(2).all(|pair| pair[0] <= pair[1]),
            "seed {seed}: {order:?}"
        );
        assert_eq!(
            order,
            wake_order(config),
            "seed {seed}: ties break the same way every run"
        );
    }
}

#[test]
fn each_poll_costs_a_seeded_amount_of_virtual_time() {
    let mut config = SimConfig::new(5);
    config.poll_cost = PollCost {
        min: Duration::from_micros(5),
        max: Duration::from_micros(10),
    };
    let mut sim = Sim::new(config).expect("valid");
    let node = idle_node(&mut sim, "spinner");
    sim.spawn(
        node,
        "yielder",
        Box::pin(async {
            for _ in 0..99 {
                faultline_sim::util::yield_now().await;
            }
        }),
    );
    sim.run().expect("finishes");
    assert_eq!(sim.polls(), 101, "the init and 100 polls of the yielder");
    let elapsed = sim.now().as_nanos();
    assert!(
        (505_000..=1_010_000).contains(&elapsed),
        "{elapsed} ns for 101 polls of 5-10 µs"
    );
    let costs_differ = (0..5u64).map(|seed| {
        let mut config = SimConfig::new(seed);
        config.poll_cost = PollCost {
            min: Duration::from_micros(5),
            max: Duration::from_micros(10),
        };
        let mut sim = Sim::new(config).expect("valid");
        let node = idle_node(&mut sim, "spinner");
        sim.spawn(
            node,
            "yielder",
            Box::pin(async { faultline_sim::util::yield_now().await }),
        );
        sim.run().expect("finishes");
        sim.now()
    });
    let distinct: std::collections::BTreeSet<_> = costs_differ.collect();
    assert!(distinct.len() > 1, "poll costs come from the seed");
}
