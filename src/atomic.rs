//! Files written whole or not at all: into a temporary file beside the destination, renamed
//! into place when complete.

use crate::error::{Error, Result};
use std::path::Path;

/// Write `bytes` to `path` through a temporary file in the same folder.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut t = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::io("create a temporary file", e).with_file(path))?;
    std::io::Write::write_all(&mut t, bytes).map_err(|e| Error::io("write", e).with_file(path))?;
    t.persist(path)
        .map_err(|e| Error::io("rename into place", e.error).with_file(path))?;
    Ok(())
}
