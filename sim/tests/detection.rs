//! Failures the simulator reports on its own: deadlock, runaway, panic;
//! and task lifecycle (abort, join, quiescence, live task list).

mod support;

use std::future::pending;
use std::time::Duration;

use faultline_core::runtime::TaskOutcome;
use faultline_sim::{
    Failure, FailureClass, Limits, QuiescencePolicy, RunEnd, Sim, SimConfig, TaskState,
};
use support::{exact_config, exact_sim, idle_node, ms, now_ms, Log};

fn deadlocking_config() -> SimConfig {
    let mut config = exact_config(1);
    config.quiescence = QuiescencePolicy::Deadlock;
    config
}

#[test]
fn a_deadlock_names_every_blocked_task() {
    let mut sim = Sim::new(deadlocking_config()).expect("valid");
    let node = idle_node(&mut sim, "stuck");
    let runtime = sim.context(node).runtime();
    sim.spawn(node, "waiter-a", Box::pin(pending()));
    sim.spawn(
        node,
        "waiter-b",
        Box::pin(async move {
            runtime.sleep(Duration::from_secs(5)).await;
            pending::<()>().await;
        }),
    );
    let failure = sim.run().expect_err("a deadlock");
    let Failure::Deadlock { at, blocked } = &failure else {
        panic!("expected a deadlock, got {failure}");
    };
    assert_eq!(
        at.as_millis(),
        5_000,
        "detected once the last timer is gone"
    );
    let names: Vec<String> = blocked.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        vec!["stuck/waiter-a#2 (blocked)", "stuck/waiter-b#3 (blocked)"]
    );
    assert_eq!(failure.class(), FailureClass::Liveness);
    assert!(
        failure.to_string().contains("stuck/waiter-a#2"),
        "{failure}"
    );
    assert_eq!(sim.step(), Err(failure), "failures are sticky");
}

#[test]
fn quiescence_is_idle_when_asked() {
    let mut sim = exact_sim(1);
    let node = idle_node(&mut sim, "server");
    sim.spawn(node, "accept-loop", Box::pin(pending()));
    assert_eq!(sim.run(), Ok(RunEnd::Quiescent));
    assert_eq!(
        sim.run_until(ms(500), |_, _| std::ops::ControlFlow::<()>::Continue(())),
        Ok(RunEnd::Reached)
    );
    assert_eq!(sim.now(), ms(500));
}

#[test]
fn a_run_past_its_step_bound_is_a_runaway() {
    let mut config = deadlocking_config();
    config.limits = Limits {
        steps_max: 100,
        ..Limits::default()
    };
    let mut sim = Sim::new(config).expect("valid");
    let node = idle_node(&mut sim, "busy");
    sim.spawn(
        node,
        "spinner",
        Box::pin(async {
            loop {
                faultline_sim::util::yield_now().await;
            }
        }),
    );
    let failure = sim.run().expect_err("a runaway");
    let Failure::StepLimit {
        steps_max: 100,
        live,
        ..
    } = &failure
    else {
        panic!("expected a step limit, got {failure}");
    };
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0].name.as_str(), live[0].state),
        ("spinner", TaskState::Ready)
    );
}

#[test]
fn a_run_past_its_time_bound_is_a_runaway() {
    let mut config = deadlocking_config();
    config.limits = Limits {
        time_max: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut sim = Sim::new(config).expect("valid");
    let node = idle_node(&mut sim, "ticker");
    let runtime = sim.context(node).runtime();
    sim.spawn(
        node,
        "forever",
        Box::pin(async move {
            loop {
                runtime.sleep(Duration::from_secs(1)).await;
            }
        }),
    );
    let failure = sim.run().expect_err("a runaway");
    assert!(
        matches!(&failure, Failure::TimeLimit { live, .. } if live[0].name == "forever"),
        "{failure}"
    );
    assert!(sim.now() <= ms(10_000));
}

#[test]
fn a_panicking_task_fails_the_run_with_its_message() {
    let mut sim = exact_sim(1);
    let node = idle_node(&mut sim, "fragile");
    let runtime = sim.context(node).runtime();
    sim.spawn(
        node,
        "bomb",
        Box::pin(async move {
            runtime.sleep(Duration::from_millis(7)).await;
            panic!("boom at {}", now_ms(&runtime));
        }),
    );
    let failure = sim.run().expect_err("a panic");
    let Failure::Panic { at, task, message } = &failure else {
        panic!("expected a panic, got {failure}");
    };
    assert_eq!(
        (at.as_millis(), task.name.as_str(), message.as_str()),
        (7, "bomb", "boom at 7")
    );
    assert_eq!(failure.class(), FailureClass::Safety);
    assert!(
        sim.trace().tail(1)[0].contains("run failed: task fragile/bomb#2"),
        "{:?}",
        sim.trace().tail(1)
    );
}

/// Panics when dropped, as a guard does whose lock a panic poisoned.
struct PanicsWhenDropped;

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        panic!("a destructor that panics");
    }
}

#[test]
fn a_future_whose_drop_panics_after_a_failed_run_does_not_abort_the_process() {
    let mut sim = exact_sim(1);
    let node = idle_node(&mut sim, "fragile");
    let runtime = sim.context(node).runtime();
    sim.spawn(
        node,
        "holder",
        Box::pin(async move {
            let _guard = PanicsWhenDropped;
            pending::<()>().await;
        }),
    );
    sim.spawn(
        node,
        "bomb",
        Box::pin(async move {
            runtime.sleep(Duration::from_millis(3)).await;
            panic!("boom");
        }),
    );
    let failure = sim.run().expect_err("a panic");
    assert!(matches!(failure, Failure::Panic { .. }), "{failure}");
    // Dropping the run drops the holder's future, whose destructor panics:
    // caught, not turned into an abort by async-task.
    drop(sim);
}

#[test]
fn an_aborted_task_is_dropped_before_its_next_poll_and_joins_as_aborted() {
    let mut sim = exact_sim(1);
    let node = idle_node(&mut sim, "n");
    let runtime = sim.context(node).runtime();
    let ticks = Log::new();
    let (tick_log, clock) = (ticks.clone(), runtime.clone());
    let ticker = runtime.spawn(
        "ticker",
        Box::pin(async move {
            loop {
                tick_log.push(now_ms(&clock));
                clock.sleep(Duration::from_millis(10)).await;
            }
        }),
    );
    let outcome = Log::new();
    let (outcome_log, clock) = (outcome.clone(), runtime.clone());
    sim.spawn(
        node,
        "aborter",
        Box::pin(async move {
            clock.sleep(Duration::from_millis(25)).await;
            ticker.abort();
            let how = ticker.join().await;
            outcome_log.push((now_ms(&clock), how, ticker.is_finished()));
        }),
    );
    let finished = Log::new();
    let (finished_log, clock) = (finished.clone(), runtime.clone());
    let quick = runtime.spawn("quick", Box::pin(async {}));
    sim.spawn(
        node,
        "joiner",
        Box::pin(async move {
            finished_log.push((now_ms(&clock), quick.join().await));
        }),
    );
    assert_eq!(sim.run(), Ok(RunEnd::Finished));
    assert_eq!(ticks.entries(), vec![0, 10, 20]);
    assert_eq!(outcome.entries(), vec![(25, TaskOutcome::Aborted, true)]);
    assert_eq!(finished.entries(), vec![(0, TaskOutcome::Completed)]);
}

#[test]
fn tasks_lists_live_tasks_with_names_nodes_and_states() {
    let mut sim = exact_sim(1);
    let a = idle_node(&mut sim, "alpha");
    let b = idle_node(&mut sim, "beta");
    let runtime = sim.context(a).runtime();
    sim.spawn(
        a,
        "sleeper",
        Box::pin(async move { runtime.sleep(Duration::from_secs(1)).await }),
    );
    sim.spawn(b, "parked", Box::pin(pending()));
    sim.run_until(ms(1), |_, _| std::ops::ControlFlow::<()>::Continue(()))
        .expect("runs");
    let tasks: Vec<(String, String, TaskState)> = sim
        .tasks()
        .into_iter()
        .map(|task| (task.node_name, task.name, task.state))
        .collect();
    assert_eq!(
        tasks,
        vec![
            ("alpha".into(), "sleeper".into(), TaskState::Blocked),
            ("beta".into(), "parked".into(), TaskState::Blocked),
        ]
    );
    assert!(sim
        .tasks()
        .iter()
        .all(|task| task.node == a || task.node == b));
}
