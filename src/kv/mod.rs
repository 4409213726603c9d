//! KV-cache compression (issue 14): dump folders (or LMCache-layout safetensors) in, one `.tpk`
//! out and back, with the KV reference's lossless and lossy methods and tenpak's own.
//!
//! - [`dump`]: reading dump folders (formats-spec/kv-dump.md) and safetensors caches;
//! - [`method`]: what a method spec and a per-layer policy mean, as codec pipelines per
//!   (layer, K/V) plus the reference's value transforms;
//! - [`transform`]: the reference's clip, truncate, fake quant and block-norm, exactly;
//! - [`pack`]: `kv compress` / `kv decompress`;
//! - [`analyze`]: the reference's reports from a real `.tpk`;
//! - [`sweep`]: the reference's grid, extended, with the Pareto front.
//!
//! The codecs live with the others: `gear` (byte planes, formats-spec/gear.md) and `kvq`
//! (bit-packed codes, formats-spec/kvq.md). `../shared/kv.md` gives the reference semantics.

pub mod analyze;
pub mod dump;
pub mod method;
pub mod pack;
pub mod sweep;
pub mod transform;
