//! Durability: job records that survive a supervisor restart.
//!
//! The [`Store`] trait has an explicit durability point. [`Store::put`]
//! buffers a record and never awaits; [`Store::commit`] resolves `Ok` once
//! every record put *before the call* is durable. The supervisor's rule:
//! whatever a client or an agent is told has been committed first (a job id
//! is acknowledged, listed or dispatched only after a commit that covers
//! it). That rule is also why ids need no separate allocator: after a
//! restart the next id is one past the highest loaded id, and an id that
//! was lost with an uncommitted record was never shown to anyone.
//!
//! [`MemoryStore`] keeps records in memory: the default, and the store of
//! unit tests. With [`Durability::OnCommit`] it also models a crash, losing
//! whatever was put but not committed, so recovery can be tested without a
//! disk. SQLite and the simulator's crash-injecting stores implement the
//! same trait elsewhere.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::job::JobRecord;
use crate::runtime::{BoxFuture, Runtime};

/// Why the store could not do what was asked.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or written right now.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// What the store holds cannot be read back.
    #[error("store corrupt: {0}")]
    Corrupt(String),
}

/// Job records with an explicit durability point. Object safe.
pub trait Store: Send + Sync + 'static {
    /// Buffer `record`, replacing the record with the same id. Never awaits,
    /// so no caller can be dropped half way through a put.
    fn put(&self, record: JobRecord);

    /// Resolves `Ok` once every record put before this call is durable.
    /// Dropping the future does not undo the puts; it only leaves their
    /// durability unknown.
    fn commit(&self) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Every durable record, in id order.
    fn load(&self) -> BoxFuture<'static, Result<Vec<JobRecord>, StoreError>>;
}

/// When a [`MemoryStore`]'s puts become durable.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Durability {
    /// At once: `commit` has nothing to do. The default.
    #[default]
    Instant,
    /// At the next commit; [`MemoryStore::crash`] loses the rest.
    OnCommit,
}

#[derive(Debug, Default)]
struct Records {
    durable: BTreeMap<u64, JobRecord>,
    buffered: BTreeMap<u64, JobRecord>,
    /// Records of commits still in flight, by commit number.
    committing: BTreeMap<u64, BTreeMap<u64, JobRecord>>,
    next_commit: u64,
}

/// How long a commit takes, on a runtime's clock.
#[derive(Clone)]
struct CommitLatency {
    runtime: Arc<dyn Runtime>,
    latency: Duration,
}

impl fmt::Debug for CommitLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitLatency")
            .field("latency", &self.latency)
            .finish()
    }
}

/// An in-memory [`Store`]. Cloning shares the records, so a test can stop a
/// supervisor and start another on the same store.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    records: Arc<Mutex<Records>>,
    durability: Durability,
    commit_latency: Option<CommitLatency>,
}

impl MemoryStore {
    /// An empty store whose puts are durable at once.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// An empty store with the given durability.
    pub fn with_durability(durability: Durability) -> MemoryStore {
        MemoryStore {
            records: Arc::default(),
            durability,
            commit_latency: None,
        }
    }

    /// An empty store whose commits take `latency` on `runtime`'s clock (a
    /// disk's fsync), so a caller can be dropped while it awaits one.
    /// Records are durable only once their commit completes.
    pub fn with_commit_latency(runtime: Arc<dyn Runtime>, latency: Duration) -> MemoryStore {
        MemoryStore {
            records: Arc::default(),
            durability: Durability::OnCommit,
            commit_latency: Some(CommitLatency { runtime, latency }),
        }
    }

    /// Lose every record that was put but not committed (or whose commit
    /// has not completed), as a crash would.
    pub fn crash(&self) {
        let mut records = self.lock();
        records.buffered.clear();
        records.committing.clear();
    }

    /// The durable records, in id order (for tests and oracles).
    pub fn durable_records(&self) -> Vec<JobRecord> {
        self.lock().durable.values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        self.records
            .lock()
            .expect("the store lock is never held across a panic")
    }
}

impl Store for MemoryStore {
    fn put(&self, record: JobRecord) {
        let mut records = self.lock();
        match self.durability {
            Durability::Instant => {
                records.durable.insert(record.seq, record);
            }
            Durability::OnCommit => {
                records.buffered.insert(record.seq, record);
            }
        }
    }

    fn commit(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        let mut records = self.lock();
        let buffered = std::mem::take(&mut records.buffered);
        let Some(latency) = &self.commit_latency else {
            records.durable.extend(buffered);
            return Box::pin(std::future::ready(Ok(())));
        };
        let commit = records.next_commit;
        records.next_commit += 1;
        records.committing.insert(commit, buffered);
        let sleep = latency.runtime.sleep(latency.latency);
        let store = self.clone();
        Box::pin(async move {
            sleep.await;
            let mut records = store.lock();
            // Commits complete in order: this one covers every earlier one.
            let done: Vec<u64> = records
                .committing
                .range(..=commit)
                .map(|(n, _)| *n)
                .collect();
            for n in done {
                let batch = records.committing.remove(&n).expect("listed");
                records.durable.extend(batch);
            }
            Ok(())
        })
    }

    fn load(&self) -> BoxFuture<'static, Result<Vec<JobRecord>, StoreError>> {
        let records = self.durable_records();
        Box::pin(std::future::ready(Ok(records)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::NewJob;
    use crate::protocol::JobKind;
    use crate::runtime::Instant;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn record(seq: u64) -> JobRecord {
        JobRecord::new(
            NewJob {
                seq,
                owner: "alice".into(),
                kind: JobKind::Parallel,
                command: vec!["true".into()],
                max_run_ms: 1_000,
                idempotency_key: None,
            },
            Instant::ZERO,
        )
    }

    fn ready<T>(future: BoxFuture<'static, T>) -> T {
        let mut future = pin!(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("memory store futures are always ready"),
        }
    }

    #[test]
    fn instant_durability_survives_a_crash() {
        let store = MemoryStore::new();
        store.put(record(2));
        store.put(record(1));
        store.crash();
        let loaded = ready(store.load()).expect("load");
        assert_eq!(loaded.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn on_commit_durability_loses_what_was_not_committed() {
        let store = MemoryStore::with_durability(Durability::OnCommit);
        store.put(record(1));
        ready(store.commit()).expect("commit");
        store.put(record(2));
        store.crash();
        let loaded = ready(store.load()).expect("load");
        assert_eq!(loaded.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_put_replaces_the_record_with_the_same_id() {
        let store = MemoryStore::new();
        store.put(record(1));
        let mut changed = record(1);
        changed.max_run_ms = 5;
        store.put(changed);
        let loaded = ready(store.load()).expect("load");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].max_run_ms, 5);
    }

    #[test]
    fn is_object_safe_and_shared_by_clones() {
        let store = MemoryStore::new();
        let shared: Arc<dyn Store> = Arc::new(store.clone());
        shared.put(record(3));
        assert_eq!(store.durable_records().len(), 1);
    }
}
