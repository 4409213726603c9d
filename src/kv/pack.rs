//! `tenpak kv compress` / `kv decompress`: a dump folder to one `.tpk` and back.
//!
//! Every `.bin` file becomes one `.tpk` tensor named by its path under the root
//! (`<run>/layer_<i>/k_t<s>_<e>.bin`), shape `[seq_len, kv_heads, head_dim]`, chunked by token
//! range (`chunk_tokens` tokens per chunk), so one layer, K or V, or token range decodes alone.
//! Every meta JSON is kept byte for byte as metadata `kv.meta/<path>`; `kv.policy` holds the
//! policy. Dumps are encoded in parallel; the file is written in dump order, so the bytes do not
//! depend on the thread count. Layout: formats-spec/kv-dump.md, "In a .tpk".

use super::dump::{self, Dump, DumpFilter};
use super::method::{Policy, Which};
use crate::context::Context;
use crate::dtype::DType;
use crate::encode::{encode_tensor_against, Encoded};
use crate::error::{Error, Result};
use crate::input::TensorInfo;
use crate::metrics::Metrics;
use crate::progress::Event;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tpk_format::{ChunkEntry, Layout, TensorEntry, TpkWriter};

/// Metadata key prefix of the meta JSON files.
pub const META_PREFIX: &str = "kv.meta/";
/// Metadata key of the policy.
pub const POLICY_KEY: &str = "kv.policy";

/// What `kv compress` does.
#[derive(Debug, Clone)]
pub struct KvCompressOptions {
    /// Which dumps.
    pub filter: DumpFilter,
    /// Which method each layer's K and V get.
    pub policy: Policy,
    /// Tokens per chunk (LMCache uses 256); 0: each tensor in one chunk.
    pub chunk_tokens: u64,
    /// Replace an existing output.
    pub force: bool,
}

/// One stored K or V tensor.
#[derive(Debug, Clone, Serialize)]
pub struct KvTensorReport {
    /// Tensor name (its path under the dump root).
    pub name: String,
    /// Run id (folder).
    pub run: String,
    /// Layer.
    pub layer_id: u32,
    /// Prefill or decode.
    pub stage: dump::Stage,
    /// Keys or values.
    pub which: Which,
    /// Tokens.
    pub seq_len: u64,
    /// KV heads.
    pub kv_heads: u64,
    /// Dimensions per head.
    pub head_dim: u64,
    /// Bytes per element in the dump.
    pub bytes_per_elem: u64,
    /// The method, as written.
    pub method: String,
    /// The codec pipeline stored.
    pub codec: String,
    /// Whether the stored values are the dump's exactly.
    pub lossless: bool,
    /// Bytes in the dump.
    pub raw_bytes: u64,
    /// Payload bytes of its chunks in the `.tpk`.
    pub payload_bytes: u64,
    /// Error against the dump.
    pub metrics: Metrics,
}

impl KvTensorReport {
    /// Elements.
    pub fn numel(&self) -> u64 {
        self.seq_len * self.kv_heads * self.head_dim
    }
}

/// What `kv compress` did.
#[derive(Debug, Clone, Serialize)]
pub struct KvCompressReport {
    /// The `.tpk` written.
    pub output: PathBuf,
    /// Dumps stored (each a K and a V tensor).
    pub dumps: usize,
    /// The policy, as JSON.
    pub policy: serde_json::Value,
    /// Every tensor.
    pub tensors: Vec<KvTensorReport>,
    /// Bytes of the dumps' `.bin` files.
    pub raw_bytes: u64,
    /// Payload bytes of all chunks.
    pub payload_bytes: u64,
    /// Size of the `.tpk`.
    pub file_bytes: u64,
    /// `raw_bytes / payload_bytes`.
    pub payload_ratio: f64,
    /// `raw_bytes / file_bytes` (container and meta files included).
    pub file_ratio: f64,
    /// Bits per cached value, `8 * file_bytes / elements`.
    pub bits_per_value: f64,
    /// Wall time of reading, encoding (with the check decode) and writing, seconds.
    pub seconds: f64,
}

/// Compress the dumps under `root` into `output`.
pub fn compress(
    root: &Path,
    output: &Path,
    opts: &KvCompressOptions,
    cx: &Context<'_>,
) -> Result<KvCompressReport> {
    cx.install(|| compress_on_threads(root, output, opts, cx))
}

/// The tensor name of a dump file: its path under the root, `/`-separated.
fn tensor_name(d: &Dump, file: &str) -> String {
    let layer = d
        .dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}/{layer}/{file}", d.run)
}

/// One `.tpk` tensor ready to write.
struct Part {
    info: TensorInfo,
    encoded: Encoded,
    chunks: Vec<(Vec<u8>, u64, u64)>,
}

/// A dump tensor: its main tensor, then the overlays of the token ranges kept exact.
struct Done {
    parts: Vec<Part>,
    report: KvTensorReport,
}

/// Separates a kept token range's tensor name from its dump tensor's: `<name>#t<a>_<b>`.
pub const OVERLAY: &str = "#t";

fn encode_part(
    info: TensorInfo,
    data: &[u8],
    reference: &[u8],
    pipeline: &crate::codec::Pipeline,
    chunk_elems: u64,
    cx: &Context<'_>,
) -> Result<Part> {
    let mut chunks = Vec::new();
    let encoded = encode_tensor_against(
        &info,
        data,
        reference,
        pipeline,
        Layout::RowMajor,
        chunk_elems,
        cx,
        &mut |p, s, c| {
            chunks.push((p.to_vec(), s, c));
            Ok(())
        },
    )
    .map_err(|e| e.with_tensor(&info.name))?;
    Ok(Part {
        info,
        encoded,
        chunks,
    })
}

fn encode_one(
    d: &Dump,
    which: Which,
    run_end: u64,
    opts: &KvCompressOptions,
    cx: &Context<'_>,
) -> Result<Done> {
    let m = &d.meta;
    let file = match which {
        Which::K => &m.k_file,
        Which::V => &m.v_file,
    };
    let name = tensor_name(d, file);
    let bytes = match which {
        Which::K => d.read_k()?,
        Which::V => d.read_v()?,
    };
    let dtype = m.dtype.dtype();
    let dims = vec![m.seq_len, m.kv_heads, m.head_dim];
    let info = TensorInfo {
        name: name.clone(),
        dims: dims.clone(),
        dtype,
        source_dtype: dtype.name().to_string(),
        source_bytes: bytes.len() as u64,
    };
    let method = opts.policy.method(m.layer_id, which);
    let mut data = std::borrow::Cow::Borrowed(bytes.as_slice());
    for t in &method.transforms {
        data = std::borrow::Cow::Owned(super::transform::apply(t, dtype, &data)?);
    }
    let row = m.kv_heads * m.head_dim;
    let es = dtype.size() as u64;
    let kept = if method.lossless() {
        Vec::new()
    } else {
        opts.policy.kept(m.seq_start, m.seq_len, run_end)
    };
    // Kept tokens are zeroed in the main tensor (so they do not widen its quantization
    // ranges) and stored exactly in overlays.
    if !kept.is_empty() {
        let mut z = data.into_owned();
        for &(a, b) in &kept {
            z[(a * row * es) as usize..(b * row * es) as usize].fill(0);
        }
        data = std::borrow::Cow::Owned(z);
    }
    let amax = {
        let mut x = Vec::new();
        crate::dtype::to_f32(dtype, &data, &mut x);
        x.iter()
            .filter(|v| v.is_finite())
            .fold(0f32, |a, v| a.max(v.abs()))
    };
    let pipeline = method.pipeline.bind(&crate::codec::TensorFacts {
        dims: &dims,
        amax: Some(amax),
        values: None,
    });
    // 0: the whole tensor in one chunk (as the reference compresses it).
    let chunk_elems = if opts.chunk_tokens == 0 {
        m.seq_len.saturating_mul(row).max(1)
    } else {
        opts.chunk_tokens.saturating_mul(row)
    };
    let main = encode_part(info, &data, &bytes, &pipeline, chunk_elems, cx)?;
    let mut metrics = main.encoded.metrics;
    let mut payload_bytes = main.encoded.encoded_bytes;
    let mut parts = vec![main];
    if !kept.is_empty() {
        let exact = opts.policy.lossless.for_kind(which);
        for &(a, b) in &kept {
            let span = &bytes[(a * row * es) as usize..(b * row * es) as usize];
            let odims = vec![b - a, m.kv_heads, m.head_dim];
            let oinfo = TensorInfo {
                name: format!("{name}{OVERLAY}{a}_{b}"),
                dims: odims.clone(),
                dtype,
                source_dtype: dtype.name().to_string(),
                source_bytes: span.len() as u64,
            };
            let p = exact.pipeline.bind(&crate::codec::TensorFacts {
                dims: &odims,
                amax: None,
                values: None,
            });
            let part = encode_part(oinfo, span, span, &p, chunk_elems, cx)?;
            payload_bytes += part.encoded.encoded_bytes;
            parts.push(part);
        }
        // The metrics of what decoding gives back: the main tensor with the kept tokens
        // restored, against the dump.
        let main = &parts[0];
        let mut recon = Vec::with_capacity(bytes.len());
        for (payload, _, count) in &main.chunks {
            let dec = main
                .encoded
                .pipeline
                .decode(payload, dtype, *count as usize, u64::MAX)?;
            let dt = main.encoded.pipeline.tensor_codec().decoded_dtype(dtype);
            recon.extend(crate::decompress::convert(dt, dec, dtype)?);
        }
        for &(a, b) in &kept {
            let r = (a * row * es) as usize..(b * row * es) as usize;
            recon[r.clone()].copy_from_slice(&bytes[r]);
        }
        let (mut x, mut y) = (Vec::new(), Vec::new());
        crate::dtype::to_f32(dtype, &bytes, &mut x);
        crate::dtype::to_f32(dtype, &recon, &mut y);
        metrics = crate::metrics::Accumulator::from_f32_pairs(&x, &y).finish();
    }
    let report = KvTensorReport {
        name: name.clone(),
        run: d.run.clone(),
        layer_id: m.layer_id,
        stage: m.stage,
        which,
        seq_len: m.seq_len,
        kv_heads: m.kv_heads,
        head_dim: m.head_dim,
        bytes_per_elem: m.dtype.size(),
        method: opts.policy.spec(m.layer_id, which).to_string(),
        codec: parts[0].encoded.pipeline.describe(),
        lossless: method.lossless(),
        raw_bytes: bytes.len() as u64,
        payload_bytes,
        metrics,
    };
    Ok(Done { parts, report })
}

fn compress_on_threads(
    root: &Path,
    output: &Path,
    opts: &KvCompressOptions,
    cx: &Context<'_>,
) -> Result<KvCompressReport> {
    let start = std::time::Instant::now();
    crate::compress::check_output_name(output, "tpk", "a .tpk file")?;
    let dumps = dump::scan(root, &opts.filter)?;
    if dumps.is_empty() {
        return Err(Error::input(
            "no KV dumps here (after the stage and length filters): expected <run>/layer_<i>/meta_t<s>_<e>.json",
        )
        .with_file(root));
    }
    let mut w =
        TpkWriter::create(output, opts.force).map_err(|e| Error::from(e).with_file(output))?;
    w.set_metadata("tenpak.version", env!("CARGO_PKG_VERSION"));
    w.set_metadata(
        "tenpak.source",
        &format!(
            "KV dumps {} ({} dumps)",
            root.file_name().map_or_else(
                || root.display().to_string(),
                |n| n.to_string_lossy().into()
            ),
            dumps.len()
        ),
    );
    let policy = opts.policy.to_json();
    w.set_metadata(POLICY_KEY, &policy.to_string());
    w.set_metadata(
        "kv.options",
        &serde_json::json!({
            "chunk_tokens": opts.chunk_tokens,
            "stage": opts.filter.stage,
            "min_seq_len": opts.filter.min_seq_len,
            "max_seq_len": opts.filter.max_seq_len,
        })
        .to_string(),
    );
    for d in &dumps {
        let text = d.meta_text()?;
        let fname = d
            .meta_path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        w.set_metadata(&format!("{META_PREFIX}{}", tensor_name(d, &fname)), &text);
    }
    let total: u64 = dumps
        .iter()
        .map(|d| 2 * d.meta.bin_bytes().unwrap_or(0))
        .sum();
    cx.event(Event::Start {
        total_bytes: total,
        tensors: 2 * dumps.len(),
    });
    let mut run_end: std::collections::HashMap<&str, u64> = Default::default();
    for d in &dumps {
        let e = run_end.entry(d.run.as_str()).or_default();
        *e = (*e).max(d.meta.seq_start.saturating_add(d.meta.seq_len));
    }
    let mut reports = Vec::with_capacity(2 * dumps.len());
    // Batches of dumps are encoded in parallel (each tensor is small), then written in order.
    let per_batch = (64usize << 20)
        .checked_div(dumps[0].meta.bin_bytes().unwrap_or(1).max(1) as usize)
        .unwrap_or(1)
        .clamp(1, 1024);
    for batch in dumps.chunks(per_batch) {
        cx.check_cancelled()?;
        let jobs: Vec<(&Dump, Which)> = batch
            .iter()
            .flat_map(|d| [(d, Which::K), (d, Which::V)])
            .collect();
        let done: Vec<Result<Done>> = jobs
            .par_iter()
            .map(|(d, which)| {
                encode_one(d, *which, run_end[d.run.as_str()], opts, cx)
                    .map_err(|e| e.with_file(d.source()))
            })
            .collect();
        for r in done {
            let r = r?;
            cx.event(Event::Tensor {
                name: &r.report.name,
            });
            for part in &r.parts {
                let mut entries: Vec<ChunkEntry> = Vec::with_capacity(part.chunks.len());
                for (p, s, c) in &part.chunks {
                    entries.push(w.write_chunk(p, *s, *c)?);
                }
                w.add_tensor(TensorEntry {
                    name: part.info.name.clone(),
                    dtype: part.encoded.dtype.name().to_string(),
                    dims: part.info.dims.clone(),
                    source_bytes: part.info.source_bytes,
                    stages: part.encoded.pipeline.stages(),
                    metrics: part.encoded.metrics.to_pairs(),
                    chunks: entries,
                    layout: Layout::RowMajor,
                })?;
            }
            cx.event(Event::Advance {
                bytes: r.report.raw_bytes,
            });
            reports.push(r.report);
        }
    }
    w.finish().map_err(|e| Error::from(e).with_file(output))?;
    cx.event(Event::Finish);
    let file_bytes = std::fs::metadata(output)
        .map_err(|e| Error::io("stat the written file", e).with_file(output))?
        .len();
    let raw_bytes: u64 = reports.iter().map(|r| r.raw_bytes).sum();
    let payload_bytes: u64 = reports.iter().map(|r| r.payload_bytes).sum();
    let elems: u64 = reports.iter().map(|r| r.numel()).sum();
    Ok(KvCompressReport {
        output: output.to_path_buf(),
        dumps: dumps.len(),
        policy,
        tensors: reports,
        raw_bytes,
        payload_bytes,
        file_bytes,
        payload_ratio: crate::compress::ratio(raw_bytes, payload_bytes),
        file_ratio: crate::compress::ratio(raw_bytes, file_bytes),
        bits_per_value: if elems == 0 {
            0.0
        } else {
            8.0 * file_bytes as f64 / elems as f64
        },
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// What `kv decompress` did.
#[derive(Debug, Clone, Serialize)]
pub struct KvDecompressReport {
    /// The dump folder written.
    pub output: PathBuf,
    /// Meta files written.
    pub meta_files: usize,
    /// `.bin` files written.
    pub bin_files: usize,
    /// Bytes of the `.bin` files.
    pub bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// A stored name as a relative path of plain components (`run/layer_i/file`), or an error: a
/// hostile name must not write outside the output folder.
fn safe_relative(name: &str) -> Result<PathBuf> {
    let parts: Vec<&str> = name.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty() && *p != "." && *p != ".." && !p.contains(['\\', '\0']) && !p.starts_with('.')
    };
    if parts.len() != 3 || !parts.iter().all(plain) {
        return Err(Error::bad_file(format!(
            "'{name}' is not a dump path <run>/<layer>/<file>"
        )));
    }
    Ok(parts.iter().collect())
}

/// Restore the dump folder stored in `input` into `out_dir` (written beside it under a
/// temporary name and renamed into place when complete; an existing folder is replaced only
/// with `force`). Lossless tensors and every meta file come back bit-exact, lossy ones decoded
/// to the dump's dtype.
pub fn decompress(
    input: &Path,
    out_dir: &Path,
    force: bool,
    cx: &Context<'_>,
) -> Result<KvDecompressReport> {
    cx.install(|| decompress_on_threads(input, out_dir, force, cx))
}

fn decompress_on_threads(
    input: &Path,
    out_dir: &Path,
    force: bool,
    cx: &Context<'_>,
) -> Result<KvDecompressReport> {
    let start = std::time::Instant::now();
    let a = crate::archive::Archive::open(input)?;
    if a.file.meta(POLICY_KEY).is_none() {
        return Err(Error::input(
            "not a KV archive (no kv.policy metadata): use `tenpak decompress` for models",
        )
        .with_file(input));
    }
    if out_dir.exists() && !force {
        return Err(Error::config(format!(
            "{} already exists (pass --force to replace it)",
            out_dir.display()
        )));
    }
    let name = out_dir
        .file_name()
        .ok_or_else(|| Error::config("the output needs a folder name").with_file(out_dir))?;
    let parent = out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io("create", e).with_file(parent))?;
    let tmp = parent.join(format!(
        ".{}.{}.partial",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let write = |rel: &Path, bytes: &[u8]| -> Result<()> {
        let p = tmp.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create", e).with_file(d))?;
        }
        std::fs::write(&p, bytes).map_err(|e| Error::io("write", e).with_file(&p))
    };
    let mut meta_files = 0;
    for (k, v) in a.file.metadata() {
        if let Some(rel) = k.strip_prefix(META_PREFIX) {
            write(
                &safe_relative(rel).map_err(|e| e.with_file(input))?,
                v.as_bytes(),
            )?;
            meta_files += 1;
        }
    }
    let tensors = a.file.tensors();
    cx.event(Event::Start {
        total_bytes: tensors.iter().map(|t| t.source_bytes).sum(),
        tensors: tensors.len(),
    });
    let mut bytes = 0u64;
    let mut bin_files = 0usize;
    decode_dump_tensors(&a, input, cx, &mut |name, buf| {
        write(&safe_relative(name)?, &buf)?;
        bytes += buf.len() as u64;
        bin_files += 1;
        Ok(())
    })?;
    cx.event(Event::Finish);
    if out_dir.exists() {
        std::fs::remove_dir_all(out_dir).map_err(|e| Error::io("replace", e).with_file(out_dir))?;
    }
    std::fs::rename(&tmp, out_dir)
        .map_err(|e| Error::io("rename into place", e).with_file(out_dir))?;
    std::mem::forget(guard);
    Ok(KvDecompressReport {
        output: out_dir.to_path_buf(),
        meta_files,
        bin_files,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Decode every dump tensor of a KV archive in index order, its kept-token overlays written
/// over it, and hand each to `f` as (name, bytes in the dump's dtype). Every name is checked
/// before anything is decoded, and every overlay against the shape of the tensor before it.
pub fn decode_dump_tensors(
    a: &crate::archive::Archive,
    input: &Path,
    cx: &Context<'_>,
    f: &mut dyn FnMut(&str, Vec<u8>) -> Result<()>,
) -> Result<()> {
    // The dump tensor being assembled: its name, bytes and shape; its overlays follow it.
    let mut pending: Option<(String, Vec<u8>, Vec<u64>)> = None;
    for (i, t) in a.file.tensors().iter().enumerate() {
        cx.check_cancelled()?;
        cx.event(Event::Tensor { name: &t.name });
        safe_relative(
            t.name
                .split_once(OVERLAY)
                .map_or(t.name.as_str(), |(b, _)| b),
        )
        .map_err(|e| e.with_file(input))?;
        let (dt, data) = a
            .decode_tensor(i)
            .map_err(|e| e.with_tensor(&t.name).with_file(input))?;
        let src = DType::from_name(&t.dtype).unwrap_or(dt);
        let data = if dt != src {
            crate::decompress::convert(dt, data, src)?
        } else {
            data
        };
        if let Some((base, range)) = t.name.split_once(OVERLAY) {
            let bad = || {
                Error::bad_file(format!(
                    "'{}' is not a token range of the tensor before it",
                    t.name
                ))
                .with_file(input)
            };
            let (_, buf, main_dims) = pending.as_mut().filter(|p| p.0 == base).ok_or_else(bad)?;
            // `#t<a>_<b>`: tokens a..b of the tensor before it, with its row shape.
            let (a_tok, b_tok) = range.split_once('_').ok_or_else(bad)?;
            let a_tok: u64 = a_tok.parse().map_err(|_| bad())?;
            let b_tok: u64 = b_tok.parse().map_err(|_| bad())?;
            if main_dims.is_empty()
                || t.dims.len() != main_dims.len()
                || t.dims[1..] != main_dims[1..]
                || b_tok.checked_sub(a_tok) != Some(t.dims[0])
                || b_tok > main_dims[0]
            {
                return Err(bad());
            }
            let row_bytes = t.dims[1..]
                .iter()
                .try_fold(src.size() as u64, |a, &d| a.checked_mul(d))
                .ok_or_else(bad)?;
            let at = usize::try_from(a_tok.checked_mul(row_bytes).ok_or_else(bad)?)
                .map_err(|_| bad())?;
            let end = at.checked_add(data.len()).ok_or_else(bad)?;
            if end > buf.len() {
                return Err(bad());
            }
            buf[at..end].copy_from_slice(&data);
        } else {
            if let Some((name, buf, _)) = pending.take() {
                f(&name, buf)?;
            }
            pending = Some((t.name.clone(), data, t.dims.clone()));
        }
        cx.event(Event::Advance {
            bytes: t.source_bytes,
        });
    }
    if let Some((name, buf, _)) = pending.take() {
        f(&name, buf)?;
    }
    Ok(())
}

/// Removes a half-written folder on any early return.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}
