//! Files written whole or not at all: [`tpk_format::AtomicFile`] (a temporary file beside the
//! destination, synced, renamed into place when complete) with the library's errors.

use crate::error::{Error, Result};
use std::path::Path;
pub use tpk_format::AtomicFile;

/// Start writing `path` atomically.
pub fn create(path: &Path) -> Result<AtomicFile> {
    AtomicFile::create(path).map_err(|e| Error::from(e).with_file(path))
}

/// Finish a file from [`create`]: sync, then rename into place (refusing to replace an existing
/// file unless `overwrite`). Returns the time the sync took.
pub fn persist(f: AtomicFile, overwrite: bool) -> Result<std::time::Duration> {
    let dest = f.dest().to_path_buf();
    f.persist(overwrite)
        .map_err(|e| Error::from(e).with_file(&dest))
}

/// Write `bytes` to `path` through a temporary file in the same folder.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    AtomicFile::write(path, bytes).map_err(|e| Error::from(e).with_file(path))
}
