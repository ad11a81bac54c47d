//! The job store file: telling faultline's file from anything else before
//! writing to it, and migrating its schema (`PRAGMA user_version`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

/// `PRAGMA application_id` of a faultline job store ("FLJB").
pub const APPLICATION_ID: i32 = 0x464c_4a42;

/// How long a statement waits for another connection's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations: `MIGRATIONS[n]` takes the schema from version `n`
/// to `n + 1`. The schema version this build writes is their count.
pub const MIGRATIONS: &[&str] = &[
    // v1: the jobs table.
    "CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY NOT NULL,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        idempotency_key TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX jobs_by_status ON jobs (status);
    CREATE INDEX jobs_by_idempotency_key ON jobs (owner, idempotency_key)
        WHERE idempotency_key IS NOT NULL;",
];

/// The schema version this build writes.
pub fn schema_version() -> i32 {
    i32::try_from(MIGRATIONS.len()).expect("a handful of migrations")
}

/// The first 16 bytes of every SQLite database file.
pub(super) const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Why a job store file cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SqliteOpenError {
    /// The file is not a SQLite database, or its header is damaged.
    #[error("{}: not a faultline job store: the file is not a SQLite database or is corrupt ({reason}); it was left untouched", path.display())]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// A SQLite database of another application.
    #[error("{}: not a faultline job store: a SQLite database of another application (application_id {found:#010x}, expected {APPLICATION_ID:#010x}); it was left untouched", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Its application id.
        found: i32,
    },
    /// A job store written by a newer faultline.
    #[error("{}: job store schema version {found} is newer than this build's {known}; run a newer faultline (the file was left untouched)", path.display())]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i32,
        /// The newest this build knows.
        known: i32,
    },
    /// The file cannot be read or written (permissions, disk, locks).
    #[error("{}: cannot open the job store: {source}", path.display())]
    Unavailable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The file cannot be read at all.
    #[error("{}: cannot read the job store: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl SqliteOpenError {
    /// Whether the file itself is the problem (the user gave the wrong file,
    /// or a damaged one), rather than the environment.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            SqliteOpenError::NotADatabase { .. }
                | SqliteOpenError::Foreign { .. }
                | SqliteOpenError::Newer { .. }
        )
    }
}

/// Refuse a non-empty file that does not start with SQLite's header,
/// without opening it with SQLite at all.
pub(super) fn check_header(path: &Path) -> Result<(), SqliteOpenError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SqliteOpenError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut header = Vec::with_capacity(SQLITE_HEADER.len());
    file.by_ref()
        .take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut header)
        .map_err(|source| SqliteOpenError::Io {
            path: path.to_owned(),
            source,
        })?;
    if header.is_empty() || header == SQLITE_HEADER {
        return Ok(());
    }
    Err(SqliteOpenError::NotADatabase {
        path: path.to_owned(),
        reason: "no SQLite header".into(),
    })
}

/// Open the connection, check the file is ours (or new), then configure
/// it and migrate its schema.
pub(super) fn open_connection(path: &Path) -> Result<Connection, SqliteOpenError> {
    let unavailable = |source| SqliteOpenError::Unavailable {
        path: path.to_owned(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut connection = Connection::open_with_flags(path, flags).map_err(unavailable)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    let found = identify(&connection).map_err(|error| classify(path, error))?;
    check_identity(path, found)?;
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|error| classify(path, error))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteOpenError::Unavailable {
            path: path.to_owned(),
            source: rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, WAL is required"
            )),
        });
    }
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(unavailable)?;
    migrate(&mut connection).map_err(|error| classify(path, error))?;
    // Another process may have migrated in between: check again.
    let found = identify(&connection).map_err(|error| classify(path, error))?;
    check_identity(path, found)?;
    Ok(connection)
}

/// What a database says it is.
#[derive(Clone, Copy, Debug)]
struct Identity {
    application_id: i32,
    schema_version: i32,
    /// Whether it holds any table, index or view.
    has_schema: bool,
}

fn identify(connection: &Connection) -> rusqlite::Result<Identity> {
    let application_id = connection.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let schema_version = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let objects: i64 =
        connection.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
    Ok(Identity {
        application_id,
        schema_version,
        has_schema: objects > 0,
    })
}

fn check_identity(path: &Path, found: Identity) -> Result<(), SqliteOpenError> {
    let fresh = found.application_id == 0 && found.schema_version == 0 && !found.has_schema;
    if fresh {
        return Ok(());
    }
    if found.application_id != APPLICATION_ID {
        return Err(SqliteOpenError::Foreign {
            path: path.to_owned(),
            found: found.application_id,
        });
    }
    if found.schema_version > schema_version() {
        return Err(SqliteOpenError::Newer {
            path: path.to_owned(),
            found: found.schema_version,
            known: schema_version(),
        });
    }
    Ok(())
}

/// Map an error reading the file to "not a database" when SQLite says so.
fn classify(path: &Path, error: rusqlite::Error) -> SqliteOpenError {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            SqliteOpenError::NotADatabase {
                path: path.to_owned(),
                reason: error.to_string(),
            }
        }
        _ => SqliteOpenError::Unavailable {
            path: path.to_owned(),
            source: error,
        },
    }
}

/// Bring the schema to [`schema_version`] in one transaction.
fn migrate(connection: &mut Connection) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i32 = transaction.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let target = schema_version();
    if current >= target {
        return transaction.commit();
    }
    let from = usize::try_from(current).unwrap_or(0);
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        transaction.execute_batch(sql)?;
        tracing::info!(version = step + 1, "job store schema migrated");
    }
    transaction.pragma_update(None, "application_id", APPLICATION_ID)?;
    transaction.pragma_update(None, "user_version", target)?;
    transaction.commit()
}
