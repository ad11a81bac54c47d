//! Tests of the simulated disk, with fixed seeds.

use super::*;
use crate::config::{PollCost, QuiescencePolicy, SimConfig};
use crate::scheduler::SchedulerKind;
use crate::trace::TraceCapture;
use faultline_core::runtime::Instant;
use std::sync::Mutex;

const LATENCY: Duration = Duration::from_millis(10);

fn exact_sim(seed: u64) -> Sim {
    let mut config = SimConfig::new(seed);
    config.scheduler = SchedulerKind::Fifo;
    config.poll_cost = PollCost::fixed(Duration::ZERO);
    config.quiescence = QuiescencePolicy::Idle;
    config.trace.capture = TraceCapture::Events;
    Sim::new(config).expect("a valid configuration")
}

/// A sim with one idle node `host` whose disk has `config`.
fn host(seed: u64, config: DiskConfig) -> (Sim, NodeId) {
    let mut sim = exact_sim(seed);
    let node = sim
        .add_node("host", |_| Box::pin(async {}))
        .expect("a fresh node");
    sim.set_disk(node, config).expect("a valid disk");
    (sim, node)
}

fn fixed_latency() -> DiskConfig {
    DiskConfig {
        sync_latency_min: LATENCY,
        sync_latency_max: LATENCY,
        ..DiskConfig::default()
    }
}

fn run(sim: &mut Sim) {
    sim.run().expect("the run ends without failure");
}

/// Start a sync of `disk` now, await it in a task on `node`, and note
/// when it completed.
fn spawn_sync(sim: &mut Sim, node: NodeId, disk: &SimDisk) -> Arc<Mutex<Option<Instant>>> {
    let done = Arc::new(Mutex::new(None));
    let (slot, runtime) = (Arc::clone(&done), sim.context(node).runtime());
    let sync = disk.sync();
    sim.spawn(
        node,
        "sync",
        Box::pin(async move {
            sync.await.expect("the node is alive");
            *slot.lock().expect("slot") = Some(runtime.now());
        }),
    );
    done
}

fn value(sim: &Sim, node: NodeId, key: &str) -> Option<Vec<u8>> {
    sim.disk(node).read(key).expect("current incarnation")
}

fn crash(sim: &mut Sim, node: NodeId) {
    sim.kill(node).expect("alive");
    sim.restart(node).expect("killed");
    run(sim);
}

#[test]
fn a_node_reads_its_own_unsynced_writes() {
    let (mut sim, node) = host(1, fixed_latency());
    let disk = sim.disk(node);
    disk.write("a", b"1".to_vec()).expect("write");
    assert_eq!(disk.read("a").expect("read"), Some(b"1".to_vec()));
    disk.delete("a").expect("delete");
    assert_eq!(disk.read("a").expect("read"), None);
    run(&mut sim);
    assert!(sim.disk_durable(node).is_empty(), "nothing was synced");
}

#[test]
fn a_sync_takes_its_latency_and_covers_only_earlier_writes() {
    let (mut sim, node) = host(2, fixed_latency());
    let disk = sim.disk(node);
    disk.write("before", b"x".to_vec()).expect("write");
    let done = spawn_sync(&mut sim, node, &disk);
    disk.write("after", b"y".to_vec()).expect("write");
    run(&mut sim);
    assert_eq!(*done.lock().expect("slot"), Some(Instant::ZERO + LATENCY));
    let durable = sim.disk_durable(node);
    assert_eq!(durable.keys().collect::<Vec<_>>(), vec!["before"]);
    crash(&mut sim, node);
    assert_eq!(value(&sim, node, "before"), Some(b"x".to_vec()));
    assert_eq!(
        value(&sim, node, "after"),
        None,
        "the unsynced write is lost"
    );
    let stats = sim.disk_stats(node);
    assert_eq!((stats.writes, stats.syncs, stats.synced_writes), (2, 1, 1));
    assert_eq!((stats.crashes, stats.lost_writes), (1, 1));
}

#[test]
fn a_kill_during_a_sync_makes_nothing_durable() {
    let (mut sim, node) = host(3, fixed_latency());
    let disk = sim.disk(node);
    disk.write("a", b"1".to_vec()).expect("write");
    let done = spawn_sync(&mut sim, node, &disk);
    sim.run_for(LATENCY / 2).expect("no failure");
    crash(&mut sim, node);
    assert_eq!(
        *done.lock().expect("slot"),
        None,
        "the sync never completed"
    );
    assert_eq!(value(&sim, node, "a"), None);
    assert_eq!(
        disk.sync().now_or_never_error(),
        Some(DiskError::Killed {
            node: "host".into()
        })
    );
}

/// Poll a future once with a no-op waker (for futures that fail at once).
trait NowOrNever {
    fn now_or_never_error(self) -> Option<DiskError>;
}

impl NowOrNever for BoxFuture<'static, Result<(), DiskError>> {
    fn now_or_never_error(mut self) -> Option<DiskError> {
        let waker = std::task::Waker::noop();
        match self
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready(result) => result.err(),
            std::task::Poll::Pending => None,
        }
    }
}

#[test]
fn a_handle_of_a_killed_incarnation_is_refused_and_a_new_one_sees_durable_data() {
    let (mut sim, node) = host(4, fixed_latency());
    let old = sim.disk(node);
    old.write("kept", b"k".to_vec()).expect("write");
    spawn_sync(&mut sim, node, &old);
    run(&mut sim);
    crash(&mut sim, node);
    let killed = DiskError::Killed {
        node: "host".into(),
    };
    assert_eq!(old.write("late", b"l".to_vec()), Err(killed.clone()));
    assert_eq!(old.read("kept"), Err(killed));
    let new = sim.disk(node);
    assert_eq!(new.read("kept").expect("read"), Some(b"k".to_vec()));
    new.write("late", b"l".to_vec())
        .expect("the new incarnation writes");
}

#[test]
fn an_unsynced_delete_is_lost_and_a_synced_one_is_durable() {
    let (mut sim, node) = host(5, fixed_latency());
    let disk = sim.disk(node);
    disk.write("a", b"1".to_vec()).expect("write");
    disk.write("b", b"2".to_vec()).expect("write");
    spawn_sync(&mut sim, node, &disk);
    run(&mut sim);
    disk.delete("a").expect("delete");
    spawn_sync(&mut sim, node, &disk);
    run(&mut sim);
    let disk = sim.disk(node);
    disk.delete("b").expect("delete");
    crash(&mut sim, node);
    assert_eq!(value(&sim, node, "a"), None, "the synced delete holds");
    assert_eq!(
        value(&sim, node, "b"),
        Some(b"2".to_vec()),
        "the unsynced delete is lost"
    );
}

#[test]
fn keys_merge_durable_and_unsynced_writes_in_order() {
    let (mut sim, node) = host(6, fixed_latency());
    let disk = sim.disk(node);
    for key in ["log/2", "log/1", "other"] {
        disk.write(key, Vec::new()).expect("write");
    }
    spawn_sync(&mut sim, node, &disk);
    run(&mut sim);
    disk.delete("log/1").expect("delete");
    disk.write("log/3", Vec::new()).expect("write");
    assert_eq!(disk.keys("log/").expect("keys"), vec!["log/2", "log/3"]);
    assert_eq!(disk.keys("").expect("keys").len(), 3);
}

#[test]
fn a_torn_write_keeps_a_proper_prefix_of_the_new_bytes_over_the_old() {
    let torn_always = DiskConfig {
        torn_write_chance: 1.0,
        ..fixed_latency()
    };
    let (mut sim, node) = host(7, torn_always);
    let disk = sim.disk(node);
    disk.write("record", vec![b'O'; 64]).expect("write");
    spawn_sync(&mut sim, node, &disk);
    run(&mut sim);
    disk.write("record", vec![b'N'; 128]).expect("write");
    crash(&mut sim, node);
    let torn = value(&sim, node, "record").expect("a torn value is there");
    assert_ne!(torn, vec![b'N'; 128], "a torn write is never complete");
    let cut = torn.iter().take_while(|byte| **byte == b'N').count();
    assert!(cut < 128);
    assert!(
        torn[cut..].iter().all(|byte| *byte == b'O'),
        "old bytes follow"
    );
    assert_eq!(
        torn.len(),
        64.max(cut),
        "new prefix, then the old value's bytes"
    );
    assert_eq!(sim.disk_stats(node).torn_writes, 1);
    assert!(
        sim.trace().text().contains("`record` torn"),
        "the kill is in the trace"
    );
}

#[test]
fn only_the_last_unsynced_write_is_torn() {
    let torn_always = DiskConfig {
        torn_write_chance: 1.0,
        ..fixed_latency()
    };
    let (mut sim, node) = host(8, torn_always);
    let disk = sim.disk(node);
    disk.write("first", vec![1; 32]).expect("write");
    disk.write("second", vec![2; 32]).expect("write");
    disk.delete("third").expect("delete");
    crash(&mut sim, node);
    assert_eq!(value(&sim, node, "first"), None);
    assert_eq!(value(&sim, node, "second"), None);
    assert_eq!(
        sim.disk_stats(node).torn_writes,
        0,
        "a delete is never torn"
    );
    let disk = sim.disk(node);
    disk.write("fourth", vec![4; 32]).expect("write");
    crash(&mut sim, node);
    let torn = value(&sim, node, "fourth").unwrap_or_default();
    assert!(torn.len() < 32 && torn.iter().all(|byte| *byte == 4));
}

/// Which of ten unsynced writes survive a kill with `UnsyncedTail`.
fn survivors(seed: u64) -> Vec<bool> {
    let tail = DiskConfig {
        crash_loss: CrashLoss::UnsyncedTail,
        ..fixed_latency()
    };
    let (mut sim, node) = host(seed, tail);
    let disk = sim.disk(node);
    for index in 0..10 {
        disk.write(&format!("k{index}"), vec![index])
            .expect("write");
    }
    crash(&mut sim, node);
    (0..10)
        .map(|index| value(&sim, node, &format!("k{index}")).is_some())
        .collect()
}

#[test]
fn a_kill_with_unsynced_tail_keeps_an_in_order_prefix() {
    let mut kept_counts = BTreeSet::new();
    for seed in 0..20 {
        let survived = survivors(seed);
        let kept = survived.iter().take_while(|s| **s).count();
        assert!(
            survived[kept..].iter().all(|s| !s),
            "seed {seed}: survivors are not a prefix: {survived:?}"
        );
        kept_counts.insert(kept);
    }
    assert!(
        kept_counts.len() > 3,
        "the prefix varies with the seed: {kept_counts:?}"
    );
    assert_eq!(
        survivors(11),
        survivors(11),
        "the same seed keeps the same prefix"
    );
}

#[test]
fn the_same_seed_gives_the_same_disk_and_trace() {
    let run_once = |seed: u64| {
        let config = DiskConfig {
            sync_latency_min: Duration::from_millis(1),
            sync_latency_max: Duration::from_millis(9),
            crash_loss: CrashLoss::UnsyncedTail,
            torn_write_chance: 0.5,
            ..DiskConfig::default()
        };
        let (mut sim, node) = host(seed, config);
        for round in 0..5u8 {
            let disk = sim.disk(node);
            for index in 0..4u8 {
                disk.write(&format!("k{index}"), vec![round; 16])
                    .expect("write");
                if index == 1 {
                    spawn_sync(&mut sim, node, &disk);
                }
            }
            sim.run_for(Duration::from_millis(5)).expect("no failure");
            crash(&mut sim, node);
        }
        (sim.disk_durable(node), sim.trace().hash(), sim.now())
    };
    assert_eq!(run_once(21), run_once(21));
    assert_ne!(run_once(21).1, run_once(22).1, "another seed, another run");
}

#[test]
fn writes_beyond_the_backlog_bound_are_refused() {
    let small = DiskConfig {
        unsynced_writes_max: 2,
        value_bytes_max: 4,
        ..fixed_latency()
    };
    let (sim, node) = host(9, small);
    let disk = sim.disk(node);
    assert_eq!(
        disk.write("big", vec![0; 5]),
        Err(DiskError::ValueTooLarge { size: 5, max: 4 })
    );
    disk.write("a", Vec::new()).expect("write");
    disk.write("b", Vec::new()).expect("write");
    assert_eq!(
        disk.write("c", Vec::new()),
        Err(DiskError::Backlog {
            unsynced: 2,
            max: 2
        })
    );
}

#[test]
fn contradictory_configurations_are_rejected() {
    let (mut sim, node) = host(10, DiskConfig::default());
    let inverted = DiskConfig {
        sync_latency_min: Duration::from_millis(2),
        sync_latency_max: Duration::from_millis(1),
        ..DiskConfig::default()
    };
    assert!(matches!(
        sim.set_disk(node, inverted),
        Err(DiskError::Config(_))
    ));
    let chance = DiskConfig {
        torn_write_chance: 1.5,
        ..DiskConfig::default()
    };
    assert!(matches!(
        sim.set_disk(node, chance),
        Err(DiskError::Config(_))
    ));
}

#[test]
fn a_run_without_disks_draws_nothing_from_the_disk_stream() {
    let (mut sim, node) = host(12, DiskConfig::default());
    crash(&mut sim, node);
    assert!(
        !sim.trace().text().contains("disk crash"),
        "a kill with nothing unsynced leaves no disk record"
    );
    assert_eq!(sim.disk_stats(node).crashes, 1);
}
