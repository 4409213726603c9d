#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod analyze;
pub mod archive;
pub mod assign;
pub mod atomic;
pub mod base;
pub mod codec;
pub mod compress;
pub mod config;
pub mod decompress;
pub mod dtype;
pub mod error;
pub mod eval;
#[doc(hidden)]
pub mod fuzz_api;
pub mod input;
pub mod inspect;
pub mod metrics;
pub mod mixed;
pub mod plot;
pub mod progress;
pub mod prune;
pub mod tiles;
pub mod verify;

pub use error::{Error, ErrorKind, Result};

/// This tenpak's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
