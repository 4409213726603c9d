//! KV-cache compression (issue 14): dump folders in, `.tpk` out and back, with the KV
//! reference's lossless and lossy methods and tenpak's own.
//!
//! `../shared/kv.md` gives the reference semantics; formats-spec/kv-dump.md the dump layout that
//! `tenpak kv capture` writes and [`dump::scan`] reads, and how a dump folder sits in a `.tpk`.

pub mod analyze;
pub mod dump;
pub mod method;
pub mod pack;
pub mod sweep;
pub mod transform;
