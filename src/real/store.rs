//! The seam where the supervisor's durable store is opened for a data
//! directory: the SQLite job store in `DIR/jobs.db`.

use std::path::PathBuf;
use std::sync::Arc;

use super::datadir::DataDir;
use super::sqlite::{SqliteOpenError, SqliteStore};

/// The job store's file name in the data directory.
pub const JOBS_FILE: &str = "jobs.db";

/// The job store file of `data_dir`.
pub fn store_path(data_dir: &DataDir) -> PathBuf {
    data_dir.path().join(JOBS_FILE)
}

/// Open (creating if absent) the job store of the supervisor using
/// `data_dir`. Blocks on file I/O.
pub fn open_store(data_dir: &DataDir) -> Result<Arc<SqliteStore>, SqliteOpenError> {
    let path = store_path(data_dir);
    create_private(&path)?;
    let store = SqliteStore::open(&path)?;
    tracing::info!(path = %path.display(), "job store: SQLite");
    Ok(Arc::new(store))
}

/// Create `path` empty with mode 0600 if it does not exist, so the job
/// records (commands and their output) are the owner's only, like the
/// tokens; SQLite gives its WAL and shared-memory files the database
/// file's mode. An existing file keeps the mode it has.
fn create_private(path: &std::path::Path) -> Result<(), SqliteOpenError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(SqliteOpenError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}
