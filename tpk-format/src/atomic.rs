//! Output files that appear whole or not at all.
//!
//! Every file tenpak writes (`.tpk`, decompressed safetensors, reports, plots) goes through
//! [`AtomicFile`]: a temporary file beside the destination, created as an ordinary file
//! (0666 less the umask, not tempfile's private 0600), synced to disk, then renamed into place.
//! Dropping it before [`AtomicFile::persist`] (an error, a panic, Ctrl-C) deletes the temporary
//! file, so the destination never holds a partial file and no stray file is left.

use crate::FormatError;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A temporary file that becomes `dest` when persisted.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    /// Bytes written through [`Write`], and how many of them write-back has been started for.
    written: u64,
    handed: u64,
}

/// Start write-back every this many bytes, so the disk works while the rest is still being
/// produced and the final `fsync` has little left to wait for.
const WRITEBACK_STEP: u64 = 16 << 20;

impl AtomicFile {
    /// Create the temporary file `.<stem>.XXXXXX.tmp.<extension>` in `dest`'s folder (the
    /// extension kept for writers that pick a format by it).
    pub fn create(dest: &Path) -> Result<AtomicFile, FormatError> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let stem = dest
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let suffix = match dest.extension() {
            Some(e) => format!(".tmp.{}", e.to_string_lossy()),
            None => ".tmp".into(),
        };
        let prefix = format!(".{stem}.");
        let mut b = tempfile::Builder::new();
        b.prefix(&prefix).suffix(&suffix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            b.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = b.tempfile_in(dir).map_err(|e| FormatError::Io {
            context: format!("create a temporary file in {}", dir.display()),
            source: e,
        })?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            written: 0,
            handed: 0,
        })
    }

    /// The temporary file's path (for writers that take a path, such as image encoders).
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// The open temporary file, to write or seek.
    pub fn file_mut(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Sync the data to disk and rename it into place; with `overwrite` false an existing
    /// destination is an error ([`FormatError::Exists`]) and is left untouched. Returns the time
    /// the sync took (reported apart from encoding time).
    pub fn persist(self, overwrite: bool) -> Result<Duration, FormatError> {
        let t0 = Instant::now();
        self.tmp.as_file().sync_all().map_err(|e| FormatError::Io {
            context: format!("sync {}", self.dest.display()),
            source: e,
        })?;
        let synced = t0.elapsed();
        let dest = self.dest;
        let r = if overwrite {
            self.tmp.persist(&dest).map(|_| ())
        } else {
            self.tmp.persist_noclobber(&dest).map(|_| ())
        };
        r.map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                FormatError::Exists(dest.clone())
            } else {
                FormatError::Io {
                    context: format!("rename into {}", dest.display()),
                    source: e.error,
                }
            }
        })?;
        Ok(synced)
    }

    /// Write `bytes` to `dest` atomically (replacing what is there).
    pub fn write(dest: &Path, bytes: &[u8]) -> Result<(), FormatError> {
        let mut f = AtomicFile::create(dest)?;
        f.write_all(bytes).map_err(|e| FormatError::Io {
            context: format!("write {}", dest.display()),
            source: e,
        })?;
        f.persist(true).map(|_| ())
    }
}

impl AtomicFile {
    /// Hand the bytes written since the last call to the disk without waiting for them (Linux
    /// `sync_file_range`); elsewhere a no-op, and `persist` syncs everything in any case.
    fn start_writeback(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.tmp.as_file().as_raw_fd();
            let (start, len) = (self.handed as i64, (self.written - self.handed) as i64);
            // SAFETY: a plain system call on a file descriptor we own; it reads no memory. Its
            // failure (say, a file system without write-back) is harmless: fsync follows.
            unsafe {
                libc::sync_file_range(fd, start, len, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        self.handed = self.written;
    }

    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if self.written - self.handed >= WRITEBACK_STEP {
            self.start_writeback();
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.tmp.write(buf)?;
        self.wrote(n);
        Ok(n)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.tmp.write_all(buf)?;
        self.wrote(buf.len());
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
            // Dropped unpersisted: nothing at dest, no temporary left.
        }
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        AtomicFile::write(&dest, b"one").unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"two").unwrap();
        assert!(matches!(f.persist(false), Err(FormatError::Exists(_))));
        assert_eq!(std::fs::read(&dest).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        AtomicFile::write(&dest, b"three").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"three");
    }
}
