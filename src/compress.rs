//! `compress`: read a model, encode every selected tensor in chunks, write a `.tpk`.
//!
//! Memory stays bounded: one tensor is handled at a time, its chunks are encoded in parallel in
//! batches of at most [`BATCH_BYTES`] of source data, and each batch is written before the next
//! starts. Every chunk is decoded again right after encoding, to compute the metrics against the
//! source and, for lossless pipelines, to prove the round trip is bit-exact before it is written.

use crate::codec::{Binds, Pipeline, RawCodec, TensorFacts};
use crate::dtype::{self, DType};
use crate::error::{Error, ErrorKind, Result};
use crate::input::{self, TensorInfo, TensorSource};
use crate::metrics::{Accumulator, Metrics};
use crate::progress::Event;
use crate::tiles::TileGeom;
use crate::Context;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tpk_format::{Layout, TensorEntry, TpkWriter};

/// Source bytes encoded in parallel before they are written out.
pub const BATCH_BYTES: usize = 64 << 20;
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
        }
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
    /// source_bytes / encoded_bytes (0 when nothing was written).
    pub ratio: f64,
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
    if opts.chunk_elems == 0 {
        return Err(Error::config("--chunk-elems must be at least 1"));
    }
    let pipeline = Pipeline::parse(&opts.codec)?;
    let overrides = opts
        .overrides
        .iter()
        .map(|(f, spec)| Ok((f.as_str(), Pipeline::parse(spec)?)))
        .collect::<Result<Vec<_>>>()?;
    if !overrides.is_empty() && (opts.mixed.is_some() || opts.base.is_some()) {
        return Err(Error::config(
            "--override does not combine with a mixed-tile config or --base",
        ));
    }
    if opts.base.is_some() && (opts.prune.is_some() || opts.mixed.is_some()) {
        return Err(Error::config(
            "--base stores differences from a base model; it does not combine with --prune or a mixed-tile config",
        ));
    }
    let base = opts
        .base
        .as_deref()
        .map(crate::base::Base::open)
        .transpose()?;
    let infos = source.tensors();
    let selected = input::select(infos, opts.filter.as_deref(), opts.limit);
    if selected.is_empty() {
        return Err(Error::input(match &opts.filter {
            Some(q) => format!("no tensor matches the filter '{q}'"),
            None => "the model has no tensors".to_string(),
        })
        .with_file(input));
    }
    let mut w =
        TpkWriter::create(output, opts.force).map_err(|e| Error::from(e).with_file(output))?;
    w.set_metadata("tenpak.version", crate::VERSION);
    w.set_metadata("tenpak.source", &source.describe());
    let options = serde_json::json!({
        "codec": pipeline.describe(),
        "chunk_elems": opts.chunk_elems,
        "filter": opts.filter,
        "limit": opts.limit,
        "transpose": opts.transpose,
        "tile_vectors": opts.tile_vectors,
    });
    let mut options = options;
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
    w.set_metadata("tenpak.options", &options.to_string());
    if let Some(c) = &opts.config {
        w.set_metadata("tenpak.config", &c.to_string());
    }
    // A whole model keeps what evaluation needs (architecture, tokenizer); a filtered subset
    // is not a runnable model, so it does not carry them.
    if opts.filter.is_none() && opts.limit.is_none() {
        for (k, v) in source.model_metadata() {
            w.set_metadata(&k, &v);
        }
    }
    for (k, v) in &opts.meta {
        w.set_metadata(&format!("user.{k}"), v);
    }
    let total: u64 = selected.iter().map(|&i| infos[i].source_bytes).sum();
    cx.event(Event::Start {
        total_bytes: total,
        tensors: selected.len(),
    });
    // Whole-model mixed-tile plans come first: they need every tensor's error table.
    let mut plans = crate::mixed::plan_ahead(
        source,
        &selected,
        opts.mixed.as_ref(),
        opts.tile_vectors,
        opts.chunk_elems,
        cx,
    )
    .map_err(|e| e.with_file(input))?;
    let mut reports = Vec::with_capacity(selected.len());
    for &i in &selected {
        let info = &infos[i];
        cx.event(Event::Tensor { name: &info.name });
        let p = overrides
            .iter()
            .find(|(f, _)| input::name_matches(&info.name, f))
            .map_or(&pipeline, |(_, p)| p);
        let r = compress_tensor(
            source,
            i,
            p,
            opts,
            plans[i].take(),
            base.as_ref(),
            &mut w,
            cx,
        )
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
    let fp32_bytes = selected.iter().map(|&i| infos[i].numel() * 4).sum();
    Ok(CompressReport {
        output: output.to_path_buf(),
        source: source.describe(),
        tensors: reports,
        source_bytes,
        fp32_bytes,
        file_bytes,
        ratio_vs_source: ratio(source_bytes, file_bytes),
        ratio_vs_fp32: ratio(fp32_bytes, file_bytes),
        sync_seconds: finished.sync.as_secs_f64(),
    })
}

/// The pipeline a tensor of `dtype` really gets: lossy codecs leave integer and bool tensors
/// bit-exact by storing them raw (behind the same byte stages).
pub fn effective_pipeline(p: &Pipeline, dtype: DType) -> Pipeline {
    if p.tensor_codec().accepts(dtype) {
        p.clone()
    } else {
        p.with_tensor_codec(Arc::new(RawCodec))
    }
}

/// Parse `FILTER=SPEC` (the filter may itself contain no `=`).
pub fn parse_override(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((f, c)) if !f.is_empty() && !c.is_empty() => Ok((f.to_string(), c.to_string())),
        _ => Err(Error::config(format!(
            "--override '{s}' is not FILTER=SPEC (for example token_embd.weight=int8)"
        ))),
    }
}

/// How a tensor is stored: its pipeline and element layout, after the vector policy: lossy
/// codecs quantize matrices and leave vectors and scalars (norms, biases) raw unless
/// `tile_vectors`, as quantizers do (a norm costs nothing to keep and much to lose). Deltas
/// against a base keep their codec on vectors too.
pub fn tensor_plan(p: &Pipeline, info: &TensorInfo, opts: &CompressOptions) -> (Pipeline, Layout) {
    let p = effective_pipeline(p, info.dtype);
    let p = p.bind(&TensorFacts {
        dims: &info.dims,
        amax: None,
    });
    if !p.tensor_codec().tiled() {
        if info.dims.len() < 2
            && !opts.tile_vectors
            && opts.base.is_none()
            && !p.tensor_codec().lossless_for(info.dtype)
        {
            return (p.with_tensor_codec(Arc::new(RawCodec)), Layout::RowMajor);
        }
        return (p, Layout::RowMajor);
    }
    if info.dims.len() < 2 && !opts.tile_vectors {
        return (p.with_tensor_codec(Arc::new(RawCodec)), Layout::RowMajor);
    }
    let layout = if opts.transpose {
        Layout::Tiles32Transposed
    } else {
        Layout::Tiles32
    };
    (p, layout)
}

#[allow(clippy::too_many_arguments)]
fn compress_tensor(
    source: &dyn TensorSource,
    i: usize,
    pipeline: &Pipeline,
    opts: &CompressOptions,
    plan: Option<crate::mixed::MixedTensor>,
    base: Option<&crate::base::Base>,
    w: &mut TpkWriter,
    cx: &Context<'_>,
) -> Result<TensorReport> {
    let info = &source.tensors()[i];
    let data = source.data(i)?;
    if let Some(b) = base {
        if let Some(bdata) = b.matching(&info.name, &info.dims, info.dtype)? {
            return compress_delta(info, &data, &bdata, pipeline, opts, w, cx);
        }
    }
    let plan = match (&opts.mixed, plan) {
        (_, Some(p)) => Some(p),
        (Some(spec), None) if crate::mixed::eligible(info, opts.tile_vectors) => Some(
            crate::mixed::plan_tensor(info, &data, spec, opts.chunk_elems)?,
        ),
        _ => None,
    };
    let (pipeline, layout) = match &plan {
        Some(p) => (p.pipeline()?, Layout::Tiles32),
        None => tensor_plan(pipeline, info, opts),
    };
    // Pruning: zero what the rule drops, store the rest sparsely, measure against the original.
    let prune = opts
        .prune
        .filter(|_| plan.is_none() && crate::prune::Prune::applies(info.dtype, &info.dims));
    let (pipeline, pruned) = match prune {
        Some(rule) => {
            let sparse = crate::codec::sparse::SparseCodec::new(pipeline.tensor_codec_arc())?;
            let (bytes, k) = rule.apply(info.dtype, &info.dims, &data);
            (
                pipeline.with_tensor_codec(Arc::new(sparse)),
                Some((bytes, k)),
            )
        }
        None => (pipeline, None),
    };
    let mut chunks = Vec::new();
    let e = encode_tensor_against(
        info,
        pruned.as_ref().map_or(&data[..], |p| &p.0[..]),
        &data,
        &pipeline,
        layout,
        opts.chunk_elems,
        cx,
        &mut |payload, s, c| {
            chunks.push(w.write_chunk(payload, s, c)?);
            Ok(())
        },
    )?;
    let report = record(w, info, &e, chunks, layout)?;
    Ok(TensorReport {
        mixed: plan.map(|p| p.summary()),
        pruned: pruned.map(|p| p.1),
        ..report
    })
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
        ratio: ratio(info.source_bytes, e.encoded_bytes),
        metrics: e.metrics,
        mixed: None,
        pruned: None,
        delta: None,
    })
}

/// A tensor the base model also has, stored as its difference (formats-spec/delta.md): the
/// XOR of the bytes through a lossless `--codec`, else the f32 difference through it. The
/// metrics compare `base + decoded difference` with the tensor.
fn compress_delta(
    info: &TensorInfo,
    data: &[u8],
    base: &[u8],
    pipeline: &Pipeline,
    opts: &CompressOptions,
    w: &mut TpkWriter,
    cx: &Context<'_>,
) -> Result<TensorReport> {
    use crate::codec::delta::{fingerprint, DeltaCodec, Mode};
    // An unchanged tensor is all zeros as an XOR: byteplane makes that almost nothing,
    // whatever --codec says (a lossy codec would spend its full rate on zeros).
    let unchanged = data == base;
    let (p, _) = if unchanged {
        (Pipeline::parse("byteplane")?, Layout::RowMajor)
    } else {
        tensor_plan(pipeline, info, opts)
    };
    let fp = fingerprint(info.dtype, &info.dims, base);
    let lossless = p.lossless();
    let mode = if lossless { Mode::Xor } else { Mode::Sub };
    let codec = DeltaCodec::new(mode, fp, p.tensor_codec_arc())?;
    let p = p.with_tensor_codec(std::sync::Arc::new(codec.clone()));
    let (diff, dinfo) = match mode {
        Mode::Xor => (
            data.iter()
                .zip(base)
                .map(|(a, b)| a ^ b)
                .collect::<Vec<u8>>(),
            info.clone(),
        ),
        Mode::Sub => {
            let (mut x, mut b) = (Vec::new(), Vec::new());
            dtype::to_f32(info.dtype, data, &mut x);
            dtype::to_f32(info.dtype, base, &mut b);
            let d: Vec<u8> = x
                .iter()
                .zip(&b)
                .flat_map(|(x, b)| (x - b).to_le_bytes())
                .collect();
            let mut i2 = info.clone();
            i2.dtype = DType::F32;
            (d, i2)
        }
    };
    let mut chunks = Vec::new();
    let mut kept = Vec::new();
    let mut e = encode_tensor(
        &dinfo,
        &diff,
        &p,
        Layout::RowMajor,
        opts.chunk_elems,
        cx,
        &mut |payload, s, c| {
            chunks.push(w.write_chunk(payload, s, c)?);
            if mode == Mode::Sub {
                kept.push((payload.to_vec(), s, c));
            }
            Ok(())
        },
    )?;
    if mode == Mode::Sub {
        // Measure what a reader gets: base + decoded difference, against the tensor.
        let mut rec = vec![0u8; diff.len()];
        for (payload, s, c) in &kept {
            let (s, c) = (*s as usize, *c as usize);
            p.decode_into(payload, DType::F32, c, &mut rec[s * 4..(s + c) * 4])?;
        }
        codec.apply(&mut rec, base, info.dtype);
        e.metrics = chunk_stats(info.dtype, data, DType::F32, &rec).finish();
    }
    let report = record(w, info, &e, chunks, Layout::RowMajor)?;
    Ok(TensorReport {
        delta: Some(match mode {
            Mode::Xor => "xor",
            Mode::Sub => "sub",
        }),
        ..report
    })
}

/// One tensor after encoding: what was used, what it measured, what it took.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The pipeline, with any per-tensor parameters fixed (nvfp4's global scale).
    pub pipeline: Pipeline,
    /// The dtype fed to the codec (F32 for tile codecs).
    pub dtype: DType,
    /// Metrics against the source values (padding left out).
    pub metrics: Metrics,
    /// Payload bytes of all chunks.
    pub encoded_bytes: u64,
}

/// Sink for encoded chunks: `(payload, first element, element count)`, in order.
pub type ChunkSink<'a> = dyn FnMut(&[u8], u64, u64) -> Result<()> + 'a;

/// Encode one tensor with `pipeline` in `layout` (see [`tensor_plan`]): chunks are encoded in
/// parallel in batches of at most [`BATCH_BYTES`], decoded again for the metrics (and the
/// bit-exactness check of lossless pipelines), and handed to `sink` in order.
#[allow(clippy::too_many_arguments)]
pub fn encode_tensor(
    info: &TensorInfo,
    data: &[u8],
    pipeline: &Pipeline,
    layout: Layout,
    chunk_elems: u64,
    cx: &Context<'_>,
    sink: &mut ChunkSink<'_>,
) -> Result<Encoded> {
    encode_tensor_against(info, data, data, pipeline, layout, chunk_elems, cx, sink)
}

/// [`encode_tensor`] of `data` (a pruned copy of the tensor, say) with the metrics measured
/// against `reference` (the tensor as it was; same shape and dtype). Row-major layouts only
/// when the two differ.
#[allow(clippy::too_many_arguments)]
pub fn encode_tensor_against(
    info: &TensorInfo,
    data: &[u8],
    reference: &[u8],
    pipeline: &Pipeline,
    layout: Layout,
    chunk_elems: u64,
    cx: &Context<'_>,
    sink: &mut ChunkSink<'_>,
) -> Result<Encoded> {
    if reference.len() != data.len()
        || (layout != Layout::RowMajor && reference.as_ptr() != data.as_ptr())
    {
        return Err(Error::config(
            "measuring against a different reference needs row-major data of the same size",
        ));
    }
    if chunk_elems == 0 {
        return Err(Error::config("--chunk-elems must be at least 1"));
    }
    let esize = info.dtype.size();
    let n = info.numel();
    if data.len() as u64 != n * esize as u64 {
        return Err(Error::malformed(format!(
            "{} bytes of data for shape {:?} of {}",
            data.len(),
            info.dims,
            info.dtype
        )));
    }
    if layout != Layout::RowMajor {
        return encode_tiled(info, data, pipeline, layout, chunk_elems, cx, sink);
    }
    // Codecs with groups take whole groups per chunk.
    // (A multiple beyond the tensor means one chunk for the whole tensor.)
    let chunk_elems = chunk_elems
        .checked_next_multiple_of(pipeline.tensor_codec().chunk_multiple().max(1))
        .unwrap_or(u64::MAX)
        .min(n.max(1));
    let ranges: Vec<(u64, u64)> = (0..n)
        .step_by(chunk_elems as usize)
        .map(|s| (s, chunk_elems.min(n - s)))
        .collect();
    let per_batch =
        (BATCH_BYTES / (chunk_elems as usize * esize).max(1)).max(rayon::current_num_threads());
    let (acc, encoded_bytes) = encode_batches(
        &ranges,
        per_batch,
        cx,
        |&(s, c)| {
            let bytes = &data[s as usize * esize..(s + c) as usize * esize];
            let refb = &reference[s as usize * esize..(s + c) as usize * esize];
            encode_chunk(pipeline, info.dtype, bytes, refb, c as usize)
        },
        |&(s, c), payload| sink(payload, s, c),
    )?;
    Ok(Encoded {
        pipeline: pipeline.clone(),
        dtype: info.dtype,
        metrics: acc.finish(),
        encoded_bytes,
    })
}

/// Tile codecs: values widened to f32 (non-finite values are an error naming the count), the
/// codec fixed for this tensor, chunks of whole tile rows.
fn encode_tiled(
    info: &TensorInfo,
    data: &[u8],
    pipeline: &Pipeline,
    layout: Layout,
    chunk_elems: u64,
    cx: &Context<'_>,
    sink: &mut ChunkSink<'_>,
) -> Result<Encoded> {
    let mut widened = Vec::new();
    let vals = f32_view(info.dtype, data, &mut widened);
    // A pass over the whole tensor only for codecs with per-tensor parameters; the others
    // refuse non-finite values chunk by chunk. One integer max over the magnitude bits (it
    // vectorizes; a float max does not): for non-negative floats the bit patterns order as the
    // values do, and anything at or above the infinity pattern is non-finite.
    let pipeline = if pipeline.tensor_codec().props().binds == Binds::Amax {
        let top = vals
            .iter()
            .map(|v| v.to_bits() & 0x7FFF_FFFF)
            .fold(0u32, u32::max);
        if top >= 0x7F80_0000 {
            let nonfinite = vals.iter().filter(|v| !v.is_finite()).count();
            return Err(Error::input(format!(
                "{nonfinite} non-finite values (NaN or infinity); {} encodes finite weights only",
                pipeline.tensor_codec().name()
            )));
        }
        pipeline.bind(&TensorFacts {
            dims: &info.dims,
            amax: Some(f32::from_bits(top)),
        })
    } else {
        pipeline.clone()
    };
    let geom = TileGeom::new(layout, &info.dims, u64::MAX)?.expect("a tile layout");
    let per_chunk = (chunk_elems as usize / geom.tile_row_elems()).max(1);
    let trs: Vec<std::ops::Range<usize>> = (0..geom.tile_rows())
        .step_by(per_chunk)
        .map(|s| s..(s + per_chunk).min(geom.tile_rows()))
        .collect();
    let batch = (BATCH_BYTES / (4 * per_chunk * geom.tile_row_elems()).max(1))
        .max(rayon::current_num_threads());
    let dec_dtype = pipeline.tensor_codec().decoded_dtype(DType::F32);
    let e = geom.tile_row_elems() as u64;
    let (acc, encoded_bytes) = encode_batches(
        &trs,
        batch,
        cx,
        |r| {
            // Per-thread buffers, reused across chunks: fresh ones cost a zeroing pass and page
            // faults per chunk.
            thread_local! {
                static BUF: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
            }
            let mut tiles = BUF.take();
            geom.gather_into(vals, r.clone(), &mut tiles);
            let result = encode_tile_chunk(&pipeline, &geom, r, &tiles, dec_dtype);
            BUF.set(tiles);
            result
        },
        |r, payload| sink(payload, r.start as u64 * e, r.len() as u64 * e),
    )?;
    Ok(Encoded {
        pipeline,
        dtype: DType::F32,
        metrics: acc.finish(),
        encoded_bytes,
    })
}

/// Encode one band of tiles and measure it, tile by tile, against its reconstruction.
fn encode_tile_chunk(
    pipeline: &Pipeline,
    geom: &TileGeom,
    r: &std::ops::Range<usize>,
    tiles: &[f32],
    dec_dtype: DType,
) -> Result<(Vec<u8>, Accumulator)> {
    use crate::tiles::T;
    let tiles_wide = geom.pcols / T;
    let mut acc = Accumulator::default();
    let mut i = 0;
    // Padding is left out of the metrics; whole tiles are measured as they are.
    let mut measure = |x: &[f32], y: &[f32]| {
        let (tr, tc) = (r.start + i / tiles_wide, i % tiles_wide);
        i += 1;
        let vr = geom.rows.saturating_sub(tr * T).min(T);
        let vc = geom.cols.saturating_sub(tc * T).min(T);
        let a = if vr == T && vc == T {
            Accumulator::from_f32_block(x, y)
        } else {
            let (mut xs, mut ys) = (Vec::with_capacity(vr * vc), Vec::with_capacity(vr * vc));
            for row in 0..vr {
                xs.extend_from_slice(&x[row * T..row * T + vc]);
                ys.extend_from_slice(&y[row * T..row * T + vc]);
            }
            Accumulator::from_f32_pairs(&xs, &ys)
        };
        acc.merge(&a);
    };
    let payload = match pipeline.encode_f32_tiles_at(r.start * tiles_wide, tiles, &mut measure) {
        Some(p) => p?,
        None => {
            let mut bytes = vec![0u8; 4 * tiles.len()];
            for (b, v) in bytes.chunks_exact_mut(4).zip(tiles) {
                b.copy_from_slice(&v.to_le_bytes());
            }
            let payload = pipeline.encode(DType::F32, &bytes)?;
            let dec = pipeline.decode(&payload, DType::F32, tiles.len(), u64::MAX)?;
            let mut dec32 = Vec::new();
            dtype::to_f32(dec_dtype, &dec, &mut dec32);
            let te = T * T;
            for (x, y) in tiles.chunks_exact(te).zip(dec32.chunks_exact(te)) {
                measure(x, y);
            }
            payload
        }
    };
    Ok((payload, acc))
}

/// A tensor's values as f32: f32 sources read in place, others widened once into `buf`.
pub(crate) fn f32_view<'a>(d: DType, data: &'a [u8], buf: &'a mut Vec<f32>) -> &'a [f32] {
    match bytes_as_f32(d, data) {
        Some(v) => v,
        None => {
            dtype::to_f32(d, data, buf);
            buf
        }
    }
}

/// Little-endian f32 bytes viewed as `&[f32]` in place, where the platform allows (little-endian,
/// 4-byte aligned, as memory-mapped safetensors and GGUF data are); `None` otherwise.
fn bytes_as_f32(d: DType, data: &[u8]) -> Option<&[f32]> {
    if d != DType::F32 || cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: every bit pattern is a valid f32; align_to only yields the aligned middle part,
    // which must then be the whole slice.
    let (head, mid, tail) = unsafe { data.align_to::<f32>() };
    (head.is_empty() && tail.is_empty()).then_some(mid)
}

/// Encode `items` (chunk descriptions) in parallel, `per_batch` at a time, handing each
/// payload to `emit` in order and merging the metrics; stops at Ctrl-C between batches. Errors
/// name the chunk.
fn encode_batches<T: Sync>(
    items: &[T],
    per_batch: usize,
    cx: &Context<'_>,
    encode: impl Fn(&T) -> Result<(Vec<u8>, Accumulator)> + Sync,
    mut emit: impl FnMut(&T, &[u8]) -> Result<()>,
) -> Result<(Accumulator, u64)> {
    let mut acc = Accumulator::default();
    let mut bytes = 0;
    for (bi, batch) in items.chunks(per_batch.max(1)).enumerate() {
        if cx.cancelled() {
            return Err(crate::progress::interrupted());
        }
        let done: Vec<Result<(Vec<u8>, Accumulator)>> = batch
            .par_iter()
            .enumerate()
            .map(|(k, it)| encode(it).map_err(|e| e.with_chunk(bi * per_batch + k)))
            .collect();
        for (r, it) in done.into_iter().zip(batch) {
            let (payload, a) = r?;
            acc.merge(&a);
            bytes += payload.len() as u64;
            emit(it, &payload)?;
        }
    }
    Ok((acc, bytes))
}

fn encode_chunk(
    p: &Pipeline,
    dtype: DType,
    bytes: &[u8],
    reference: &[u8],
    n: usize,
) -> Result<(Vec<u8>, Accumulator)> {
    let payload = p.encode(dtype, bytes)?;
    let decoded = p.decode(&payload, dtype, n, u64::MAX)?;
    let out_dtype = p.tensor_codec().decoded_dtype(dtype);
    if p.lossless() {
        if decoded != bytes {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!(
                    "internal error: lossless pipeline {} did not round-trip",
                    p.describe()
                ),
            ));
        }
        // Bit-exact: the metrics are those of identical data; no f64 pass needed.
        if reference.as_ptr() == bytes.as_ptr() {
            let nonfinite = count_nonfinite(dtype, bytes);
            return Ok((
                payload,
                Accumulator::identical(n as u64 - nonfinite, nonfinite),
            ));
        }
    }
    Ok((payload, chunk_stats(dtype, reference, out_dtype, &decoded)))
}

/// Elements whose exponent bits are all ones (NaN or infinity); 0 for integer dtypes.
fn count_nonfinite(d: DType, b: &[u8]) -> u64 {
    fn count<const N: usize>(b: &[u8], mask: u64) -> u64 {
        b.chunks_exact(N)
            .map(|c| {
                let v = c.iter().rev().fold(0u64, |a, &x| a << 8 | x as u64);
                (v & mask == mask) as u64
            })
            .sum()
    }
    match d {
        DType::F32 => count::<4>(b, 0x7F80_0000),
        DType::F16 => count::<2>(b, 0x7C00),
        DType::BF16 => count::<2>(b, 0x7F80),
        DType::F64 => count::<8>(b, 0x7FF0_0000_0000_0000),
        DType::F8E5M2 => count::<1>(b, 0x7C),
        DType::F8E4M3 => count::<1>(b, 0x7F),
        _ => 0,
    }
}

/// Metrics accumulator of one chunk: source bytes vs decoded bytes, both read as f64.
pub(crate) fn chunk_stats(
    src: DType,
    src_bytes: &[u8],
    out: DType,
    out_bytes: &[u8],
) -> Accumulator {
    let x = dtype::to_f64(src, src_bytes);
    let y = dtype::to_f64(out, out_bytes);
    Accumulator::from_pairs(&x, &y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonfinite_counts() {
        let f: Vec<u8> = [
            1.0f32,
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            -0.0,
            f32::MAX,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
        assert_eq!(count_nonfinite(DType::F32, &f), 3);
        let mut b = Vec::new();
        dtype::from_f32(DType::BF16, &[1.0, f32::NAN, f32::INFINITY, 2.0], &mut b).unwrap();
        assert_eq!(count_nonfinite(DType::BF16, &b), 2);
        dtype::from_f32(DType::F16, &[1e6, f32::NAN, 65504.0], &mut b).unwrap();
        assert_eq!(count_nonfinite(DType::F16, &b), 2); // 1e6 overflows to inf in f16
        assert_eq!(count_nonfinite(DType::F8E4M3, &[0x7F, 0xFF, 0x7E]), 2);
        assert_eq!(count_nonfinite(DType::I32, &[0xFF; 8]), 0);
    }
}
