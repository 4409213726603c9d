//! The `tenpak` binary: clap arguments -> validated options -> one library call -> output.
//!
//! Exit codes: 0 success; 1 the operation failed (unreadable or corrupt input, I/O error, or
//! `verify` found a problem); 2 usage or configuration error; 130 / 143 / 129 interrupted by
//! Ctrl-C / SIGTERM / SIGHUP (no output left behind). A closed stdout (`| head`) is success.

mod cli;
mod plot;

fn main() {
    tune_allocator();
    std::process::exit(cli::run());
}

/// glibc's malloc hands freed memory above 128 KiB back to the kernel, so every chunk payload
/// and buffer of that size is page-faulted and zeroed afresh; compress's single-thread time
/// was a tenth page faults. Keep up to 64 MiB of freed memory for reuse instead.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
