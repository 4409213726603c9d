//! Output files that appear whole or not at all.
//!
//! Every file tenpak writes (`.tpk`, decompressed safetensors, reports, plots) goes through
//! [`AtomicFile`]: a temporary file beside the destination, created as an ordinary file
//! (0666 less the umask, not tempfile's private 0600), synced to disk, then renamed into place.
//! Dropping it before [`AtomicFile::persist`] (an error, a panic, Ctrl-C) deletes the temporary
//! file, so the destination never holds a partial file and no stray file is left.
//!
//! A writer killed outright (`kill -9`, power loss) cannot delete its temporary file, so the
//! name carries the writer's process id, `.<stem>.<pid>.XXXXXX.tmp.<ext>`, and the next writer of
//! the same destination removes those whose process is gone (Linux: no `/proc/<pid>`; a pid
//! that is alive, even reused by another program, keeps its file).

use crate::FormatError;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Remove `dir`'s temporary files `<prefix><pid>.<random><suffix>` whose writer process no
/// longer exists (best effort: a file that cannot be removed stays).
fn remove_stale(dir: &Path, prefix: &str, suffix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(middle) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
        else {
            continue;
        };
        let Some((pid, rest)) = middle.split_once('.') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if rest.is_empty() || rest.contains('.') || pid == std::process::id() || alive(pid) {
            continue;
        }
        let _ = std::fs::remove_file(e.path());
    }
}

/// Whether process `pid` exists. Only Linux can tell (`/proc`); elsewhere every writer counts
/// as alive, so nothing is removed.
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

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
    /// Create the temporary file `.<stem>.<pid>.XXXXXX.tmp.<extension>` in `dest`'s folder (the
    /// extension kept for writers that pick a format by it), first removing the temporary files
    /// of the same destination whose writer is gone.
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
        remove_stale(dir, &format!(".{stem}."), &suffix);
        let prefix = format!(".{stem}.{}.", std::process::id());
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

    /// A dead writer's temporary file is removed by the next writer of the same destination;
    /// a live writer's, another destination's, and an old-style name without a pid stay.
    #[test]
    fn stale_temporaries_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.tpk");
        let put = |n: &str| std::fs::write(dir.path().join(n), b"x").unwrap();
        // No process has pid 4294967294 (above any pid_max); pid 1 is always alive.
        put(".m.4294967294.Ab3dE9.tmp.tpk");
        put(".m.1.Zz9yX8.tmp.tpk");
        put(".other.4294967294.Ab3dE9.tmp.tpk");
        put(".m.Ab3dE9.tmp.tpk");
        AtomicFile::write(&dest, b"new").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            ".m.1.Zz9yX8.tmp.tpk",
            ".m.Ab3dE9.tmp.tpk",
            ".other.4294967294.Ab3dE9.tmp.tpk",
            "m.tpk",
        ];
        if !cfg!(target_os = "linux") {
            // Without /proc no writer can be judged gone.
            want.push(".m.4294967294.Ab3dE9.tmp.tpk");
        }
        want.sort();
        assert_eq!(left, want);
    }
}
