//! `compress`: read a model, make its [`Plan`], encode every planned tensor in chunks
//! ([`crate::encode`]), write a `.tpk`.

use crate::encode::{encode_planned, Encoded};
use crate::error::{Error, Result};
use crate::input::{self, TensorInfo, TensorSource};
use crate::metrics::Metrics;
use crate::plan::{Plan, PlanReport};
use crate::progress::Event;
use crate::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tpk_format::{Layout, TensorEntry, TpkWriter};

/// Default chunk size in elements: 256 KiB of bf16. Each chunk carries its own Huffman tables,
/// whose decode tables are rebuilt per chunk; at 64 Ki elements that rebuild was an eighth of
/// bf16 decode time, while 128 Ki still gives a 4-core machine work on all but tiny tensors.
pub const DEFAULT_CHUNK_ELEMS: u64 = 1 << 17;

/// Options of [`compress`].
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// Pipeline spec, e.g. `bf16`, `byteplane`, `bf16+zstd:level=3`.
    pub codec: String,
    /// Elements per chunk.
    pub chunk_elems: u64,
    /// Tensor filter (see [`input::name_matches`]).
    pub filter: Option<String>,
    /// Take only the first N selected tensors.
    pub limit: Option<usize>,
    /// Overwrite an existing output.
    pub force: bool,
    /// User metadata, stored as `user.<key>`.
    pub meta: Vec<(String, String)>,
    /// Tile codecs: tile the tensor with its axes reversed (the `transpose` algorithm).
    pub transpose: bool,
    /// Tile codecs: also tile tensors of fewer than two dimensions (viewed as `[1, n]`, padded
    /// to 32 rows); by default they are stored as they are (`raw`), since padding a vector to a
    /// tile row costs 32x its size.
    pub tile_vectors: bool,
    /// The resolved compression config, stored as metadata `tenpak.config`.
    pub config: Option<serde_json::Value>,
    /// Prune float tensors of two or more dimensions, then store them sparsely (kept values
    /// through `codec`'s tensor codec).
    pub prune: Option<crate::prune::Prune>,
    /// A base model: tensors it also has (same name, shape and dtype) are stored as their
    /// difference from it (formats-spec/delta.md).
    pub base: Option<PathBuf>,
    /// A mixed-tile algorithm: eligible tensors (floats of two or more dimensions) get a format
    /// per tile from it and the `mixed` codec; the others use `codec` as usual.
    pub mixed: Option<crate::config::MixedSpec>,
    /// Per-tensor codecs: (filter, codec spec); a tensor takes the first whose filter matches
    /// it (`input::name_matches`), the others `codec`. Like llama.cpp's separate types for the
    /// token embedding and the output head.
    pub overrides: Vec<(String, String)>,
    /// Calibration statistics (`tenpak calibrate`): codecs with a calibrated encoder (`int`
    /// with `group=N`, `grid`) use them for the tensors they cover.
    pub calibration: Option<PathBuf>,
    /// How: GPTQ or weighted fits; by default GPTQ when the file has second moments.
    pub calib_mode: Option<crate::codec::calibrated::Mode>,
    /// The allocation that chose `overrides` (`--target-bpw`), stored as metadata
    /// `tenpak.allocation`.
    pub allocation: Option<serde_json::Value>,
    /// Compress only part `k` of `n` (1-based): a deterministic share of the tensors balanced by
    /// bytes, into a part file that [`crate::merge::merge`] joins with the others.
    pub shard: Option<(usize, usize)>,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            codec: "byteplane".into(),
            chunk_elems: DEFAULT_CHUNK_ELEMS,
            filter: None,
            limit: None,
            force: false,
            meta: Vec::new(),
            transpose: false,
            tile_vectors: false,
            config: None,
            prune: None,
            base: None,
            mixed: None,
            overrides: Vec::new(),
            calibration: None,
            calib_mode: None,
            allocation: None,
            shard: None,
        }
    }
}

impl CompressOptions {
    /// Take a loaded compression config: its algorithm (`transpose`, a mixed-tile search), its
    /// pruning unless `prune` is already set, and its resolved form for the file's metadata.
    pub fn apply_config(&mut self, c: &crate::config::Config) {
        self.transpose |= c.algorithm == crate::config::Algorithm::Transpose;
        self.config = Some(c.used_json());
        if self.prune.is_none() {
            self.prune = c.prune;
        }
        self.mixed = c.mixed.clone();
    }
}

/// One tensor's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Type in the source file.
    pub source_dtype: String,
    /// Pipeline actually used.
    pub codec: String,
    /// Bytes in the source file.
    pub source_bytes: u64,
    /// Payload bytes written (chunks only).
    pub encoded_bytes: u64,
    /// Bytes of the codec parameters in the index (a few for most codecs; low-rank factors,
    /// codebooks and level tables for the codecs that learn them).
    pub param_bytes: u64,
    /// source_bytes / (encoded_bytes + param_bytes) (0 when nothing was written).
    pub ratio: f64,
    /// Bits per weight written: (encoded_bytes + param_bytes) x 8 / elements.
    pub bpw: f64,
    /// Elements after padding to 32x32 tiles, for tiled tensors whose shape needs padding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub padded_elems: Option<u64>,
    /// Metrics against the source.
    pub metrics: Metrics,
    /// Mixed tensors: formats used and what the search predicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed: Option<crate::mixed::MixedSummary>,
    /// Pruned tensors: elements set to zero by the pruning rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<u64>,
    /// Tensors stored against the base model: `xor` or `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<&'static str>,
    /// Tensors encoded with calibration statistics: `gptq` or `weighted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated: Option<&'static str>,
    /// Multi-stage codecs (`tenpakx`, `vq`): bytes per stage, the parameters' per-tensor parts
    /// (low-rank factor R, codebook) included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<BTreeMap<String, u64>>,
}

/// Bytes of a pipeline's stored parameters.
pub fn param_bytes(stages: &[tpk_format::Stage]) -> u64 {
    stages.iter().map(|s| s.params.len() as u64).sum()
}

/// [`TensorCodec::stage_bytes`](crate::codec::TensorCodec::stage_bytes) of a stored tensor.
pub fn stage_bytes(
    p: &crate::codec::Pipeline,
    chunks: &[tpk_format::ChunkEntry],
) -> Option<BTreeMap<String, u64>> {
    let counts: Vec<u64> = chunks.iter().map(|c| c.elem_count).collect();
    p.tensor_codec()
        .stage_bytes(&counts)
        .map(|v| v.into_iter().map(|(k, b)| (k.to_string(), b)).collect())
}

/// The whole report; sizes come from the written file.
#[derive(Debug, Clone, Serialize)]
pub struct CompressReport {
    /// Output path.
    pub output: PathBuf,
    /// Input description.
    pub source: String,
    /// Per-tensor lines, in name order.
    pub tensors: Vec<TensorReport>,
    /// Sum of the tensors' source bytes.
    pub source_bytes: u64,
    /// What the same tensors take as f32.
    pub fp32_bytes: u64,
    /// Size of the written file, read back from the file system.
    pub file_bytes: u64,
    /// source_bytes / file_bytes.
    pub ratio_vs_source: f64,
    /// fp32_bytes / file_bytes.
    pub ratio_vs_fp32: f64,
    /// Elements of the tensors written.
    pub elements: u64,
    /// Bits per weight of the source: source_bytes x 8 / elements.
    pub source_bpw: f64,
    /// Bits per weight of the file (container and metadata included): file_bytes x 8 / elements.
    pub bpw: f64,
    /// What the user should hear about: an output larger than its source, tensors that grow
    /// through tile padding, an `--override` that matches no tensor.
    pub warnings: Vec<String>,
    /// Seconds spent waiting for the file to reach the disk (the final fsync), apart from the
    /// encoding.
    pub sync_seconds: f64,
}

pub(crate) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Compress `input` into `output`.
pub fn compress(
    input: &Path,
    output: &Path,
    opts: &CompressOptions,
    cx: &Context<'_>,
) -> Result<CompressReport> {
    let source = input::open(input)?;
    compress_source(&*source, input, output, opts, cx)
}

/// Compress an already opened source.
pub fn compress_source(
    source: &dyn TensorSource,
    input: &Path,
    output: &Path,
    opts: &CompressOptions,
    cx: &Context<'_>,
) -> Result<CompressReport> {
    cx.install(|| compress_source_on_threads(source, input, output, opts, cx))
}

fn compress_source_on_threads(
    source: &dyn TensorSource,
    input: &Path,
    output: &Path,
    opts: &CompressOptions,
    cx: &Context<'_>,
) -> Result<CompressReport> {
    check_output_name(output, "tpk", "a .tpk file")?;
    let mut plan = Plan::new(source, input, opts)?;
    // The metadata is the whole model's, so every part carries the same and a merge of the
    // parts is the file one process would write.
    let meta = metadata(source, &plan, opts);
    let part = match opts.shard {
        Some((k, n)) => Some(crate::merge::take_part(&mut plan, k, n)?),
        None => None,
    };
    let mut w =
        TpkWriter::create(output, opts.force).map_err(|e| Error::from(e).with_file(output))?;
    for (k, v) in meta {
        w.set_metadata(&k, &v);
    }
    if let Some(p) = &part {
        w.set_metadata(crate::merge::PART_KEY, &p.to_string());
    }
    let total: u64 = plan.tensors.iter().map(|t| t.info.source_bytes).sum();
    cx.event(Event::Start {
        total_bytes: total,
        tensors: plan.tensors.len(),
    });
    // Whole-model mixed-tile plans come first: they need every tensor's error table.
    let selected: Vec<usize> = plan.tensors.iter().map(|t| t.index).collect();
    let mut ahead = crate::mixed::plan_ahead(
        source,
        &selected,
        plan.mixed.as_ref(),
        plan.tile_vectors,
        plan.chunk_elems,
        cx,
    )
    .map_err(|e| e.with_file(input))?;
    let mut reports = Vec::with_capacity(plan.tensors.len());
    for t in &plan.tensors {
        let info = &t.info;
        cx.event(Event::Tensor { name: &info.name });
        let mut chunks = Vec::new();
        let r = encode_planned(
            source,
            &plan,
            t,
            ahead[t.index].take(),
            cx,
            &mut |payload, s, c| {
                chunks.push(w.write_chunk(payload, s, c)?);
                Ok(())
            },
        )
        .and_then(|e| {
            let report = record(&mut w, info, &e.encoded, chunks, e.layout)?;
            Ok(TensorReport {
                mixed: e.mixed,
                pruned: e.pruned,
                delta: e.delta,
                calibrated: e.calibrated,
                ..report
            })
        })
        .map_err(|e| e.with_tensor(&info.name).with_file(input))?;
        cx.event(Event::Advance {
            bytes: info.source_bytes,
        });
        reports.push(r);
    }
    let finished = w.finish().map_err(|e| Error::from(e).with_file(output))?;
    cx.event(Event::Finish);
    let file_bytes = std::fs::metadata(output)
        .map_err(|e| Error::io("stat the written file", e).with_file(output))?
        .len();
    debug_assert_eq!(finished.bytes, file_bytes);
    let source_bytes = reports.iter().map(|r| r.source_bytes).sum();
    let fp32_bytes = plan.tensors.iter().map(|t| t.info.numel() * 4).sum();
    let elements: u64 = plan.tensors.iter().map(|t| t.info.numel()).sum();
    let mut warnings = plan.warnings.clone();
    // Payloads, not the file: a small file's header and index are not the codec's doing.
    let payload: u64 = reports
        .iter()
        .map(|r| r.encoded_bytes + r.param_bytes)
        .sum();
    warnings.extend(size_warnings(
        &plan.tensors,
        reports.iter().map(|r| r.padded_elems),
        source_bytes,
        payload,
    ));
    Ok(CompressReport {
        output: output.to_path_buf(),
        source: source.describe(),
        tensors: reports,
        source_bytes,
        fp32_bytes,
        file_bytes,
        ratio_vs_source: ratio(source_bytes, file_bytes),
        ratio_vs_fp32: ratio(fp32_bytes, file_bytes),
        elements,
        source_bpw: bits_per(source_bytes, elements),
        bpw: bits_per(file_bytes, elements),
        warnings,
        sync_seconds: finished.sync.as_secs_f64(),
    })
}

/// Refuse an output name whose extension says another format than the `ext` file written
/// (`-o model.gguf` for a .tpk); a name without an extension is taken as given.
pub fn check_output_name(output: &Path, ext: &str, what: &str) -> Result<()> {
    match output.extension().and_then(|e| e.to_str()) {
        Some(e) if !e.eq_ignore_ascii_case(ext) => {
            let hint = match (ext, e.to_ascii_lowercase().as_str()) {
                ("safetensors", "gguf") => " (or leave out --format to write a GGUF)".to_string(),
                ("gguf", "safetensors") => " (or leave out --format to write safetensors)".into(),
                ("tpk", "safetensors") => {
                    " (compress writes .tpk; `tenpak decompress` turns it into safetensors)".into()
                }
                ("tpk", "gguf") => {
                    " (compress writes .tpk; `tenpak decompress FILE.tpk -o model.gguf` writes the GGUF)"
                        .into()
                }
                _ => String::new(),
            };
            Err(Error::config(format!(
                "the output is named .{e} but this writes {what}: name it .{ext}{hint}"
            ))
            .with_file(output))
        }
        _ => Ok(()),
    }
}

/// `bytes` x 8 / `elements` (0 for no elements).
pub fn bits_per(bytes: u64, elements: u64) -> f64 {
    if elements == 0 {
        0.0
    } else {
        bytes as f64 * 8.0 / elements as f64
    }
}

/// Tensors padded to more than this many times their elements are named in a warning.
const PADDING_WARN: f64 = 1.5;

/// Warnings about size: `out` payload bytes larger than the `source` bytes, and tensors that
/// tile padding makes grow by [`PADDING_WARN`] or more (`padded`: each tensor's padded
/// elements, in `tensors`' order).
pub(crate) fn size_warnings(
    tensors: &[crate::plan::TensorPlan],
    padded: impl Iterator<Item = Option<u64>>,
    source: u64,
    out: u64,
) -> Vec<String> {
    let mut w = Vec::new();
    let elements: u64 = tensors.iter().map(|t| t.info.numel()).sum();
    if out > source && elements > 0 {
        let mut types: Vec<&str> = tensors
            .iter()
            .map(|t| t.info.source_dtype.as_str())
            .collect();
        types.sort_unstable();
        types.dedup();
        w.push(format!(
            "the encoded tensors are {:.2}x the size of the source ({:.2} -> {:.2} bits per weight; the source holds {}): choose a codec with fewer bits per weight (`tenpak codecs`)",
            out as f64 / source.max(1) as f64,
            bits_per(source, elements),
            bits_per(out, elements),
            types.join(", ")
        ));
    }
    let grown: Vec<String> = tensors
        .iter()
        .zip(padded)
        .filter_map(|(t, p)| {
            let (p, n) = (p?, t.info.numel());
            (n > 0 && p as f64 >= PADDING_WARN * n as f64)
                .then(|| format!("{} ({:.1}x)", t.info.name, p as f64 / n as f64))
        })
        .collect();
    if !grown.is_empty() {
        let shown = grown.len().min(5);
        let more = if grown.len() > shown {
            format!(" and {} more", grown.len() - shown)
        } else {
            String::new()
        };
        w.push(format!(
            "padding to 32x32 tiles makes {} tensor(s) hold many more elements than they have: {}{more}; vectors stay unpadded without --tile-vectors, and a row-major codec (int4_g32, int8) stores any shape without padding",
            grown.len(),
            grown[..shown].join(", ")
        ));
    }
    w
}

/// `compress --dry-run`: the plan of compressing `input` with `opts` and the sizes it
/// predicts; nothing is read but the tensor descriptions, nothing is written.
pub fn dry_run(input: &Path, opts: &CompressOptions) -> Result<PlanReport> {
    let source = input::open(input)?;
    Ok(Plan::new(&*source, input, opts)?.report())
}

/// The file's metadata: tenpak's version, the source, the options, the config, the model's own
/// metadata (whole models only) and the user's.
fn metadata(
    source: &dyn TensorSource,
    plan: &Plan,
    opts: &CompressOptions,
) -> Vec<(String, String)> {
    let mut m = vec![
        ("tenpak.version".to_string(), crate::VERSION.to_string()),
        ("tenpak.source".to_string(), source.describe()),
    ];
    let mut options = serde_json::json!({
        "codec": plan.pipeline.describe(),
        "chunk_elems": opts.chunk_elems,
        "filter": opts.filter,
        "limit": opts.limit,
        "transpose": opts.transpose,
        "tile_vectors": opts.tile_vectors,
    });
    if let Some(p) = &opts.prune {
        options["prune"] = serde_json::to_value(p).expect("plain data");
    }
    if !opts.overrides.is_empty() {
        options["overrides"] = serde_json::json!(opts
            .overrides
            .iter()
            .map(|(f, c)| serde_json::json!({"filter": f, "codec": c}))
            .collect::<Vec<_>>());
    }
    if let Some(b) = &opts.base {
        // The base's file name only: the file says what it was made against, not where.
        options["base"] = serde_json::json!(b.file_name().map(|n| n.to_string_lossy()));
    }
    m.push(("tenpak.options".into(), options.to_string()));
    if let Some(c) = &plan.calibration {
        // Calibrated files say so, and from which tokens (never the evaluation slice).
        let v = serde_json::json!({
            "mode": plan.calib_mode.name(),
            "model": c.info.model,
            "slice": c.info.slice,
            "rows": c.info.rows,
        });
        m.push(("tenpak.calibration".into(), v.to_string()));
    }
    if let Some(c) = &opts.config {
        m.push(("tenpak.config".into(), c.to_string()));
    }
    if let Some(a) = &opts.allocation {
        m.push(("tenpak.allocation".into(), a.to_string()));
    }
    // A whole model keeps what evaluation needs (architecture, tokenizer); a filtered subset
    // is not a runnable model, so it does not carry them.
    if opts.filter.is_none() && opts.limit.is_none() {
        m.extend(source.model_metadata());
    }
    for (k, v) in &opts.meta {
        m.push((format!("user.{k}"), v.clone()));
    }
    m
}

/// Add an encoded tensor's index entry and make its report line (no mixed, pruned or delta
/// details: the caller adds those).
fn record(
    w: &mut TpkWriter,
    info: &TensorInfo,
    e: &Encoded,
    chunks: Vec<tpk_format::ChunkEntry>,
    layout: Layout,
) -> Result<TensorReport> {
    let stages = stage_bytes(&e.pipeline, &chunks);
    let param_bytes = param_bytes(&e.pipeline.stages());
    w.add_tensor(TensorEntry {
        name: info.name.clone(),
        dtype: e.dtype.name().to_string(),
        dims: info.dims.clone(),
        source_bytes: info.source_bytes,
        stages: e.pipeline.stages(),
        metrics: e.metrics.to_pairs(),
        chunks,
        layout,
    })?;
    Ok(TensorReport {
        name: info.name.clone(),
        shape: info.dims.clone(),
        source_dtype: info.source_dtype.clone(),
        codec: e.pipeline.describe(),
        source_bytes: info.source_bytes,
        encoded_bytes: e.encoded_bytes,
        param_bytes,
        ratio: ratio(info.source_bytes, e.encoded_bytes + param_bytes),
        bpw: bits_per(e.encoded_bytes + param_bytes, info.numel()),
        padded_elems: crate::plan::padded_elems(layout, &info.dims),
        metrics: e.metrics,
        mixed: None,
        pruned: None,
        delta: None,
        calibrated: None,
        stages,
    })
}
