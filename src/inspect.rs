//! `inspect`: what a `.tpk` holds, from its header and index; of the payloads only the
//! headers of mixed tensors (tiles per format) and sparse tensors (elements stored) are read.

use crate::archive::Archive;
use crate::compress::ratio;
use crate::error::Result;
use crate::metrics::Metrics;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One tensor as the index describes it.
#[derive(Debug, Clone, Serialize)]
pub struct TensorSummary {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Element type fed to the codec.
    pub dtype: String,
    /// Pipeline as stored (`name` per stage, joined by `+`).
    pub codec: String,
    /// Element layout of the chunks: `row-major`, `tiles32` or `tiles32-transposed`.
    pub layout: &'static str,
    /// Whether this tenpak can decode it.
    pub supported: bool,
    /// Bytes in the source.
    pub source_bytes: u64,
    /// Payload bytes.
    pub encoded_bytes: u64,
    /// Bytes of the codec parameters in the index.
    pub param_bytes: u64,
    /// source / (encoded + param).
    pub ratio: f64,
    /// Chunk count.
    pub chunks: usize,
    /// Compress-time metrics, if stored.
    pub metrics: Option<Metrics>,
    /// Mixed tensors: tiles and payload bytes per format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed: Option<Vec<crate::mixed::FormatShare>>,
    /// Sparse (pruned) tensors: how many elements are stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<Sparsity>,
    /// Multi-stage codecs (`tenpakx`, `vq`): bytes per stage, the parameters' per-tensor parts
    /// included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<BTreeMap<String, u64>>,
}

/// What a sparse tensor stores.
#[derive(Debug, Clone, Serialize)]
pub struct Sparsity {
    /// Elements.
    pub total: u64,
    /// Elements not stored (zeros).
    pub zero_count: u64,
    /// zero_count / total.
    pub sparsity: f64,
}

/// The whole file.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// Format version, `major.minor`.
    pub format_version: String,
    /// File size.
    pub file_bytes: u64,
    /// File metadata.
    pub metadata: BTreeMap<String, String>,
    /// Tensor count.
    pub tensor_count: usize,
    /// Sum of source bytes.
    pub source_bytes: u64,
    /// Sum of f32-equivalent bytes.
    pub fp32_bytes: u64,
    /// Sum of payload bytes.
    pub payload_bytes: u64,
    /// source_bytes / file_bytes.
    pub ratio_vs_source: f64,
    /// fp32_bytes / file_bytes.
    pub ratio_vs_fp32: f64,
    /// Per tensor.
    pub tensors: Vec<TensorSummary>,
    /// A multi-file set: each file's name, size and tensor count (empty for one file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_files: Vec<(String, u64, usize)>,
}

/// Inspect a `.tpk`, or a multi-file set through its index.
pub fn inspect(path: &Path) -> Result<InspectReport> {
    let ar = Archive::open(path)?;
    let f = &ar.file;
    let tensors: Vec<TensorSummary> = f
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| TensorSummary {
            name: t.name.clone(),
            shape: t.dims.clone(),
            dtype: t.dtype.clone(),
            codec: t
                .stages
                .iter()
                .map(|s| s.codec_name.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            layout: t.layout.name(),
            supported: ar.pipeline(i).is_ok(),
            source_bytes: t.source_bytes,
            encoded_bytes: t.payload_bytes(),
            param_bytes: crate::compress::param_bytes(&t.stages),
            ratio: ratio(
                t.source_bytes,
                t.payload_bytes() + crate::compress::param_bytes(&t.stages),
            ),
            chunks: t.chunks.len(),
            metrics: Metrics::from_entry(t),
            mixed: ar
                .mixed_assignment(i)
                .ok()
                .flatten()
                .map(|a| crate::mixed::shares(&a.formats, &a.counts())),
            sparsity: ar
                .sparse_counts(i)
                .ok()
                .flatten()
                .map(|(kept, total)| Sparsity {
                    total,
                    zero_count: total - kept.min(total),
                    sparsity: if total == 0 {
                        0.0
                    } else {
                        (total - kept.min(total)) as f64 / total as f64
                    },
                }),
            stages: ar
                .pipeline(i)
                .ok()
                .and_then(|p| crate::compress::stage_bytes(&p.1, &t.chunks)),
        })
        .collect();
    let source_bytes = tensors.iter().map(|t| t.source_bytes).sum();
    let fp32_bytes = f
        .tensors()
        .iter()
        .map(|t| t.numel().unwrap_or(0).saturating_mul(4))
        .sum();
    let h = f.header();
    Ok(InspectReport {
        format_version: format!("{}.{}", h.major, h.minor),
        file_bytes: f.file_len(),
        metadata: f.metadata().iter().cloned().collect(),
        tensor_count: tensors.len(),
        source_bytes,
        fp32_bytes,
        payload_bytes: tensors.iter().map(|t| t.encoded_bytes).sum(),
        ratio_vs_source: ratio(source_bytes, f.file_len()),
        ratio_vs_fp32: ratio(fp32_bytes, f.file_len()),
        tensors,
        set_files: if crate::set::is_index(path) {
            f.files()
                .map(|(p, t)| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    (name.unwrap_or_default(), t.file_len(), t.tensors().len())
                })
                .collect()
        } else {
            Vec::new()
        },
    })
}
