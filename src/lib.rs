#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod codec;
pub mod dtype;
pub mod error;

pub use error::{Error, ErrorKind, Result};

/// This tenpak's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
