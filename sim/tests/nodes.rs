//! Kill, restart, stall and clock skew: their exact semantics.

mod support;

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use faultline_core::runtime::{NetError, TaskOutcome};
use faultline_sim::{Fault, FaultError, FaultEvent, FaultPlan, Life, TaskState};
use support::{exact_sim, idle_node, ms, node, now_ms, Log};

/// Logs `dropped at <ms>` when dropped.
struct DropProbe {
    log: Log<String>,
    clock: std::sync::Arc<dyn faultline_core::runtime::Runtime>,
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.log.push(format!("dropped at {}", now_ms(&self.clock)));
    }
}

fn at(millis: u64, fault: Fault) -> FaultEvent {
    FaultEvent {
        at: Duration::from_millis(millis),
        fault,
    }
}

fn poll_once<F: std::future::Future>(future: F) -> Poll<F::Output> {
    let mut future = std::pin::pin!(future);
    Pin::as_mut(&mut future).poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn killing_a_node_drops_its_tasks_at_their_await_without_running_further() {
    let mut sim = exact_sim(1);
    let log = Log::new();
    let victim = idle_node(&mut sim, "victim");
    let runtime = sim.context(victim).runtime();
    let task_log = log.clone();
    let handle = sim.spawn(
        victim,
        "ticker",
        Box::pin(async move {
            let _probe = DropProbe {
                log: task_log.clone(),
                clock: runtime.clone(),
            };
            for tick in 0.. {
                task_log.push(format!("tick {tick} at {}", now_ms(&runtime)));
                runtime.sleep(Duration::from_millis(10)).await;
                task_log.push(format!("woke at {}", now_ms(&runtime)));
            }
        }),
    );
    sim.apply_plan(&FaultPlan::new(vec![at(
        25,
        Fault::Kill {
            node: "victim".into(),
        },
    )]))
    .expect("valid");
    sim.run_for(Duration::from_millis(100)).expect("runs");
    assert_eq!(
        log.entries(),
        vec![
            "tick 0 at 0",
            "woke at 10",
            "tick 1 at 10",
            "woke at 20",
            "tick 2 at 20",
            "dropped at 25"
        ]
    );
    assert!(handle.is_finished());
    assert_eq!(poll_once(handle.join()), Poll::Ready(TaskOutcome::Aborted));
    assert!(
        sim.tasks().iter().all(|task| task.node != victim),
        "no task of a killed node is left"
    );
    assert_eq!(sim.nodes()[victim.index()].life, Life::Killed);
}

#[test]
fn a_restarted_node_runs_its_init_again_with_fresh_state() {
    let mut sim = exact_sim(1);
    let starts = Log::new();
    let log = starts.clone();
    node(&mut sim, "phoenix", move |context| {
        let log = log.clone();
        async move {
            log.push((context.incarnation(), now_ms(&context.runtime())));
            context.runtime().sleep(Duration::from_secs(3600)).await;
        }
    });
    let plan = FaultPlan::new(vec![
        at(
            100,
            Fault::Kill {
                node: "phoenix".into(),
            },
        ),
        at(
            200,
            Fault::Restart {
                node: "phoenix".into(),
            },
        ),
        at(
            300,
            Fault::Kill {
                node: "phoenix".into(),
            },
        ),
        at(
            400,
            Fault::Restart {
                node: "phoenix".into(),
            },
        ),
    ]);
    sim.apply_plan(&plan).expect("valid");
    sim.run_for(Duration::from_secs(1)).expect("runs");
    assert_eq!(starts.entries(), vec![(0, 0), (1, 200), (2, 400)]);
}

#[test]
fn a_stale_handle_cannot_act_after_its_node_is_killed() {
    let mut sim = exact_sim(1);
    let node_id = idle_node(&mut sim, "gone");
    idle_node(&mut sim, "other");
    let stale = sim.context(node_id);
    sim.kill(node_id).expect("alive");
    let handle = stale.runtime().spawn("late", Box::pin(async {}));
    assert!(handle.is_finished());
    assert_eq!(poll_once(handle.join()), Poll::Ready(TaskOutcome::Aborted));
    assert!(matches!(stale.net().listen(1), Err(NetError::Refused(_))));
    assert!(matches!(
        poll_once(stale.net().connect("other:1")),
        Poll::Ready(Err(NetError::Refused(_)))
    ));
    assert!(poll_once(stale.runtime().sleep(Duration::ZERO)).is_pending());
    sim.restart(node_id).expect("killed");
    assert_eq!(sim.context(node_id).incarnation(), 1);
    assert!(
        stale
            .runtime()
            .spawn("still-late", Box::pin(async {}))
            .is_finished(),
        "still stale after restart"
    );
}

#[test]
fn kill_and_restart_refuse_the_wrong_state() {
    let mut sim = exact_sim(1);
    let id = idle_node(&mut sim, "n");
    assert_eq!(sim.restart(id), Err(FaultError::NotKilled("n".into())));
    sim.kill(id).expect("alive");
    assert_eq!(sim.kill(id), Err(FaultError::NotAlive("n".into())));
    assert_eq!(
        sim.stall(id, Duration::from_secs(1)),
        Err(FaultError::NotAlive("n".into()))
    );
}

fn ticker(
    log: Log<u64>,
) -> impl Fn(faultline_sim::NodeContext) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>>
       + Send
       + Sync {
    move |context| {
        let log = log.clone();
        Box::pin(async move {
            let runtime = context.runtime();
            loop {
                log.push(now_ms(&runtime));
                runtime.sleep(Duration::from_millis(10)).await;
            }
        })
    }
}

#[test]
fn a_stalled_node_runs_nothing_until_the_stall_ends() {
    let mut sim = exact_sim(1);
    let (stalled, steady) = (Log::new(), Log::new());
    sim.add_node("stalled", ticker(stalled.clone()))
        .expect("fresh");
    sim.add_node("steady", ticker(steady.clone()))
        .expect("fresh");
    let plan = FaultPlan::new(vec![at(
        55,
        Fault::Stall {
            node: "stalled".into(),
            duration: Duration::from_millis(100),
        },
    )]);
    sim.apply_plan(&plan).expect("valid");
    let mut parked_seen = Vec::new();
    sim.run_until(ms(200), |sim, _| {
        if (61..155).contains(&sim.now().as_millis()) {
            let parked: Vec<String> = sim
                .tasks()
                .into_iter()
                .filter(|task| task.state == TaskState::Stalled)
                .map(|task| task.to_string())
                .collect();
            parked_seen.extend(parked);
        }
        std::ops::ControlFlow::<()>::Continue(())
    })
    .expect("runs");
    assert!(
        !parked_seen.is_empty(),
        "the woken ticker waits, listed as stalled"
    );
    assert!(
        parked_seen
            .iter()
            .all(|task| task.starts_with("stalled/init#")),
        "{parked_seen:?}"
    );
    assert_eq!(
        stalled.entries(),
        vec![0, 10, 20, 30, 40, 50, 155, 165, 175, 185, 195]
    );
    assert_eq!(
        steady.entries(),
        (0..20).map(|tick| tick * 10).collect::<Vec<_>>(),
        "other nodes go on"
    );
}

#[test]
fn clock_skew_shifts_only_the_skewed_node_and_never_goes_backwards() {
    let mut sim = exact_sim(1);
    let (ticks, wake) = (Log::new(), Log::new());
    let (tick_log, wake_log) = (ticks.clone(), wake.clone());
    let skewed = node(&mut sim, "skewed", move |context| {
        let (ticks, wake) = (tick_log.clone(), wake_log.clone());
        async move {
            let runtime = context.runtime();
            let sleeper = runtime.clone();
            runtime.spawn(
                "long-sleep",
                Box::pin(async move {
                    sleeper.sleep(Duration::from_secs(10)).await;
                    wake.push(now_ms(&sleeper));
                }),
            );
            loop {
                ticks.push(now_ms(&runtime));
                runtime.sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let plain = idle_node(&mut sim, "plain");
    let plan = FaultPlan::new(vec![
        at(
            150,
            Fault::Skew {
                node: "skewed".into(),
                offset_nanos: 5_000_000_000,
            },
        ),
        at(
            450,
            Fault::Skew {
                node: "skewed".into(),
                offset_nanos: -1_000_000_000,
            },
        ),
    ]);
    sim.apply_plan(&plan).expect("valid");
    let (skewed_clock, plain_clock) = (sim.context(skewed).runtime(), sim.context(plain).runtime());
    let mut readings = Vec::new();
    for true_ms in [100, 200, 400, 500, 6_000, 6_450, 6_500, 10_990, 11_010] {
        sim.run_until(
            ms(true_ms),
            |_, _| std::ops::ControlFlow::<()>::Continue(()),
        )
        .expect("runs");
        readings.push((true_ms, now_ms(&skewed_clock), now_ms(&plain_clock)));
        if true_ms == 10_990 {
            assert!(
                wake.entries().is_empty(),
                "the 10 s sleep is not over on the node's clock"
            );
        }
    }
    assert_eq!(
        readings,
        vec![
            (100, 100, 100),
            (200, 5_200, 200), // +5 s shows at once
            (400, 5_400, 400),
            (500, 5_450, 500), // -1 s at 450: held at 5 450, not sent back
            (6_000, 5_450, 6_000),
            (6_450, 5_450, 6_450),
            (6_500, 5_500, 6_500), // true time caught up
            (10_990, 9_990, 10_990),
            (11_010, 10_010, 11_010),
        ]
    );
    // The sleep counts on the node's clock: 10 s of it end at 11 s of true
    // time after both steps.
    assert_eq!(wake.entries(), vec![10_000]);
    let ticks = ticks.entries();
    assert!(
        ticks.windows(2).all(|pair| pair[0] <= pair[1]),
        "monotone: {ticks:?}"
    );
    assert_eq!(
        &ticks[..3],
        &[0, 100, 5_150],
        "the step forward fires the timer it jumps over"
    );
}
