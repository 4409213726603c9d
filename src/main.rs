//! The `tenpak` binary: clap arguments -> validated options -> one library call -> output.
//!
//! Exit codes: 0 success; 1 the operation failed (unreadable or corrupt input, I/O error, or
//! `verify` found a problem); 2 usage or configuration error; 130 interrupted by Ctrl-C (no
//! output left behind). A closed stdout (`| head`) is success.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
