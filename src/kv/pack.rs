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
    /// Tokens per chunk (LMCache uses 256).
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

struct Done {
    info: TensorInfo,
    encoded: Encoded,
    chunks: Vec<(Vec<u8>, u64, u64)>,
    report: KvTensorReport,
}

fn encode_one(d: &Dump, which: Which, opts: &KvCompressOptions, cx: &Context<'_>) -> Result<Done> {
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
    });
    let row = m.kv_heads * m.head_dim;
    let chunk_elems = opts.chunk_tokens.max(1).saturating_mul(row);
    let mut chunks = Vec::new();
    let encoded = encode_tensor_against(
        &info,
        &data,
        &bytes,
        &pipeline,
        Layout::RowMajor,
        chunk_elems,
        cx,
        &mut |p, s, c| {
            chunks.push((p.to_vec(), s, c));
            Ok(())
        },
    )
    .map_err(|e| e.with_tensor(&name))?;
    let report = KvTensorReport {
        name,
        run: d.run.clone(),
        layer_id: m.layer_id,
        stage: m.stage,
        which,
        seq_len: m.seq_len,
        kv_heads: m.kv_heads,
        head_dim: m.head_dim,
        bytes_per_elem: m.dtype.size(),
        method: opts.policy.spec(m.layer_id, which).to_string(),
        codec: encoded.pipeline.describe(),
        lossless: method.lossless(),
        raw_bytes: bytes.len() as u64,
        payload_bytes: encoded.encoded_bytes,
        metrics: encoded.metrics,
    };
    Ok(Done {
        info,
        encoded,
        chunks,
        report,
    })
}

fn compress_on_threads(
    root: &Path,
    output: &Path,
    opts: &KvCompressOptions,
    cx: &Context<'_>,
) -> Result<KvCompressReport> {
    let start = std::time::Instant::now();
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
            "KV dump folder {} ({} dumps)",
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
        let text = std::fs::read(&d.meta_path)
            .map_err(|e| Error::io("read", e).with_file(&d.meta_path))?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::bad_file("meta JSON is not UTF-8").with_file(&d.meta_path))?;
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
            .map(|(d, which)| encode_one(d, *which, opts, cx).map_err(|e| e.with_file(&d.dir)))
            .collect();
        for r in done {
            let r = r?;
            cx.event(Event::Tensor { name: &r.info.name });
            let mut entries: Vec<ChunkEntry> = Vec::with_capacity(r.chunks.len());
            for (p, s, c) in &r.chunks {
                entries.push(w.write_chunk(p, *s, *c)?);
            }
            w.add_tensor(TensorEntry {
                name: r.info.name.clone(),
                dtype: r.encoded.dtype.name().to_string(),
                dims: r.info.dims.clone(),
                source_bytes: r.info.source_bytes,
                stages: r.encoded.pipeline.stages(),
                metrics: r.encoded.metrics.to_pairs(),
                chunks: entries,
                layout: Layout::RowMajor,
            })?;
            cx.event(Event::Advance {
                bytes: r.info.source_bytes,
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
    for (i, t) in tensors.iter().enumerate() {
        cx.check_cancelled()?;
        cx.event(Event::Tensor { name: &t.name });
        let rel = safe_relative(&t.name).map_err(|e| e.with_file(input))?;
        let (dt, data) = a
            .decode_tensor(i)
            .map_err(|e| e.with_tensor(&t.name).with_file(input))?;
        let src = DType::from_name(&t.dtype).unwrap_or(dt);
        let data = if dt != src {
            crate::decompress::convert(dt, data, src)?
        } else {
            data
        };
        write(&rel, &data)?;
        bytes += data.len() as u64;
        cx.event(Event::Advance {
            bytes: t.source_bytes,
        });
    }
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
        bin_files: tensors.len(),
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
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
