//! Progress events from long operations; the CLI turns them into bars, the library prints nothing.

/// A progress event.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Work begins: this many bytes over this many tensors.
    Start {
        /// Total bytes of work.
        total_bytes: u64,
        /// Tensor count.
        tensors: usize,
    },
    /// A tensor begins.
    Tensor {
        /// Its name.
        name: &'a str,
    },
    /// This many more bytes are done.
    Advance {
        /// Bytes done since the last event.
        bytes: u64,
    },
    /// All done.
    Finish,
}

/// Receives progress events (from one thread at a time) and says whether to stop.
pub trait Progress: Sync {
    /// Handle one event.
    fn event(&self, e: Event<'_>);
    /// True when the user asked to stop (Ctrl-C): long operations then return
    /// [`crate::ErrorKind::Interrupted`] at the next tensor or batch, and their temporary
    /// output is removed.
    fn cancelled(&self) -> bool {
        false
    }
}

/// The error long operations return when [`Progress::cancelled`] says so.
pub fn interrupted() -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Interrupted,
        "interrupted; no output was written",
    )
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event<'_>) {}
}
