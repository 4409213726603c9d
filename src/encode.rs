//! Encode: execute a [`Plan`], tensor by tensor, chunk by chunk.
//!
//! Memory stays bounded: one tensor is handled at a time, its chunks are encoded in parallel in
//! batches of at most [`BATCH_BYTES`] of source data, and each batch is handed to the caller's
//! sink (the `.tpk` writer, or nothing for `analyze`) before the next starts. Every chunk is
//! decoded again right after encoding, to compute the metrics against the source and, for
//! lossless pipelines, to prove the round trip is bit-exact before it is written.

use crate::codec::{Binds, Pipeline, TensorFacts};
use crate::dtype::{self, DType};
use crate::error::{Error, ErrorKind, Result};
use crate::input::{TensorInfo, TensorSource};
use crate::metrics::{Accumulator, Metrics};
use crate::plan::{Plan, Storage, TensorPlan};
use crate::tiles::TileGeom;
use crate::values::Values;
use crate::Context;
use rayon::prelude::*;
use std::sync::Arc;
use tpk_format::Layout;

/// Source bytes encoded in parallel before they are handed on (a few KiB in unit tests, so
/// that small tensors take several batches).
pub const BATCH_BYTES: usize = if cfg!(test) { 4 << 10 } else { 64 << 20 };

/// What encoding one planned tensor gave.
#[derive(Debug, Clone)]
pub struct EncodedTensor {
    /// The chunks' pipeline, metrics and size.
    pub encoded: Encoded,
    /// Element order of the chunks.
    pub layout: Layout,
    /// Mixed tensors: the formats used and what the search predicted.
    pub mixed: Option<crate::mixed::MixedSummary>,
    /// Pruned tensors: elements the rule set to zero.
    pub pruned: Option<u64>,
    /// Tensors stored against the base: `xor` or `sub`.
    pub delta: Option<&'static str>,
    /// Tensors encoded with calibration statistics: `gptq` or `weighted`.
    pub calibrated: Option<&'static str>,
}

/// Encode planned tensor `t` of `source`, handing its chunks to `sink` in order. `ahead` is its
/// mixed-tile assignment when the search ran over the whole model first
/// ([`crate::mixed::plan_ahead`]). The tensor is read band by band where its storage allows
/// ([`Values`]); otherwise whole, and its file pages are let go of afterwards.
pub fn encode_planned(
    source: &dyn TensorSource,
    plan: &Plan,
    t: &TensorPlan,
    ahead: Option<crate::mixed::MixedTensor>,
    cx: &Context<'_>,
    sink: &mut ChunkSink<'_>,
) -> Result<EncodedTensor> {
    let r = encode_with(plan, t, Values::Source(source, t.index), ahead, cx, sink);
    source.release(t.index);
    r
}

/// [`encode_planned`] of a tensor whose bytes the caller has read already (`analyze` reads a
/// tensor once and encodes it in every format).
pub fn encode_loaded(
    plan: &Plan,
    t: &TensorPlan,
    data: &[u8],
    ahead: Option<crate::mixed::MixedTensor>,
    cx: &Context<'_>,
    sink: &mut ChunkSink<'_>,
) -> Result<EncodedTensor> {
    encode_with(plan, t, Values::Loaded(data), ahead, cx, sink)
}

fn encode_with(
    plan: &Plan,
    t: &TensorPlan,
    v: Values<'_>,
    ahead: Option<crate::mixed::MixedTensor>,
    cx: &Context<'_>,
    sink: &mut ChunkSink<'_>,
) -> Result<EncodedTensor> {
    let info = &t.info;
    let plain = |encoded, layout| EncodedTensor {
        encoded,
        layout,
        mixed: None,
        pruned: None,
        delta: None,
        calibrated: None,
    };
    match &t.storage {
        Storage::Codec { pipeline, layout } => {
            if let Some(c) = plan.calibration_for(&info.name) {
                // GPTQ and the weighted fits work on the whole matrix.
                let data = v.whole(info)?;
                let (p, mode) = calibrated_pipeline(plan, info, &data, pipeline, *layout, &c)?;
                let e = encode_tensor(info, &data, &p, *layout, plan.chunk_elems, cx, sink)?;
                return Ok(EncodedTensor {
                    calibrated: mode.map(|m| m.name()),
                    ..plain(e, *layout)
                });
            }
            let e = encode_values(info, v, pipeline, *layout, plan.chunk_elems, cx, sink)?;
            Ok(plain(e, *layout))
        }
        Storage::Pruned { pipeline, rule, .. } => {
            // Zero what the rule drops, store the rest sparsely, measure against the original.
            let data = v.whole(info)?;
            let (bytes, k) = rule.apply(info.dtype, &info.dims, &data);
            let e = encode_tensor_against(
                info,
                &bytes,
                &data,
                pipeline,
                Layout::RowMajor,
                plan.chunk_elems,
                cx,
                sink,
            )?;
            Ok(EncodedTensor {
                pruned: Some(k),
                ..plain(e, Layout::RowMajor)
            })
        }
        Storage::Mixed => {
            let spec = plan
                .mixed
                .as_ref()
                .ok_or_else(|| Error::config("a mixed tensor needs a mixed-tile config"))?;
            let m = match ahead {
                Some(m) => m,
                None => crate::mixed::plan_values(info, v, spec, plan.chunk_elems)?,
            };
            let e = encode_values(
                info,
                v,
                &m.pipeline()?,
                Layout::Tiles32,
                plan.chunk_elems,
                cx,
                sink,
            )?;
            Ok(EncodedTensor {
                mixed: Some(m.summary()),
                ..plain(e, Layout::Tiles32)
            })
        }
        Storage::Delta { pipeline } => {
            let base = plan
                .base
                .as_ref()
                .ok_or_else(|| Error::config("a delta tensor needs a base model"))?;
            let bdata = base
                .matching(&info.name, &info.dims, info.dtype)?
                .ok_or_else(|| Error::input("the base model no longer has this tensor"))?;
            let data = v.whole(info)?;
            encode_delta(info, &data, &bdata, pipeline, plan.chunk_elems, cx, sink)
        }
    }
}

/// A tensor the base model also has, stored as its difference (formats-spec/delta.md): the
/// XOR of the bytes through a lossless pipeline, else the f32 difference through it. The
/// metrics compare `base + decoded difference` with the tensor.
fn encode_delta(
    info: &TensorInfo,
    data: &[u8],
    base: &[u8],
    pipeline: &Pipeline,
    chunk_elems: u64,
    cx: &Context<'_>,
    sink: &mut ChunkSink<'_>,
) -> Result<EncodedTensor> {
    use crate::codec::delta::{fingerprint, DeltaCodec, Mode};
    // An unchanged tensor is all zeros as an XOR: byteplane makes that almost nothing,
    // whatever the pipeline says (a lossy codec would spend its full rate on zeros).
    let p = if data == base {
        Pipeline::parse("byteplane")?
    } else {
        pipeline.clone()
    };
    let fp = fingerprint(info.dtype, &info.dims, base);
    let mode = if p.lossless() { Mode::Xor } else { Mode::Sub };
    let codec = DeltaCodec::new(mode, fp, p.tensor_codec_arc())?;
    let p = p.with_tensor_codec(Arc::new(codec.clone()));
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
    let mut kept = Vec::new();
    let mut e = encode_tensor(
        &dinfo,
        &diff,
        &p,
        Layout::RowMajor,
        chunk_elems,
        cx,
        &mut |payload, s, c| {
            if mode == Mode::Sub {
                kept.push((payload.to_vec(), s, c));
            }
            sink(payload, s, c)
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
    Ok(EncodedTensor {
        encoded: e,
        layout: Layout::RowMajor,
        mixed: None,
        pruned: None,
        delta: Some(match mode {
            Mode::Xor => "xor",
            Mode::Sub => "sub",
        }),
        calibrated: None,
    })
}

/// The chunks of a tensor as `(first element, element count)` in the chunks' element space:
/// row-major runs of `chunk_elems` rounded up to the codec's chunk multiple (groups never
/// straddle chunks), or bands of whole tile rows for tile layouts. `pipeline` is `None` for a
/// tile layout whose codec is not known yet (a mixed tensor before its search).
pub fn chunk_ranges(
    info: &TensorInfo,
    pipeline: Option<&Pipeline>,
    layout: Layout,
    chunk_elems: u64,
) -> Vec<(u64, u64)> {
    let chunk_elems = chunk_elems.max(1);
    if layout == Layout::RowMajor {
        let n = info.numel();
        let multiple = pipeline.map_or(1, |p| p.tensor_codec().chunk_multiple().max(1));
        // A multiple beyond the tensor means one chunk for the whole tensor.
        let per = chunk_elems
            .checked_next_multiple_of(multiple)
            .unwrap_or(u64::MAX)
            .min(n.max(1));
        return (0..n)
            .step_by(per as usize)
            .map(|s| (s, per.min(n - s)))
            .collect();
    }
    let Ok(Some(geom)) = TileGeom::new(layout, &info.dims, u64::MAX) else {
        return Vec::new();
    };
    let e = geom.tile_row_elems() as u64;
    tile_bands(&geom, chunk_elems)
        .into_iter()
        .map(|r| (r.start as u64 * e, r.len() as u64 * e))
        .collect()
}

/// The pipeline to encode a tensor with when calibration statistics cover it, and the mode
/// they were applied in (`None`: the codec has no calibrated encoder). A codec that learns from
/// the tensor (fitted levels, nvfp4's global scale) is bound first when its calibrated encoder
/// needs that, and the bound pipeline is returned either way, so nothing is learnt twice.
fn calibrated_pipeline(
    plan: &Plan,
    info: &TensorInfo,
    data: &[u8],
    pipeline: &Pipeline,
    layout: Layout,
    c: &crate::calib::TensorCalib,
) -> Result<(Pipeline, Option<crate::codec::calibrated::Mode>)> {
    let mut widened = Vec::new();
    let vals = f32_view(info.dtype, data, &mut widened);
    let attempt = |p: &Pipeline| p.calibrated(&info.dims, layout, c, plan.calib_mode, vals);
    if let Some(r) = attempt(pipeline) {
        let (p, m) = r?;
        return Ok((p, Some(m)));
    }
    let bound = bind(info, Values::Loaded(data), pipeline)?;
    match attempt(&bound) {
        Some(r) => r.map(|(p, m)| (p, Some(m))),
        None => Ok((bound, None)),
    }
}

/// Bands of whole tile rows, about `chunk_elems` elements each.
fn tile_bands(geom: &TileGeom, chunk_elems: u64) -> Vec<std::ops::Range<usize>> {
    if geom.tile_row_elems() == 0 {
        // An empty view (a dimension of 0, rows or columns): nothing to encode.
        return Vec::new();
    }
    let per_chunk = (chunk_elems as usize / geom.tile_row_elems()).max(1);
    (0..geom.tile_rows())
        .step_by(per_chunk)
        .map(|s| s..(s + per_chunk).min(geom.tile_rows()))
        .collect()
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

/// Encode one tensor with `pipeline` in `layout` (see [`crate::plan::tensor_plan`]): chunks are encoded in
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
    encode_values(
        info,
        Values::Loaded(data),
        pipeline,
        layout,
        chunk_elems,
        cx,
        sink,
    )
}

/// [`encode_tensor`] of values read batch by batch: a source's tensor is read one batch of
/// chunks at a time, unless the pipeline learns from the whole tensor ([`Binds::Data`]) or the
/// layout scatters a band over it (reversed axes of more than two dimensions).
#[allow(clippy::too_many_arguments)]
pub fn encode_values(
    info: &TensorInfo,
    v: Values<'_>,
    pipeline: &Pipeline,
    layout: Layout,
    chunk_elems: u64,
    cx: &Context<'_>,
    sink: &mut ChunkSink<'_>,
) -> Result<Encoded> {
    if chunk_elems == 0 {
        return Err(Error::config("--chunk-elems must be at least 1"));
    }
    crate::values::check_len(info, &v)?;
    let learns = pipeline.tensor_codec().props().binds == Binds::Data;
    if matches!(v, Values::Source(..)) && (learns || !Values::streams(layout, &info.dims)) {
        let data = v.whole(info)?;
        return encode_values(
            info,
            Values::Loaded(&data),
            pipeline,
            layout,
            chunk_elems,
            cx,
            sink,
        );
    }
    if layout != Layout::RowMajor {
        return encode_tiled(info, v, pipeline, layout, chunk_elems, cx, sink);
    }
    encode_rows(info, v, None, pipeline, chunk_elems, cx, sink)
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
    let v = Values::Loaded(data);
    crate::values::check_len(info, &v)?;
    if layout != Layout::RowMajor {
        return encode_tiled(info, v, pipeline, layout, chunk_elems, cx, sink);
    }
    let reference = (reference.as_ptr() != data.as_ptr()).then_some(reference);
    encode_rows(info, v, reference, pipeline, chunk_elems, cx, sink)
}

/// Row-major chunks, one batch read at a time; metrics against `reference` when given (the
/// whole tensor), else against the values encoded.
fn encode_rows(
    info: &TensorInfo,
    v: Values<'_>,
    reference: Option<&[u8]>,
    pipeline: &Pipeline,
    chunk_elems: u64,
    cx: &Context<'_>,
    sink: &mut ChunkSink<'_>,
) -> Result<Encoded> {
    let esize = info.dtype.size();
    let pipeline = &bind(info, v, pipeline)?;
    let ranges = chunk_ranges(info, Some(pipeline), Layout::RowMajor, chunk_elems);
    let largest = ranges.first().map_or(1, |r| r.1 as usize);
    let per_batch = (BATCH_BYTES / (largest * esize).max(1)).max(rayon::current_num_threads());
    let (acc, encoded_bytes) = encode_batches(
        &ranges,
        per_batch,
        cx,
        |batch| {
            let first = batch[0].0;
            let last = batch[batch.len() - 1];
            Ok((first, v.bytes(info, first, last.0 + last.1 - first)?))
        },
        |(first, bytes), &(s, c)| {
            let at = (s - first) as usize * esize;
            let bytes = &bytes[at..at + c as usize * esize];
            let refb = match reference {
                Some(r) => &r[s as usize * esize..(s + c) as usize * esize],
                None => bytes,
            };
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
/// codec fixed for this tensor, chunks of whole tile rows read one batch at a time.
fn encode_tiled(
    info: &TensorInfo,
    v: Values<'_>,
    pipeline: &Pipeline,
    layout: Layout,
    chunk_elems: u64,
    cx: &Context<'_>,
    sink: &mut ChunkSink<'_>,
) -> Result<Encoded> {
    let pipeline = bind(info, v, pipeline)?;
    let geom = TileGeom::new(layout, &info.dims, u64::MAX)?.expect("a tile layout");
    let per_chunk = (chunk_elems as usize / geom.tile_row_elems().max(1)).max(1);
    let trs = tile_bands(&geom, chunk_elems);
    let batch = (BATCH_BYTES / (4 * per_chunk * geom.tile_row_elems()).max(1))
        .max(rayon::current_num_threads());
    let dec_dtype = pipeline.tensor_codec().decoded_dtype(DType::F32);
    let e = geom.tile_row_elems();
    let (acc, encoded_bytes) = encode_batches(
        &trs,
        batch,
        cx,
        |bands| {
            let r = bands[0].start..bands[bands.len() - 1].end;
            let mut tiles = Vec::new();
            v.tiles(info, &geom, r.clone(), &mut tiles)?;
            Ok((r.start, tiles))
        },
        |(start, tiles), r| {
            let slice = &tiles[(r.start - start) * e..(r.end - start) * e];
            encode_tile_chunk(&pipeline, &geom, r, slice, dec_dtype)
        },
        |r, payload| sink(payload, (r.start * e) as u64, (r.len() * e) as u64),
    )?;
    Ok(Encoded {
        pipeline,
        dtype: DType::F32,
        metrics: acc.finish(),
        encoded_bytes,
    })
}

/// The bind steps that need the whole tensor: [`Binds::Amax`] from one pass over the values,
/// read piece by piece (non-finite values refused; the other codecs refuse them chunk by
/// chunk), [`Binds::Data`] from the whole tensor as f32; other pipelines are returned as they
/// are.
fn bind(info: &TensorInfo, v: Values<'_>, pipeline: &Pipeline) -> Result<Pipeline> {
    match pipeline.tensor_codec().props().binds {
        Binds::Amax => {
            let (top, nonfinite) = v.scan(info)?;
            if nonfinite > 0 {
                return Err(Error::input(format!(
                    "{nonfinite} non-finite values (NaN or infinity); {} encodes finite weights only",
                    pipeline.tensor_codec().name()
                )));
            }
            Ok(pipeline.bind(&TensorFacts {
                dims: &info.dims,
                amax: Some(f32::from_bits(top)),
                values: None,
            }))
        }
        Binds::Data => {
            let data = v.whole(info)?;
            let mut widened = Vec::new();
            bind_to_values(info, f32_view(info.dtype, &data, &mut widened), pipeline)
        }
        _ => Ok(pipeline.clone()),
    }
}

/// The bind step of a codec that learns from the whole tensor ([`Binds::Data`]: codebooks,
/// low-rank factors, fitted grids), from its values as f32; non-finite values refused.
fn bind_to_values(info: &TensorInfo, vals: &[f32], pipeline: &Pipeline) -> Result<Pipeline> {
    let nonfinite = vals.iter().filter(|v| !v.is_finite()).count();
    if nonfinite > 0 {
        return Err(Error::input(format!(
            "{nonfinite} non-finite values (NaN or infinity); {} learns from finite weights only",
            pipeline.tensor_codec().name()
        )));
    }
    let bound = pipeline.bind(&TensorFacts {
        dims: &info.dims,
        amax: None,
        values: Some(vals),
    });
    if bound.tensor_codec().props().binds == Binds::Data {
        return Err(Error::internal(format!(
            "{} did not bind to the tensor's values",
            pipeline.tensor_codec().name()
        )));
    }
    Ok(bound)
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
pub fn f32_view<'a>(d: DType, data: &'a [u8], buf: &'a mut Vec<f32>) -> &'a [f32] {
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

/// Encode `items` (chunk descriptions) in parallel, `per_batch` at a time: `load` reads what a
/// batch needs (once, before its chunks start), `encode` makes one chunk from it, and each
/// payload goes to `emit` in order with the metrics merged; stops at Ctrl-C between batches.
/// Errors name the chunk.
fn encode_batches<T: Sync, B: Sync>(
    items: &[T],
    per_batch: usize,
    cx: &Context<'_>,
    mut load: impl FnMut(&[T]) -> Result<B>,
    encode: impl Fn(&B, &T) -> Result<(Vec<u8>, Accumulator)> + Sync,
    mut emit: impl FnMut(&T, &[u8]) -> Result<()>,
) -> Result<(Accumulator, u64)> {
    let mut acc = Accumulator::default();
    let mut bytes = 0;
    for (bi, batch) in items.chunks(per_batch.max(1)).enumerate() {
        if cx.cancelled() {
            return Err(crate::progress::interrupted());
        }
        let loaded = load(batch)?;
        let done: Vec<Result<(Vec<u8>, Accumulator)>> = batch
            .par_iter()
            .enumerate()
            .map(|(k, it)| encode(&loaded, it).map_err(|e| e.with_chunk(bi * per_batch + k)))
            .collect();
        drop(loaded);
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
    // One fixed-width load per element and a branch-free compare, counted in a u32 per block
    // so the loop vectorizes (it runs over every byte a lossless compress writes).
    macro_rules! count {
        ($t:ty, $mask:expr) => {{
            const N: usize = std::mem::size_of::<$t>();
            b.chunks(N << 12)
                .map(|block| {
                    block
                        .chunks_exact(N)
                        .map(|c| {
                            let v = <$t>::from_le_bytes(c.try_into().expect("N bytes"));
                            (v & $mask == $mask) as u32
                        })
                        .sum::<u32>() as u64
                })
                .sum()
        }};
    }
    match d {
        DType::F32 => count!(u32, 0x7F80_0000),
        DType::F16 => count!(u16, 0x7C00),
        DType::BF16 => count!(u16, 0x7F80),
        DType::F64 => count!(u64, 0x7FF0_0000_0000_0000),
        DType::F8E5M2 => count!(u8, 0x7C),
        DType::F8E4M3 => count!(u8, 0x7F),
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

/// Encode one tensor as [`encode_tensor`] does and decode it again: what a file would give
/// back, as f32 row-major, with the encoding's size and metrics (the evaluation's "inject a
/// codec's real error" step).
pub fn reconstruct(
    info: &TensorInfo,
    data: &[u8],
    pipeline: &Pipeline,
    layout: Layout,
    chunk_elems: u64,
    cx: &Context<'_>,
) -> Result<(Encoded, Vec<f32>)> {
    let mut chunks: Vec<(Vec<u8>, u64, u64)> = Vec::new();
    let e = encode_tensor(
        info,
        data,
        pipeline,
        layout,
        chunk_elems,
        cx,
        &mut |p, s, c| {
            chunks.push((p.to_vec(), s, c));
            Ok(())
        },
    )?;
    let out_dtype = e.pipeline.tensor_codec().decoded_dtype(e.dtype);
    let esize = out_dtype.size();
    let geom = TileGeom::new(layout, &info.dims, u64::MAX)?;
    let total: u64 = chunks.iter().map(|c| c.2).sum();
    let mut buf = vec![0u8; total as usize * esize];
    for (payload, s, c) in &chunks {
        let at = *s as usize * esize;
        e.pipeline.decode_into(
            payload,
            e.dtype,
            *c as usize,
            &mut buf[at..at + *c as usize * esize],
        )?;
    }
    let bytes = match geom {
        Some(g) => {
            let mut out = vec![0u8; info.numel() as usize * esize];
            g.scatter(&buf, esize, &mut out);
            out
        }
        None => buf,
    };
    let mut vals = Vec::new();
    dtype::to_f32(out_dtype, &bytes, &mut vals);
    Ok((e, vals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// A source in memory that reads ranges through the trait's default, as a file reader would
    /// be asked to.
    struct Mem(Vec<TensorInfo>, Vec<Vec<u8>>);

    impl TensorSource for Mem {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn tensors(&self) -> &[TensorInfo] {
            &self.0
        }
        fn data(&self, i: usize) -> Result<Cow<'_, [u8]>> {
            Ok(Cow::Borrowed(&self.1[i]))
        }
    }

    fn chunks_of(
        info: &TensorInfo,
        v: Values<'_>,
        p: &Pipeline,
        layout: Layout,
    ) -> (Vec<(Vec<u8>, u64, u64)>, Metrics) {
        let mut out = Vec::new();
        let cx = Context::default();
        let e = encode_values(info, v, p, layout, 700, &cx, &mut |b, s, c| {
            out.push((b.to_vec(), s, c));
            Ok(())
        })
        .unwrap();
        (out, e.metrics)
    }

    #[test]
    fn streamed_encoding_equals_loaded() {
        let shapes: [&[u64]; 5] = [&[70, 45], &[3, 40, 33], &[100], &[0, 5], &[33, 1]];
        for dims in shapes {
            for dt in [DType::F32, DType::BF16] {
                let n: u64 = dims.iter().product();
                let vals: Vec<f32> = (0..n)
                    .map(|i| ((i * 7919 % 113) as f32 - 56.0) / 9.0)
                    .collect();
                let mut bytes = Vec::new();
                dtype::from_f32(dt, &vals, &mut bytes).unwrap();
                let info = TensorInfo {
                    name: "t".into(),
                    dims: dims.to_vec(),
                    dtype: dt,
                    source_dtype: dt.name().into(),
                    source_bytes: bytes.len() as u64,
                };
                let src = Mem(vec![info.clone()], vec![bytes.clone()]);
                for (spec, layout) in [
                    ("byteplane", Layout::RowMajor),
                    ("int4_g32_asym", Layout::RowMajor),
                    ("bfp8", Layout::Tiles32),
                    ("bfp8", Layout::Tiles32Transposed),
                    ("nvfp4", Layout::Tiles32),
                    ("nvfp4", Layout::Tiles32Transposed),
                ] {
                    let p = Pipeline::parse(spec).unwrap();
                    let a = chunks_of(&info, Values::Loaded(&bytes), &p, layout);
                    let b = chunks_of(&info, Values::Source(&src, 0), &p, layout);
                    assert_eq!(a.0, b.0, "{spec} {layout:?} {dims:?} {dt}");
                    assert_eq!(
                        a.1.rmse.to_bits(),
                        b.1.rmse.to_bits(),
                        "{spec} {layout:?} {dims:?} {dt}"
                    );
                    // The chunks cover the layout's element space, in order.
                    let space: u64 = a.0.iter().map(|c| c.2).sum();
                    assert_eq!(
                        Some(space),
                        layout.space(dims),
                        "{spec} {layout:?} {dims:?}"
                    );
                }
            }
        }
    }

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
