//! [`SimStore`]: core's [`Store`] on the simulator's disk, so a supervisor
//! killed in a scenario comes back with exactly what it had made durable.
//!
//! Layout on the [`SimDisk`], under a prefix (`jobs/` by default):
//! * `log/<n>`: the records of one commit, `n` counting up (zero-padded, so
//!   key order is number order). Never overwritten, so a torn write can
//!   only damage the entry being written, never an older, committed one;
//! * `checkpoint/<n>`: every record as of log entry `n`, written every
//!   [`CHECKPOINT_EVERY`] log entries so the log stays bounded. Once a
//!   checkpoint is durable, the log entries it covers and older
//!   checkpoints are deleted (at the next commit).
//!
//! Every value is framed with a length and a checksum (see [`frame`]);
//! a value that fails the check was torn by a kill before its sync
//! completed, so it was never committed: loading drops it (and the next
//! commit deletes it). Loading takes the newest intact checkpoint and
//! replays the intact log entries after it; the newest put of a record
//! wins.
//!
//! A commit writes its batch (and perhaps a checkpoint) at the call, then
//! awaits one disk sync, which covers every earlier write: whatever was put
//! before the call is durable when it resolves `Ok`. A batch is atomic: one
//! value, intact or dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use faultline_core::job::JobRecord;
use faultline_core::runtime::BoxFuture;
use faultline_core::store::{Store, StoreError};
use faultline_sim::{DiskError, SimDisk};
use serde::{Deserialize, Serialize};

/// Log entries between checkpoints.
pub const CHECKPOINT_EVERY: u64 = 32;

/// The key prefix [`SimStore::open`] uses.
pub const DEFAULT_PREFIX: &str = "jobs/";

/// The on-disk form of one log entry or checkpoint.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// The log number it is (a log entry) or covers (a checkpoint).
    number: u64,
    /// Its records, in id order.
    records: Vec<JobRecord>,
}

/// Value framing: `magic | length (u32 LE) | payload | FNV-1a 64 (u64 LE)`,
/// the checksum taken over the length and the payload.
pub mod frame {
    const MAGIC: &[u8; 4] = b"FLS1";
    const HEADER_BYTES: usize = 8;
    const CHECKSUM_BYTES: usize = 8;

    fn checksum(length: &[u8], payload: &[u8]) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        length.iter().chain(payload).fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
        })
    }

    /// Frame `payload`.
    pub fn seal(payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len())
            .expect("a disk value is bounded far below 4 GiB")
            .to_le_bytes();
        let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len() + CHECKSUM_BYTES);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&length);
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(&checksum(&length, payload).to_le_bytes());
        bytes
    }

    /// The payload of an intact frame; `None` if it is torn or damaged.
    pub fn open(bytes: &[u8]) -> Option<&[u8]> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (length, rest) = rest.split_first_chunk::<4>()?;
        let size = usize::try_from(u32::from_le_bytes(*length)).ok()?;
        if rest.len() != size.checked_add(CHECKSUM_BYTES)? {
            return None;
        }
        let (payload, sum) = rest.split_at(size);
        let sum = u64::from_le_bytes(sum.try_into().ok()?);
        (sum == checksum(length, payload)).then_some(payload)
    }
}

/// The entries of one kind found on the disk.
#[derive(Default)]
struct Entries {
    /// Intact entries, by number.
    intact: BTreeMap<u64, Entry>,
    /// Keys of torn entries.
    torn: Vec<String>,
    /// The highest number seen, torn entries included.
    highest: Option<u64>,
}

/// What the store knows of its disk, behind one lock.
#[derive(Default)]
struct State {
    /// Puts not yet written, by `seq`.
    buffered: BTreeMap<u64, JobRecord>,
    /// Every record as written so far (the last write of each wins).
    written: BTreeMap<u64, JobRecord>,
    /// The next log entry's number.
    next_log: u64,
    /// Log entries written since the newest checkpoint.
    since_checkpoint: u64,
    /// A durable checkpoint's number: log entries up to it and older
    /// checkpoints may go.
    prunable: Option<u64>,
    /// Keys to delete at the next commit (torn values found at load).
    garbage: Vec<String>,
}

/// core's [`Store`] on a [`SimDisk`]. See the module documentation.
pub struct SimStore {
    disk: SimDisk,
    prefix: String,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn unavailable(error: DiskError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl SimStore {
    /// Open the store at [`DEFAULT_PREFIX`] on `disk`, reading what is
    /// there.
    pub fn open(disk: SimDisk) -> Result<SimStore, StoreError> {
        SimStore::open_at(disk, DEFAULT_PREFIX)
    }

    /// Open the store whose keys start with `prefix` on `disk` (several
    /// stores can share a disk), reading what is there.
    pub fn open_at(disk: SimDisk, prefix: &str) -> Result<SimStore, StoreError> {
        let store = SimStore {
            disk,
            prefix: prefix.to_owned(),
            state: Arc::default(),
        };
        let state = store.scan()?;
        *store.lock() = state;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the store lock is never held across a panic")
    }

    fn log_key(&self, number: u64) -> String {
        format!("{}log/{number:020}", self.prefix)
    }

    fn checkpoint_key(&self, number: u64) -> String {
        format!("{}checkpoint/{number:020}", self.prefix)
    }

    /// Read the entries under `kind` (`log/` or `checkpoint/`).
    fn read_entries(&self, kind: &str) -> Result<Entries, StoreError> {
        let prefix = format!("{}{kind}", self.prefix);
        let mut entries = Entries::default();
        for key in self.disk.keys(&prefix).map_err(unavailable)? {
            let number: u64 = key[prefix.len()..]
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("unexpected key `{key}`")))?;
            entries.highest = entries.highest.max(Some(number));
            let bytes = self
                .disk
                .read(&key)
                .map_err(unavailable)?
                .unwrap_or_default();
            let Some(payload) = frame::open(&bytes) else {
                tracing::warn!(%key, "torn store entry dropped (it was never committed)");
                entries.torn.push(key);
                continue;
            };
            let entry: Entry = serde_json::from_slice(payload)
                .map_err(|error| StoreError::Corrupt(format!("`{key}`: {error}")))?;
            if entry.number != number {
                return Err(StoreError::Corrupt(format!(
                    "`{key}` holds entry {}",
                    entry.number
                )));
            }
            entries.intact.insert(number, entry);
        }
        Ok(entries)
    }

    /// Rebuild the state from the disk: the newest intact checkpoint, then
    /// the intact log entries after it.
    fn scan(&self) -> Result<State, StoreError> {
        let checkpoints = self.read_entries("checkpoint/")?;
        let log = self.read_entries("log/")?;
        let mut state = State::default();
        let base = checkpoints
            .intact
            .last_key_value()
            .map(|(number, _)| *number);
        if let Some((_, checkpoint)) = checkpoints.intact.into_iter().next_back() {
            state
                .written
                .extend(checkpoint.records.into_iter().map(|r| (r.seq, r)));
        }
        for (number, entry) in log.intact {
            if base.is_some_and(|base| number <= base) {
                continue;
            }
            state.since_checkpoint += 1;
            state
                .written
                .extend(entry.records.into_iter().map(|r| (r.seq, r)));
        }
        state.next_log = log.highest.max(checkpoints.highest).map_or(0, |n| n + 1);
        state.prunable = base;
        state.garbage = checkpoints.torn.into_iter().chain(log.torn).collect();
        Ok(state)
    }

    /// Write the buffered records (and a checkpoint when due), delete what
    /// a durable checkpoint made obsolete. Returns the checkpoint written.
    fn write_batch(&self, state: &mut State) -> Result<Option<u64>, StoreError> {
        for key in std::mem::take(&mut state.garbage) {
            self.disk.delete(&key).map_err(unavailable)?;
        }
        if let Some(covered) = state.prunable.take() {
            self.prune(covered)?;
        }
        if state.buffered.is_empty() {
            return Ok(None);
        }
        let number = state.next_log;
        let batch = Entry {
            number,
            records: state.buffered.values().cloned().collect(),
        };
        self.disk
            .write(&self.log_key(number), encode(&batch))
            .map_err(unavailable)?;
        state.next_log += 1;
        state.since_checkpoint += 1;
        let buffered = std::mem::take(&mut state.buffered);
        state.written.extend(buffered);
        if state.since_checkpoint < CHECKPOINT_EVERY {
            return Ok(None);
        }
        let checkpoint = Entry {
            number,
            records: state.written.values().cloned().collect(),
        };
        self.disk
            .write(&self.checkpoint_key(number), encode(&checkpoint))
            .map_err(unavailable)?;
        state.since_checkpoint = 0;
        Ok(Some(number))
    }

    /// Delete log entries up to `covered` and checkpoints before it.
    fn prune(&self, covered: u64) -> Result<(), StoreError> {
        let log = format!("{}log/", self.prefix);
        let checkpoints = format!("{}checkpoint/", self.prefix);
        for (prefix, keep_from) in [(log, covered + 1), (checkpoints, covered)] {
            for key in self.disk.keys(&prefix).map_err(unavailable)? {
                let number: u64 = key[prefix.len()..].parse().unwrap_or(u64::MAX);
                if number < keep_from {
                    self.disk.delete(&key).map_err(unavailable)?;
                }
            }
        }
        Ok(())
    }
}

fn encode(entry: &Entry) -> Vec<u8> {
    frame::seal(&serde_json::to_vec(entry).expect("job records always serialise to JSON"))
}

impl Store for SimStore {
    fn put(&self, record: JobRecord) {
        self.lock().buffered.insert(record.seq, record);
    }

    fn commit(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        let written = {
            let mut state = self.lock();
            self.write_batch(&mut state)
        };
        let checkpoint = match written {
            Ok(checkpoint) => checkpoint,
            Err(error) => return Box::pin(std::future::ready(Err(error))),
        };
        let sync = self.disk.sync();
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            sync.await.map_err(unavailable)?;
            if let Some(number) = checkpoint {
                let mut state = state
                    .lock()
                    .expect("the store lock is never held across a panic");
                state.prunable = state.prunable.max(Some(number));
            }
            Ok(())
        })
    }

    fn load(&self) -> BoxFuture<'static, Result<Vec<JobRecord>, StoreError>> {
        let records = self.lock().written.values().cloned().collect();
        Box::pin(std::future::ready(Ok(records)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_core::runtime::{Instant, Runtime};
    use faultline_core::store_contract::{self, StoreHarness};
    use faultline_sim::{CrashLoss, DiskConfig, NodeId, RunEnd, Sim, SimConfig};
    use std::ops::ControlFlow;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    /// What the suite's task and the driver share: the driver kills and
    /// restarts the disk's node when the harness asks for a crash.
    struct Control {
        crash_requested: bool,
        disk: SimDisk,
        crashes: u64,
    }

    fn lock(control: &Mutex<Control>) -> MutexGuard<'_, Control> {
        control
            .lock()
            .expect("the control lock is never held across a panic")
    }

    /// A [`SimStore`] under its own prefix on the `host` node's disk; the
    /// suite runs on another node, `tester`, so it survives the crashes.
    struct SimHarness {
        control: Arc<Mutex<Control>>,
        prefix: String,
        tester: Arc<dyn Runtime>,
    }

    impl StoreHarness for SimHarness {
        fn open(&mut self) -> BoxFuture<'_, Arc<dyn Store>> {
            let disk = lock(&self.control).disk.clone();
            let store = SimStore::open_at(disk, &self.prefix).expect("open the store");
            let store: Arc<dyn Store> = Arc::new(store);
            Box::pin(std::future::ready(store))
        }

        fn crash(&mut self, store: Arc<dyn Store>) -> BoxFuture<'_, ()> {
            drop(store);
            lock(&self.control).crash_requested = true;
            Box::pin(async move {
                const POLLS_MAX: u32 = 1_000;
                for _ in 0..POLLS_MAX {
                    self.tester.sleep(Duration::from_millis(1)).await;
                    if !lock(&self.control).crash_requested {
                        return;
                    }
                }
                panic!("the driver did not crash the host within {POLLS_MAX} ms");
            })
        }
    }

    fn idle(sim: &mut Sim, name: &str) -> NodeId {
        sim.add_node(name, |_| Box::pin(async {}))
            .expect("a fresh node name")
    }

    /// Run the store contract in a simulation whose host disk has `disk`.
    /// Returns how many crashes it took and the trace hash.
    fn run_contract(seed: u64, disk: DiskConfig) -> (u64, u64) {
        let mut sim = Sim::new(SimConfig::new(seed)).expect("a valid configuration");
        let host = idle(&mut sim, "host");
        let tester = idle(&mut sim, "tester");
        sim.set_disk(host, disk).expect("a valid disk");
        let control = Arc::new(Mutex::new(Control {
            crash_requested: false,
            disk: sim.disk(host),
            crashes: 0,
        }));
        let done = Arc::new(AtomicBool::new(false));
        let cases = AtomicU64::new(0);
        let (suite_control, suite_done) = (Arc::clone(&control), Arc::clone(&done));
        let runtime = sim.context(tester).runtime();
        sim.spawn(
            tester,
            "store-contract",
            Box::pin(async move {
                store_contract::run_all(|| SimHarness {
                    control: Arc::clone(&suite_control),
                    prefix: format!("case-{}/", cases.fetch_add(1, Ordering::Relaxed)),
                    tester: Arc::clone(&runtime),
                })
                .await;
                suite_done.store(true, Ordering::Relaxed);
            }),
        );
        let deadline = Instant::ZERO + Duration::from_secs(3_600);
        let end = sim.run_until(deadline, |sim, _| {
            if done.load(Ordering::Relaxed) {
                return ControlFlow::Break(());
            }
            let mut control = lock(&control);
            if control.crash_requested {
                sim.kill(host).expect("the host is alive");
                sim.restart(host).expect("the host was killed");
                control.disk = sim.disk(host);
                control.crash_requested = false;
                control.crashes += 1;
            }
            ControlFlow::Continue(())
        });
        match end {
            Ok(RunEnd::Stopped(())) => {}
            other => panic!("seed {seed}: the contract run ended with {other:?}"),
        }
        let crashes = lock(&control).crashes;
        (crashes, sim.trace().hash())
    }

    #[test]
    fn the_sim_store_honours_the_contract_when_unsynced_writes_are_lost() {
        for seed in 1..=3 {
            let (crashes, _) = run_contract(seed, DiskConfig::default());
            assert!(crashes >= 10, "the suite crashed the host {crashes} times");
        }
    }

    #[test]
    fn the_sim_store_honours_the_contract_with_kept_tails_and_torn_writes() {
        let torn = DiskConfig {
            crash_loss: CrashLoss::UnsyncedTail,
            torn_write_chance: 1.0,
            ..DiskConfig::default()
        };
        for seed in 1..=3 {
            run_contract(seed, torn);
        }
    }

    #[test]
    fn the_contract_run_replays_from_its_seed() {
        let torn = DiskConfig {
            crash_loss: CrashLoss::UnsyncedTail,
            torn_write_chance: 0.5,
            ..DiskConfig::default()
        };
        assert_eq!(run_contract(9, torn), run_contract(9, torn));
    }

    #[test]
    fn a_frame_detects_every_truncation_and_a_flipped_byte() {
        let sealed = frame::seal(b"a committed batch");
        assert_eq!(frame::open(&sealed), Some(&b"a committed batch"[..]));
        for cut in 0..sealed.len() {
            assert_eq!(frame::open(&sealed[..cut]), None, "cut at {cut}");
        }
        for index in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[index] ^= 0x40;
            assert_eq!(frame::open(&flipped), None, "byte {index} flipped");
        }
    }

    /// A sim with an idle `host` whose disk has `disk`, and its store.
    fn hosted(seed: u64, disk: DiskConfig) -> (Sim, NodeId) {
        let mut sim = Sim::new(SimConfig::new(seed)).expect("a valid configuration");
        let host = idle(&mut sim, "host");
        sim.set_disk(host, disk).expect("a valid disk");
        (sim, host)
    }

    /// Commit on `store` from a task on `host`, run until it completes.
    fn commit(sim: &mut Sim, host: NodeId, store: &SimStore) {
        let commit = store.commit();
        sim.spawn(
            host,
            "commit",
            Box::pin(async move { commit.await.expect("commit") }),
        );
        sim.run().expect("the run ends without failure");
    }

    fn loaded(store: &SimStore) -> Vec<u64> {
        let mut load = store.load();
        let waker = std::task::Waker::noop();
        match load
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready(records) => {
                records.expect("load").iter().map(|r| r.seq).collect()
            }
            std::task::Poll::Pending => panic!("a sim store loads at once"),
        }
    }

    #[test]
    fn checkpoints_keep_the_log_bounded_and_lose_nothing() {
        let (mut sim, host) = hosted(4, DiskConfig::default());
        let store = SimStore::open(sim.disk(host)).expect("open");
        const COMMITS: u64 = 3 * CHECKPOINT_EVERY + 5;
        for seq in 1..=COMMITS {
            store.put(store_contract::pending_record(seq));
            commit(&mut sim, host, &store);
        }
        let keys = sim.disk(host).keys(DEFAULT_PREFIX).expect("keys");
        let bound = usize::try_from(CHECKPOINT_EVERY + 2).expect("small");
        assert!(keys.len() <= bound, "{} keys: {keys:?}", keys.len());
        sim.kill(host).expect("alive");
        sim.restart(host).expect("killed");
        let store = SimStore::open(sim.disk(host)).expect("reopen");
        assert_eq!(loaded(&store), (1..=COMMITS).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_log_entry_is_dropped_at_load_and_deleted_by_the_next_commit() {
        let torn = DiskConfig {
            sync_latency_min: Duration::from_millis(10),
            sync_latency_max: Duration::from_millis(10),
            torn_write_chance: 1.0,
            ..DiskConfig::default()
        };
        let (mut sim, host) = hosted(5, torn);
        let store = SimStore::open(sim.disk(host)).expect("open");
        store.put(store_contract::pending_record(1));
        commit(&mut sim, host, &store);
        store.put(store_contract::pending_record(2));
        drop(store.commit());
        sim.kill(host).expect("alive");
        assert_eq!(sim.disk_stats(host).torn_writes, 1);
        sim.restart(host).expect("killed");
        let store = SimStore::open(sim.disk(host)).expect("reopen");
        assert_eq!(
            loaded(&store),
            vec![1],
            "the torn, uncommitted entry is dropped"
        );
        let torn_key = format!("{DEFAULT_PREFIX}log/{:020}", 1);
        assert!(sim.disk_durable(host).contains_key(&torn_key));
        store.put(store_contract::pending_record(3));
        commit(&mut sim, host, &store);
        assert!(!sim.disk_durable(host).contains_key(&torn_key), "deleted");
        sim.kill(host).expect("alive");
        sim.restart(host).expect("killed");
        let store = SimStore::open(sim.disk(host)).expect("reopen");
        assert_eq!(loaded(&store), vec![1, 3]);
    }
}
