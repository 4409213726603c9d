//! How a library operation runs: on how many threads, whether the caller asked it to stop, and
//! where its progress events and figures go.
//!
//! Every long operation (compress, decompress, verify, analyze, the evaluation crate's runs) takes
//! a [`Context`] and runs its parallel work inside [`Context::install`], so a library user picks
//! the thread count per call instead of through the process-wide `RAYON_NUM_THREADS` or global
//! pool, and stops an operation by setting a flag instead of exiting the process: the operation
//! returns [`crate::ErrorKind::Interrupted`] at its next tensor, batch or window, and removes its
//! temporary output.

use crate::error::{Error, ErrorKind, Result};
use crate::figure::{Figures, NoFigures};
use crate::progress::{Event, NoProgress, Progress};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Threads, cancellation, progress and figures for one library call. `Context::default()` uses
/// rayon's global pool, is never cancelled, and reports and draws nothing.
#[derive(Clone)]
pub struct Context<'a> {
    pool: Option<Arc<rayon::ThreadPool>>,
    cancel: Option<&'a AtomicBool>,
    progress: &'a dyn Progress,
    figures: &'a dyn Figures,
}

impl Default for Context<'_> {
    fn default() -> Self {
        Context {
            pool: None,
            cancel: None,
            progress: &NoProgress,
            figures: &NoFigures,
        }
    }
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("threads", &self.threads())
            .field("cancelled", &self.cancelled())
            .finish_non_exhaustive()
    }
}

impl<'a> Context<'a> {
    /// Run on a pool of its own with `threads` worker threads (at least 1). Output bytes do not
    /// depend on the thread count.
    pub fn with_threads(mut self, threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::config("the thread count must be at least 1"));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, format!("start {threads} threads: {e}")))?;
        self.pool = Some(Arc::new(pool));
        Ok(self)
    }

    /// Stop at the next tensor, batch or window once `flag` is set (e.g. by a Ctrl-C handler).
    pub fn with_cancel(mut self, flag: &'a AtomicBool) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Send progress events to `progress`.
    pub fn with_progress(mut self, progress: &'a dyn Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Draw figures with `figures`.
    pub fn with_figures(mut self, figures: &'a dyn Figures) -> Self {
        self.figures = figures;
        self
    }

    /// The same threads and cancellation flag, but no progress events: for inner steps whose
    /// caller reports progress itself.
    pub fn quiet(&self) -> Context<'a> {
        Context {
            progress: &NoProgress,
            ..self.clone()
        }
    }

    /// Worker threads the operation runs on.
    pub fn threads(&self) -> usize {
        match &self.pool {
            Some(p) => p.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    /// Run `f` on this context's threads (rayon's parallel iterators inside it use them).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// True once the caller asked the operation to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// `Err(Interrupted)` once the caller asked the operation to stop.
    pub fn check_cancelled(&self) -> Result<()> {
        if self.cancelled() {
            Err(crate::progress::interrupted())
        } else {
            Ok(())
        }
    }

    /// Report a progress event.
    pub fn event(&self, e: Event<'_>) {
        self.progress.event(e)
    }

    /// Where progress events go.
    pub fn progress(&self) -> &'a dyn Progress {
        self.progress
    }

    /// Where figures go.
    pub fn figures(&self) -> &'a dyn Figures {
        self.figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_and_cancel() {
        let flag = AtomicBool::new(false);
        let cx = Context::default()
            .with_threads(3)
            .unwrap()
            .with_cancel(&flag);
        assert_eq!(cx.threads(), 3);
        assert_eq!(cx.install(rayon::current_num_threads), 3);
        assert!(cx.check_cancelled().is_ok());
        flag.store(true, Ordering::Relaxed);
        assert_eq!(
            cx.check_cancelled().unwrap_err().kind,
            ErrorKind::Interrupted
        );
        assert!(Context::default().with_threads(0).is_err());
    }
}
