//! [`SqliteStore`]: core's [`Store`] in one SQLite file (`DIR/jobs.db`).
//!
//! * **File**: WAL journal, `synchronous=FULL` (a commit that returned `Ok`
//!   survives power loss), a busy timeout, `PRAGMA application_id` marking
//!   the file as faultline's and `PRAGMA user_version` as its schema
//!   version. Opening checks both *before* writing anything: a file of
//!   another application, a newer schema, or bytes that are not SQLite are
//!   refused with a [`SqliteOpenError`] and left exactly as they were.
//! * **Schema**: one row per job; the queryable fields (`seq`, `id`,
//!   `owner`, `kind`, `status`, `idempotency_key`, times) as columns and the
//!   whole [`JobRecord`] as JSON in `record`, the source of truth.
//!   `schema::MIGRATIONS` lists the steps from one version to the next.
//! * **Threads**: one writer thread owns the connection; async callers never
//!   block. `put` buffers in memory (the newest put of a job wins);
//!   `commit` asks the writer, which writes everything buffered so far in
//!   one transaction and answers every commit waiting on that batch (group
//!   commit). Batches are written in order, so a commit covers every put
//!   made before it, and a failed batch goes back into the buffer under any
//!   newer puts, for the next commit to retry.
//! * **Ending**: [`SqliteStore::close`] commits what is buffered and closes
//!   the connection; dropping the store stops the writer without writing
//!   the buffer, as a crash would.
//!
//! [`schema`] tells our file from others and migrates it.
//!
//! Backups: `sqlite3 jobs.db ".backup copy.db"` while the supervisor runs
//! (WAL lets it read a consistent snapshot), or copy `jobs.db` while it is
//! stopped (see the README, "Durability and backups").

mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use faultline_core::job::JobRecord;
use faultline_core::runtime::BoxFuture;
use faultline_core::store::{Store, StoreError};
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use tokio::sync::oneshot;

use schema::{check_header, open_connection};
pub use schema::{schema_version, SqliteOpenError};

/// What the writer thread is asked to do; guarded by `Channel::work`.
#[derive(Default)]
struct Work {
    /// Puts not yet taken by a batch, by job `seq`.
    buffered: BTreeMap<u64, JobRecord>,
    /// Commits waiting for the next batch.
    commits: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// Loads waiting for the writer.
    loads: Vec<oneshot::Sender<Result<Vec<JobRecord>, StoreError>>>,
    /// Set by `close`: write what is buffered, then stop and answer.
    close: Option<oneshot::Sender<Result<(), StoreError>>>,
    /// Set when the store is dropped: stop without writing the buffer.
    abandoned: bool,
    /// Set by the writer when it has stopped.
    stopped: bool,
}

struct Channel {
    work: Mutex<Work>,
    wake: Condvar,
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, Work> {
        self.work
            .lock()
            .expect("the writer channel's lock is never held across a panic")
    }
}

/// The job store in a SQLite file. See the module documentation.
pub struct SqliteStore {
    channel: Arc<Channel>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Open (creating if absent) the job store at `path`, migrate its schema
    /// and start its writer thread. Blocks on file I/O.
    pub fn open(path: &Path) -> Result<SqliteStore, SqliteOpenError> {
        check_header(path)?;
        let connection = open_connection(path)?;
        let channel = Arc::new(Channel {
            work: Mutex::new(Work::default()),
            wake: Condvar::new(),
        });
        let writer = Writer {
            connection,
            channel: Arc::clone(&channel),
        };
        std::thread::Builder::new()
            .name("sqlite-store".into())
            .spawn(move || writer.run())
            .map_err(|source| SqliteOpenError::Io {
                path: path.to_owned(),
                source,
            })?;
        tracing::info!(path = %path.display(), schema = schema_version(), "job store opened");
        Ok(SqliteStore {
            channel,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commit what is buffered, then stop the writer and close the
    /// connection. Puts and commits after this fail.
    pub fn close(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut work = self.channel.lock();
            if work.stopped || work.close.is_some() {
                return Box::pin(std::future::ready(Err(closed())));
            }
            work.close = Some(sender);
        }
        self.channel.wake.notify_one();
        Box::pin(async move { receiver.await.unwrap_or_else(|_| Err(closed())) })
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the job store is closed".into())
}

impl Store for SqliteStore {
    fn put(&self, record: JobRecord) {
        let mut work = self.channel.lock();
        if work.stopped || work.close.is_some() {
            tracing::warn!(job = %record.id, "put on a closed job store: dropped");
            return;
        }
        work.buffered.insert(record.seq, record);
    }

    fn commit(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut work = self.channel.lock();
            if work.stopped || work.close.is_some() {
                return Box::pin(std::future::ready(Err(closed())));
            }
            work.commits.push(sender);
        }
        self.channel.wake.notify_one();
        Box::pin(async move { receiver.await.unwrap_or_else(|_| Err(closed())) })
    }

    fn load(&self) -> BoxFuture<'static, Result<Vec<JobRecord>, StoreError>> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut work = self.channel.lock();
            if work.stopped || work.close.is_some() {
                return Box::pin(std::future::ready(Err(closed())));
            }
            work.loads.push(sender);
        }
        self.channel.wake.notify_one();
        Box::pin(async move { receiver.await.unwrap_or_else(|_| Err(closed())) })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.channel.lock().abandoned = true;
        self.channel.wake.notify_one();
    }
}

/// The writer thread: owns the connection, serves commits, loads and close.
struct Writer {
    connection: Connection,
    channel: Arc<Channel>,
}

/// One turn of the writer.
enum Turn {
    Commit(
        BTreeMap<u64, JobRecord>,
        Vec<oneshot::Sender<Result<(), StoreError>>>,
    ),
    Load(Vec<oneshot::Sender<Result<Vec<JobRecord>, StoreError>>>),
    Close(
        BTreeMap<u64, JobRecord>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Stop,
}

impl Writer {
    fn run(mut self) {
        loop {
            match self.next_turn() {
                Turn::Commit(batch, waiters) => {
                    let result = self.write(&batch);
                    if result.is_err() {
                        self.requeue(batch);
                    }
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
                Turn::Load(waiters) => {
                    let result = self.read();
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
                Turn::Close(batch, waiter) => {
                    let result = self.write(&batch);
                    self.finish();
                    let closed = self
                        .connection
                        .close()
                        .map_err(|(_, error)| unavailable(error));
                    let _ = waiter.send(result.and(closed));
                    return;
                }
                Turn::Stop => {
                    self.finish();
                    return;
                }
            }
        }
    }

    /// Wait for work; commits come before loads, so a load sees every
    /// commit requested before it.
    fn next_turn(&self) -> Turn {
        let mut work = self.channel.lock();
        loop {
            if work.abandoned {
                return Turn::Stop;
            }
            if !work.commits.is_empty() {
                let batch = std::mem::take(&mut work.buffered);
                return Turn::Commit(batch, std::mem::take(&mut work.commits));
            }
            if !work.loads.is_empty() {
                return Turn::Load(std::mem::take(&mut work.loads));
            }
            if let Some(waiter) = work.close.take() {
                let batch = std::mem::take(&mut work.buffered);
                return Turn::Close(batch, waiter);
            }
            work = self
                .channel
                .wake
                .wait(work)
                .expect("the writer channel's lock is never held across a panic");
        }
    }

    /// Mark the writer stopped; waiters left behind learn it from their
    /// dropped senders.
    fn finish(&self) {
        let mut work = self.channel.lock();
        work.stopped = true;
        work.commits.clear();
        work.loads.clear();
    }

    /// Put a failed batch back under any newer puts.
    fn requeue(&self, batch: BTreeMap<u64, JobRecord>) {
        let mut work = self.channel.lock();
        for (seq, record) in batch {
            work.buffered.entry(seq).or_insert(record);
        }
    }

    fn write(&mut self, batch: &BTreeMap<u64, JobRecord>) -> Result<(), StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        {
            let mut upsert = transaction
                .prepare_cached(
                    "INSERT INTO jobs (seq, id, owner, kind, status, idempotency_key,
                                       created_ms, updated_ms, record)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (seq) DO UPDATE SET
                        id = excluded.id, owner = excluded.owner, kind = excluded.kind,
                        status = excluded.status, idempotency_key = excluded.idempotency_key,
                        created_ms = excluded.created_ms, updated_ms = excluded.updated_ms,
                        record = excluded.record",
                )
                .map_err(unavailable)?;
            for record in batch.values() {
                let json =
                    serde_json::to_string(record).expect("a job record always serialises to JSON");
                let updated = record.history.last().map_or(record.created_at, |c| c.at);
                upsert
                    .execute(params![
                        i64::try_from(record.seq).map_err(|_| too_large(record.seq))?,
                        record.id.0,
                        record.owner,
                        record.kind.as_str(),
                        record.status.as_str(),
                        record.idempotency_key,
                        millis(record.created_at.as_millis()),
                        millis(updated.as_millis()),
                        json,
                    ])
                    .map_err(unavailable)?;
            }
        }
        transaction.commit().map_err(unavailable)
    }

    fn read(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut select = self
            .connection
            .prepare_cached("SELECT seq, record FROM jobs ORDER BY seq")
            .map_err(unavailable)?;
        let rows = select
            .query_map([], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(unavailable)?;
        let mut records = Vec::new();
        for row in rows {
            let (seq, json) = row.map_err(unavailable)?;
            let record: JobRecord = serde_json::from_str(&json)
                .map_err(|error| StoreError::Corrupt(format!("job row {seq}: {error}")))?;
            if i64::try_from(record.seq).ok() != Some(seq) {
                return Err(StoreError::Corrupt(format!(
                    "job row {seq} holds the record of job {}",
                    record.id
                )));
            }
            records.push(record);
        }
        Ok(records)
    }
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt(error.to_string())
        }
        _ => StoreError::Unavailable(error.to_string()),
    }
}

fn too_large(seq: u64) -> StoreError {
    StoreError::Unavailable(format!("job sequence number {seq} does not fit SQLite"))
}

/// Milliseconds as SQLite's signed integer (saturating; only for display
/// columns, the record keeps the exact value).
fn millis(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::schema::{APPLICATION_ID, SQLITE_HEADER};
    use super::*;
    use faultline_core::store_contract::{self, StoreHarness};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system's temporary directory, removed
    /// when dropped.
    struct Scratch {
        path: PathBuf,
    }

    impl Scratch {
        fn new(name: &str) -> Scratch {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "faultline-sqlite-{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create a scratch directory");
            Scratch { path }
        }

        fn file(&self) -> PathBuf {
            self.path.join("jobs.db")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    /// The SQLite store for the contract suite: a crash drops the store
    /// (its buffered puts are lost) and the next open reads the file.
    struct SqliteHarness {
        scratch: Scratch,
    }

    impl StoreHarness for SqliteHarness {
        fn open(&mut self) -> BoxFuture<'_, Arc<dyn Store>> {
            let store = SqliteStore::open(&self.scratch.file()).expect("open the job store");
            let store: Arc<dyn Store> = Arc::new(store);
            Box::pin(std::future::ready(store))
        }

        fn crash(&mut self, store: Arc<dyn Store>) -> BoxFuture<'_, ()> {
            drop(store);
            Box::pin(std::future::ready(()))
        }
    }

    #[tokio::test]
    async fn the_sqlite_store_honours_the_store_contract() {
        store_contract::run_all(|| SqliteHarness {
            scratch: Scratch::new("contract"),
        })
        .await;
    }

    /// Deterministic bytes that are not a database.
    fn noise(length: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..length)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            })
            .collect()
    }

    /// Open `path`, expect a bad-input error, and check the file's bytes
    /// did not change.
    fn assert_refused_untouched(path: &Path) -> SqliteOpenError {
        let before = std::fs::read(path).expect("read the file");
        let error = SqliteStore::open(path).expect_err("the file must be refused");
        assert!(error.is_bad_input(), "a bad-input error, got {error}");
        let after = std::fs::read(path).expect("read the file again");
        assert!(before == after, "the refused file was modified");
        error
    }

    #[test]
    fn random_bytes_are_refused_and_left_untouched() {
        let scratch = Scratch::new("noise");
        std::fs::write(scratch.file(), noise(8192, 7)).expect("write noise");
        let error = assert_refused_untouched(&scratch.file());
        assert!(matches!(error, SqliteOpenError::NotADatabase { .. }));
        assert!(error.to_string().contains("not a SQLite database"));
    }

    #[test]
    fn a_sqlite_header_over_garbage_is_refused_and_left_untouched() {
        let scratch = Scratch::new("garbage");
        let mut bytes = SQLITE_HEADER.to_vec();
        bytes.extend(noise(8192 - bytes.len(), 11));
        std::fs::write(scratch.file(), &bytes).expect("write garbage");
        let error = assert_refused_untouched(&scratch.file());
        assert!(
            matches!(error, SqliteOpenError::NotADatabase { .. }),
            "{error}"
        );
    }

    #[test]
    fn another_applications_database_is_refused_and_left_untouched() {
        let scratch = Scratch::new("foreign");
        {
            let other = Connection::open(scratch.file()).expect("create");
            other
                .execute_batch("CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('hi');")
                .expect("another application's schema");
        }
        let error = assert_refused_untouched(&scratch.file());
        assert!(
            matches!(error, SqliteOpenError::Foreign { found: 0, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("another application"));
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_untouched() {
        let scratch = Scratch::new("newer");
        drop(SqliteStore::open(&scratch.file()).expect("create"));
        {
            let later = Connection::open(scratch.file()).expect("reopen");
            later
                .pragma_update(None, "user_version", schema_version() + 1)
                .expect("a future version");
            later
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .expect("checkpoint into the main file");
        }
        let error = assert_refused_untouched(&scratch.file());
        assert!(matches!(error, SqliteOpenError::Newer { .. }), "{error}");
    }

    #[test]
    fn a_new_file_is_marked_as_ours_in_wal_mode_at_the_current_schema() {
        let scratch = Scratch::new("fresh");
        let store = SqliteStore::open(&scratch.file()).expect("create");
        let check = Connection::open(scratch.file()).expect("a second connection");
        let id: i32 = check
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .expect("application_id");
        let version: i32 = check
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version");
        let mode: String = check
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(id, APPLICATION_ID);
        assert_eq!(version, schema_version());
        assert_eq!(mode, "wal");
        drop(store);
        drop(SqliteStore::open(&scratch.file()).expect("reopening our own file works"));
    }

    #[tokio::test]
    async fn close_commits_what_is_buffered_then_refuses_more() {
        let scratch = Scratch::new("close");
        let store = SqliteStore::open(&scratch.file()).expect("create");
        store.put(store_contract::full_record(1));
        store.close().await.expect("close");
        assert!(store.commit().await.is_err(), "commit after close");
        assert!(store.close().await.is_err(), "close twice");
        drop(store);
        let store = SqliteStore::open(&scratch.file()).expect("reopen");
        let loaded = store.load().await.expect("load");
        assert_eq!(loaded, vec![store_contract::full_record(1)]);
    }

    #[tokio::test]
    async fn queryable_columns_match_the_record() {
        let scratch = Scratch::new("columns");
        let store = SqliteStore::open(&scratch.file()).expect("create");
        store.put(store_contract::full_record(5));
        store.commit().await.expect("commit");
        let check = Connection::open(scratch.file()).expect("a second connection");
        let row: (String, String, String, String, Option<String>) = check
            .query_row(
                "SELECT id, owner, kind, status, idempotency_key FROM jobs WHERE seq = 5",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .expect("the row");
        assert_eq!(
            row,
            (
                "j-5".into(),
                "bob".into(),
                "parallel".into(),
                "completed".into(),
                Some("key-5".into())
            )
        );
    }

    #[tokio::test]
    async fn a_row_whose_record_is_damaged_makes_load_fail_as_corrupt() {
        let scratch = Scratch::new("damaged");
        let store = SqliteStore::open(&scratch.file()).expect("create");
        store.put(store_contract::pending_record(1));
        store.commit().await.expect("commit");
        let check = Connection::open(scratch.file()).expect("a second connection");
        check
            .execute("UPDATE jobs SET record = '{\"not\": \"a record\"}'", [])
            .expect("damage the row");
        let error = store.load().await.expect_err("a damaged record");
        assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    }
}
