//! KV-cache compression (issue 14, in progress): the dump reader so far.
//!
//! `../shared/kv.md` gives the reference semantics; formats-spec/kv-dump.md the dump layout that
//! `tenpak kv capture` writes and [`dump::scan`] reads.

pub mod dump;
