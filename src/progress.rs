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

/// Receives progress events (from one thread at a time).
pub trait Progress: Sync {
    /// Handle one event.
    fn event(&self, e: Event<'_>);
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event<'_>) {}
}
