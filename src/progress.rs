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

/// Receives progress events (from one thread at a time). Cancellation is the
/// [`crate::Context`]'s.
pub trait Progress: Sync {
    /// Handle one event.
    fn event(&self, e: Event<'_>);
}

/// The error long operations return once their [`crate::Context`] is cancelled.
pub fn interrupted() -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Interrupted,
        "interrupted; nothing was left half-written",
    )
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event<'_>) {}
}
