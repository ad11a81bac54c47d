//! The contract every [`Store`] honours, as a reusable test suite.
//!
//! A store implementation proves itself by running [`run_all`] with a
//! factory of [`StoreHarness`]es, one fresh harness (an empty store) per
//! case. A harness opens the store, and can *crash* it and open it again
//! on whatever survived: that is how the cases tell what is durable.
//!
//! The contract, case by case (see [`CASES`]):
//! * an empty store loads nothing;
//! * a committed record comes back with every field (history, runs, exit,
//!   idempotency key) equal;
//! * a put replaces the record with the same id;
//! * load returns records in id (numeric `seq`) order;
//! * committed records survive a crash; a record put but not committed may
//!   be lost or kept, but never comes back altered, and never takes an
//!   older committed version's place away;
//! * a commit covers exactly the puts made before the call, even if the
//!   future is first polled after later puts, and a dropped commit future
//!   leaves its puts for the next commit;
//! * many records round trip;
//! * the next id core derives after a reload (one past the highest loaded
//!   `seq`) never reuses an id that was committed;
//! * concurrent commits all succeed and the newest put of a record wins,
//!   whatever order their futures complete in.
//!
//! The suite needs no runtime of its own: it awaits only the store's
//! futures (and joins them), so it runs on tokio, in the simulator, or on
//! the test kit's manual runtime alike. A violated clause panics with the
//! case's name.

use std::sync::Arc;

use futures::FutureExt;

use crate::job::{JobRecord, NewJob};
use crate::protocol::{AgentId, ExitInfo, JobKind, JobStatus};
use crate::runtime::{BoxFuture, Instant};
use crate::store::Store;

/// Opens a store, and crashes and reopens it, for the contract cases.
pub trait StoreHarness: Send {
    /// Open the store on whatever survived so far (nothing, the first
    /// time). The previous handle, if any, was given to
    /// [`crash`](StoreHarness::crash) first.
    fn open(&mut self) -> BoxFuture<'_, Arc<dyn Store>>;

    /// End `store` as a crash of its process would: puts not covered by a
    /// completed commit may be lost. Neither `store` nor any future it gave
    /// is used afterwards.
    fn crash(&mut self, store: Arc<dyn Store>) -> BoxFuture<'_, ()>;
}

/// The body of one contract case.
pub type CaseBody = for<'a> fn(&'a mut dyn StoreHarness) -> BoxFuture<'a, ()>;

/// One clause of the contract.
#[derive(Clone, Copy)]
pub struct Case {
    /// What the case shows, as a test name.
    pub name: &'static str,
    /// The case itself; panics when the store breaks the clause.
    pub body: CaseBody,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A [`Case`] for each async case function, named after it.
macro_rules! cases {
    ($($case:ident),+ $(,)?) => {
        &[$(Case {
            name: stringify!($case),
            body: |harness| Box::pin($case(harness)),
        }),+]
    };
}

/// Every case of the contract.
pub const CASES: &[Case] = cases![
    an_empty_store_loads_nothing,
    a_committed_record_comes_back_with_every_field,
    a_put_replaces_the_record_with_the_same_id,
    load_returns_records_in_id_order,
    committed_records_survive_a_crash_and_uncommitted_ones_may_not,
    a_commit_covers_the_puts_made_before_the_call,
    many_records_round_trip,
    the_next_id_after_a_reload_never_reuses_a_committed_id,
    concurrent_commits_all_succeed_and_the_newest_put_wins,
];

/// Run every case, each on a fresh harness from `make`. Panics with the
/// name of the first case that fails.
pub async fn run_all<H, F>(mut make: F)
where
    H: StoreHarness,
    F: FnMut() -> H + Send,
{
    for case in CASES {
        let mut harness = make();
        run_case(case, &mut harness).await;
    }
}

/// Run one case on `harness`. Panics with the case's name if it fails.
pub async fn run_case(case: &Case, harness: &mut dyn StoreHarness) {
    let outcome = std::panic::AssertUnwindSafe((case.body)(harness))
        .catch_unwind()
        .await;
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        panic!("store contract case `{}` failed: {message}", case.name);
    }
}

/// A pending job record with sequence number `seq`.
pub fn pending_record(seq: u64) -> JobRecord {
    JobRecord::new(
        NewJob {
            seq,
            owner: "alice".into(),
            kind: JobKind::Sequential,
            command: vec!["sleep".into(), seq.to_string()],
            max_run_ms: 60_000,
            idempotency_key: None,
        },
        Instant::from_millis(seq),
    )
}

/// A record that uses every field: an idempotency key, a lost first run,
/// a second run that completed with an exit and output, a cancel request.
pub fn full_record(seq: u64) -> JobRecord {
    let at = |ms: u64| Instant::from_millis(1_000 * seq + ms);
    let mut record = JobRecord::new(
        NewJob {
            seq,
            owner: "bob".into(),
            kind: JobKind::Parallel,
            command: vec!["sh".into(), "-c".into(), "echo 'ünïcode' \"quoted\"".into()],
            max_run_ms: 3_600_000,
            idempotency_key: Some(format!("key-{seq}")),
        },
        at(0),
    );
    let first = record.open_new_run(AgentId("a-1".into()), at(1));
    record.close_run(first, at(2), "undelivered");
    let second = record.open_new_run(AgentId("a-2".into()), at(3));
    record.runs[1].started_at = Some(at(4));
    record
        .transition(JobStatus::Running, at(4), "started on a-2")
        .expect("pending -> running is legal");
    record.cancel_requested_at = Some(at(5));
    record.close_run(second, at(6), "completed");
    record.exit = Some(ExitInfo {
        code: Some(0),
        signal: None,
        output_tail: "line 1\nline 2\n\u{1F600}".into(),
    });
    record
        .transition(JobStatus::Completed, at(6), "exit 0")
        .expect("running -> completed is legal");
    record
}

async fn commit(store: &Arc<dyn Store>, what: &str) {
    store
        .commit()
        .await
        .unwrap_or_else(|error| panic!("commit ({what}) failed: {error}"));
}

async fn load(store: &Arc<dyn Store>) -> Vec<JobRecord> {
    store
        .load()
        .await
        .unwrap_or_else(|error| panic!("load failed: {error}"))
}

/// Crash `store`, reopen, and load what survived.
async fn reload(harness: &mut dyn StoreHarness, store: Arc<dyn Store>) -> Vec<JobRecord> {
    harness.crash(store).await;
    let store = harness.open().await;
    let loaded = load(&store).await;
    harness.crash(store).await;
    loaded
}

fn seqs(records: &[JobRecord]) -> Vec<u64> {
    records.iter().map(|record| record.seq).collect()
}

async fn an_empty_store_loads_nothing(harness: &mut dyn StoreHarness) {
    let store = harness.open().await;
    assert_eq!(seqs(&load(&store).await), Vec::<u64>::new());
    commit(&store, "nothing put").await;
    assert_eq!(seqs(&reload(harness, store).await), Vec::<u64>::new());
}

async fn a_committed_record_comes_back_with_every_field(harness: &mut dyn StoreHarness) {
    let store = harness.open().await;
    let full = full_record(3);
    let pending = pending_record(4);
    store.put(full.clone());
    store.put(pending.clone());
    commit(&store, "two records").await;
    let loaded = reload(harness, store).await;
    assert_eq!(loaded, vec![full, pending], "records differ after a reload");
}

async fn a_put_replaces_the_record_with_the_same_id(harness: &mut dyn StoreHarness) {
    let store = harness.open().await;
    store.put(pending_record(1));
    commit(&store, "first version").await;
    let mut running = pending_record(1);
    running
        .transition(JobStatus::Running, Instant::from_millis(50), "started")
        .expect("legal");
    store.put(running.clone());
    commit(&store, "second version").await;
    let loaded = reload(harness, store).await;
    assert_eq!(
        loaded,
        vec![running.clone()],
        "the second put replaces the first"
    );

    let store = harness.open().await;
    let mut done = running;
    done.transition(JobStatus::Failed, Instant::from_millis(60), "exit 1")
        .expect("legal");
    store.put(done.clone());
    commit(&store, "third version after a reopen").await;
    assert_eq!(reload(harness, store).await, vec![done]);
}

async fn load_returns_records_in_id_order(harness: &mut dyn StoreHarness) {
    let store = harness.open().await;
    // Numeric order, not the order of puts and not text order ("10" < "9").
    for seq in [10, 9, 100, 1, 11, 2] {
        store.put(pending_record(seq));
    }
    commit(&store, "scrambled").await;
    assert_eq!(seqs(&load(&store).await), vec![1, 2, 9, 10, 11, 100]);
    let loaded = reload(harness, store).await;
    assert_eq!(seqs(&loaded), vec![1, 2, 9, 10, 11, 100]);
}

async fn committed_records_survive_a_crash_and_uncommitted_ones_may_not(
    harness: &mut dyn StoreHarness,
) {
    let store = harness.open().await;
    let one = pending_record(1);
    let two = pending_record(2);
    store.put(one.clone());
    store.put(two.clone());
    commit(&store, "1 and 2").await;
    let three = pending_record(3);
    store.put(three.clone());
    let mut two_later = two.clone();
    two_later
        .transition(JobStatus::Canceled, Instant::from_millis(9), "canceled")
        .expect("legal");
    store.put(two_later.clone());
    let loaded = reload(harness, store).await;
    assert_eq!(loaded.first(), Some(&one), "committed record 1 is lost");
    let second = loaded.get(1).expect("committed record 2 is lost");
    assert!(
        *second == two || *second == two_later,
        "record 2 is neither its committed nor its later version: {second:?}"
    );
    match loaded.get(2) {
        None => {}
        Some(record) => assert_eq!(*record, three, "uncommitted record 3 came back altered"),
    }
    assert!(loaded.len() <= 3, "records nobody put: {:?}", seqs(&loaded));
}

async fn a_commit_covers_the_puts_made_before_the_call(harness: &mut dyn StoreHarness) {
    let store = harness.open().await;
    store.put(pending_record(1));
    let first = store.commit();
    store.put(pending_record(2));
    first.await.expect("commit of 1");
    let loaded = reload(harness, store).await;
    assert_eq!(loaded.first(), Some(&pending_record(1)), "1 was committed");
    assert!(loaded.len() <= 2, "records nobody put: {:?}", seqs(&loaded));

    let store = harness.open().await;
    store.put(pending_record(3));
    drop(store.commit());
    commit(&store, "after a dropped commit").await;
    let loaded = reload(harness, store).await;
    assert!(
        loaded.contains(&pending_record(3)),
        "a dropped commit's puts are covered by the next commit: {:?}",
        seqs(&loaded)
    );
}

async fn many_records_round_trip(harness: &mut dyn StoreHarness) {
    const RECORDS: u64 = 300;
    const PER_COMMIT: u64 = 50;
    let store = harness.open().await;
    let expected: Vec<JobRecord> = (1..=RECORDS)
        .map(|seq| {
            if seq % 7 == 0 {
                full_record(seq)
            } else {
                pending_record(seq)
            }
        })
        .collect();
    for batch in expected.chunks(usize::try_from(PER_COMMIT).expect("small")) {
        for record in batch {
            store.put(record.clone());
        }
        commit(&store, "a batch").await;
    }
    let loaded = reload(harness, store).await;
    assert_eq!(loaded.len(), expected.len(), "record count after a reload");
    assert!(loaded == expected, "records differ after a reload");
}

async fn the_next_id_after_a_reload_never_reuses_a_committed_id(harness: &mut dyn StoreHarness) {
    // Core derives the next id as one past the highest loaded seq.
    let next_seq = |records: &[JobRecord]| records.iter().map(|r| r.seq).max().unwrap_or(0) + 1;
    let store = harness.open().await;
    for seq in 1..=3 {
        store.put(pending_record(seq));
    }
    commit(&store, "1..=3").await;
    store.put(pending_record(4));
    let loaded = reload(harness, store).await;
    let next = next_seq(&loaded);
    assert!(next > 3, "next id {next} reuses a committed id");

    let store = harness.open().await;
    let mut fresh = pending_record(next);
    fresh.owner = "carol".into();
    store.put(fresh.clone());
    commit(&store, "the next id").await;
    let loaded = reload(harness, store).await;
    for seq in 1..=3 {
        assert_eq!(
            loaded.iter().find(|r| r.seq == seq),
            Some(&pending_record(seq)),
            "committed record {seq} changed"
        );
    }
    assert_eq!(loaded.iter().find(|r| r.seq == next), Some(&fresh));
    assert!(next_seq(&loaded) > next, "the new id is reused next time");
}

async fn concurrent_commits_all_succeed_and_the_newest_put_wins(harness: &mut dyn StoreHarness) {
    let store = harness.open().await;
    let mut versions = Vec::new();
    let mut commits = Vec::new();
    let mut record = pending_record(1);
    for step in 0..5u64 {
        store.put(pending_record(10 + step));
        record.max_run_ms = 1_000 + step;
        store.put(record.clone());
        versions.push(record.clone());
        commits.push(store.commit());
    }
    // Await in reverse order: completion order must not decide the winner.
    commits.reverse();
    for result in futures::future::join_all(commits).await {
        result.expect("every concurrent commit succeeds");
    }
    let loaded = reload(harness, store).await;
    assert_eq!(
        seqs(&loaded),
        vec![1, 10, 11, 12, 13, 14],
        "every committed record is there"
    );
    assert_eq!(
        loaded[0],
        *versions.last().expect("five versions"),
        "the newest put of record 1 wins"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, MemoryStore};
    use crate::testkit::ManualRuntime;
    use std::time::Duration;

    /// A [`MemoryStore`] shared across "crashes" (its `crash` loses what was
    /// not committed).
    struct MemoryHarness {
        store: MemoryStore,
    }

    impl StoreHarness for MemoryHarness {
        fn open(&mut self) -> BoxFuture<'_, Arc<dyn Store>> {
            let store: Arc<dyn Store> = Arc::new(self.store.clone());
            Box::pin(std::future::ready(store))
        }

        fn crash(&mut self, store: Arc<dyn Store>) -> BoxFuture<'_, ()> {
            drop(store);
            self.store.crash();
            Box::pin(std::future::ready(()))
        }
    }

    /// Run `future` on `runtime`, moving the clock a millisecond at a time.
    fn drive(runtime: &ManualRuntime, future: BoxFuture<'static, ()>) {
        const STEPS_MAX: usize = 100_000;
        let task = runtime.start("store-contract", future);
        for _ in 0..STEPS_MAX {
            if task.is_finished() {
                return;
            }
            runtime.advance(Duration::from_millis(1));
        }
        panic!("the contract suite did not finish within {STEPS_MAX} ms of virtual time");
    }

    #[test]
    fn memory_store_with_on_commit_durability_honours_the_contract() {
        let runtime = ManualRuntime::new(1);
        drive(
            &runtime,
            Box::pin(run_all(|| MemoryHarness {
                store: MemoryStore::with_durability(Durability::OnCommit),
            })),
        );
    }

    #[test]
    fn memory_store_with_commit_latency_honours_the_contract() {
        let runtime = ManualRuntime::new(2);
        let shared: Arc<dyn crate::runtime::Runtime> = Arc::new(runtime.clone());
        drive(
            &runtime,
            Box::pin(run_all(move || MemoryHarness {
                store: MemoryStore::with_commit_latency(
                    Arc::clone(&shared),
                    Duration::from_millis(3),
                ),
            })),
        );
    }

    /// A store that drops all but the first history entry: the suite must
    /// catch it.
    struct Careless {
        inner: MemoryStore,
    }

    impl Store for Careless {
        fn put(&self, mut record: JobRecord) {
            record.history.truncate(1);
            self.inner.put(record);
        }
        fn commit(&self) -> BoxFuture<'static, Result<(), crate::store::StoreError>> {
            self.inner.commit()
        }
        fn load(&self) -> BoxFuture<'static, Result<Vec<JobRecord>, crate::store::StoreError>> {
            self.inner.load()
        }
    }

    /// A harness over a crashable `MemoryStore` whose handles wrap it in
    /// the store under test (`wrap`).
    struct WrappingHarness {
        store: MemoryStore,
        wrap: fn(MemoryStore) -> Arc<dyn Store>,
    }

    impl WrappingHarness {
        fn new(wrap: fn(MemoryStore) -> Arc<dyn Store>) -> WrappingHarness {
            WrappingHarness {
                store: MemoryStore::with_durability(Durability::OnCommit),
                wrap,
            }
        }
    }

    impl StoreHarness for WrappingHarness {
        fn open(&mut self) -> BoxFuture<'_, Arc<dyn Store>> {
            Box::pin(std::future::ready((self.wrap)(self.store.clone())))
        }
        fn crash(&mut self, _store: Arc<dyn Store>) -> BoxFuture<'_, ()> {
            self.store.crash();
            Box::pin(std::future::ready(()))
        }
    }

    #[test]
    #[should_panic(expected = "a_committed_record_comes_back_with_every_field")]
    fn a_store_that_drops_history_fails_the_contract() {
        let runtime = ManualRuntime::new(3);
        drive(
            &runtime,
            Box::pin(run_all(|| {
                WrappingHarness::new(|inner| Arc::new(Careless { inner }))
            })),
        );
    }

    /// A store whose commit makes nothing durable: the suite must catch it.
    struct Forgetful {
        inner: MemoryStore,
    }

    impl Store for Forgetful {
        fn put(&self, record: JobRecord) {
            self.inner.put(record);
        }
        fn commit(&self) -> BoxFuture<'static, Result<(), crate::store::StoreError>> {
            Box::pin(std::future::ready(Ok(())))
        }
        fn load(&self) -> BoxFuture<'static, Result<Vec<JobRecord>, crate::store::StoreError>> {
            self.inner.load()
        }
    }

    #[test]
    fn a_store_whose_commit_persists_nothing_fails_the_survival_case() {
        let runtime = ManualRuntime::new(4);
        let case = CASES
            .iter()
            .find(|case| case.name.starts_with("committed_records_survive"))
            .expect("the survival case exists");
        let result = std::panic::catch_unwind(|| {
            let mut harness = WrappingHarness::new(|inner| Arc::new(Forgetful { inner }));
            drive(
                &runtime,
                Box::pin(async move { run_case(case, &mut harness).await }),
            );
        });
        assert!(
            result.is_err(),
            "the suite accepted a store that loses commits"
        );
    }

    #[test]
    fn every_case_has_a_distinct_name() {
        let names: std::collections::BTreeSet<&str> = CASES.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), CASES.len());
    }
}
