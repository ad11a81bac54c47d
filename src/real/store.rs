//! The seam where the supervisor's durable store is opened for a data
//! directory.
//!
//! Today jobs live in core's [`MemoryStore`]: a supervisor restart forgets
//! them. The SQLite store replaces the body of [`open_store`] without
//! changing its callers.

use std::sync::Arc;

use faultline_core::store::{MemoryStore, Store};

use super::datadir::DataDir;

/// Open the job store of the supervisor using `data_dir`.
pub fn open_store(data_dir: &DataDir) -> Arc<dyn Store> {
    tracing::info!(
        data_dir = %data_dir.path().display(),
        "job store: in memory (jobs do not survive a supervisor restart yet)"
    );
    Arc::new(MemoryStore::new())
}
