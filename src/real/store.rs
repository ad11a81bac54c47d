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
    let store = SqliteStore::open(&path)?;
    tracing::info!(path = %path.display(), "job store: SQLite");
    Ok(Arc::new(store))
}
