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
    let mut t = temp_in(dir, ".tenpak-", ".tmp")
        .map_err(|e| Error::io("create a temporary file", e).with_file(path))?;
    std::io::Write::write_all(&mut t, bytes).map_err(|e| Error::io("write", e).with_file(path))?;
    t.persist(path)
        .map_err(|e| Error::io("rename into place", e.error).with_file(path))?;
    Ok(())
}

/// A temporary file in `dir` that becomes an output: created readable as any new file is
/// (0666 less the umask) rather than tempfile's private 0600, so the renamed result is too.
pub fn temp_in(dir: &Path, prefix: &str, suffix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir)
}
