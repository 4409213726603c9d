//! `decompress`: decode a `.tpk` back to safetensors (one file, or shards with an index, or a
//! model folder) or to a GGUF ([`gguf`]).
//!
//! Output files are written to temporary files beside the destination and renamed only when
//! every shard is complete. Tensors are decoded one at a time (chunks in parallel) and streamed
//! to the output, so memory holds one decoded tensor.

use crate::archive::Archive;
use crate::dtype::{self, DType};
use crate::error::{Error, ErrorKind, Result};
use crate::input;
use crate::progress::Event;
use crate::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub mod gguf;

/// What `decompress` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    /// safetensors: one file, shards with an index, or a model folder.
    Safetensors,
    /// A GGUF file.
    Gguf,
}

impl std::str::FromStr for OutFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "safetensors" => Ok(OutFormat::Safetensors),
            "gguf" => Ok(OutFormat::Gguf),
            _ => Err(format!("'{s}' is not one of safetensors, gguf")),
        }
    }
}

/// Element type of the output tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutDType {
    /// The source dtype (FP8 sources decoded lossily come out as F32).
    Source,
    /// f32.
    F32,
    /// f16.
    F16,
    /// bf16.
    BF16,
}

impl std::str::FromStr for OutDType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "source" => Ok(OutDType::Source),
            "f32" => Ok(OutDType::F32),
            "f16" => Ok(OutDType::F16),
            "bf16" => Ok(OutDType::BF16),
            _ => Err(format!("'{s}' is not one of source, f32, f16, bf16")),
        }
    }
}

/// Options of [`decompress`].
#[derive(Debug, Clone)]
pub struct DecompressOptions {
    /// Output element type.
    pub dtype: OutDType,
    /// Tensor filter.
    pub filter: Option<String>,
    /// Shard the output so no file's data exceeds this many bytes.
    pub max_shard_size: Option<u64>,
    /// Overwrite existing outputs.
    pub force: bool,
    /// The base model delta tensors were made against.
    pub base: Option<PathBuf>,
    /// The output format; `None`: by the output's name (`.gguf`: GGUF, else safetensors).
    pub format: Option<OutFormat>,
}

impl Default for DecompressOptions {
    fn default() -> Self {
        DecompressOptions {
            dtype: OutDType::Source,
            filter: None,
            max_shard_size: None,
            force: false,
            base: None,
            format: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct DecompressReport {
    /// Files written (shards, then the index if any).
    pub files: Vec<PathBuf>,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of tensor data written.
    pub data_bytes: u64,
    /// Tensors left out because this tenpak cannot decode them, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Seconds spent waiting for the files to reach the disk (fsync), apart from the decoding.
    pub sync_seconds: f64,
    /// GGUF output: each tensor's name and the GGML type written (`Q4_1`, `F32`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gguf_types: Vec<(String, String)>,
    /// What the user should know about the output (GGUF: metadata not kept, tensors written
    /// as floats because their values were off the block type's grid).
    pub warnings: Vec<String>,
}

/// The format `output` is written in, with `opts.format`; refuses a name that says another.
pub fn output_format(output: &Path, format: Option<OutFormat>) -> Result<OutFormat> {
    let named_gguf = output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let folder = is_folder(output);
    match format {
        Some(OutFormat::Gguf) if folder => Err(Error::config(
            "a folder is written as safetensors: name a .gguf file for GGUF output",
        )
        .with_file(output)),
        Some(OutFormat::Gguf) => {
            crate::compress::check_output_name(output, "gguf", "GGUF")?;
            Ok(OutFormat::Gguf)
        }
        None if named_gguf && !folder => Ok(OutFormat::Gguf),
        _ => {
            if !folder {
                crate::compress::check_output_name(output, "safetensors", "safetensors")?;
            }
            Ok(OutFormat::Safetensors)
        }
    }
}

/// The dtype tensor `src` is written as.
pub fn output_dtype(src: DType, decoded: DType, want: OutDType) -> DType {
    if !src.is_float() {
        return src;
    }
    match want {
        OutDType::Source => match src {
            DType::F8E4M3 | DType::F8E5M2 if decoded != src => DType::F32,
            s => s,
        },
        OutDType::F32 => DType::F32,
        OutDType::F16 => DType::F16,
        OutDType::BF16 => DType::BF16,
    }
}

/// Convert decoded bytes to the output dtype.
pub fn convert(decoded: DType, bytes: Vec<u8>, out: DType) -> Result<Vec<u8>> {
    if decoded == out {
        return Ok(bytes);
    }
    let mut f = Vec::new();
    dtype::to_f32(decoded, &bytes, &mut f);
    let mut b = Vec::new();
    dtype::from_f32(out, &f, &mut b)?;
    Ok(b)
}

struct Planned {
    index: usize,
    dtype: DType,
    bytes: u64,
}

/// Create the folder an output goes into, if it is missing.
pub(crate) fn create_parent(output: &Path) -> Result<()> {
    match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("create the output folder", e).with_file(dir)),
        _ => Ok(()),
    }
}

/// A sharded model's index file name.
const INDEX: &str = "model.safetensors.index.json";

/// Whether `output` names a folder: it ends with a separator or is one already.
pub fn is_folder(output: &Path) -> bool {
    let name = output.as_os_str().to_string_lossy();
    output.is_dir() || name.ends_with('/') || name.ends_with(std::path::MAIN_SEPARATOR)
}

/// The small files a `.tpk` kept of its model folder (`hf.NAME`, `hf.base64.NAME`), as paths
/// under `dir` and their bytes; the index is rewritten, not copied. A name that is not a plain
/// file name is refused: a hostile file must not write outside the folder.
pub(crate) fn kept_files(meta: &[(String, String)], dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    use base64::Engine;
    let mut out = Vec::new();
    for (k, v) in meta {
        let (name, bytes) = if let Some(n) = k.strip_prefix(crate::input::KEPT_BASE64) {
            let b = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| {
                    Error::bad_params(format!(
                        "metadata {}: not base64: {e}",
                        crate::error::clip(k)
                    ))
                })?;
            (n, b)
        } else if let Some(n) = k.strip_prefix("hf.") {
            (n, v.as_bytes().to_vec())
        } else {
            continue;
        };
        if name == INDEX {
            continue;
        }
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\', '\0'])
            && Path::new(name).file_name() == Some(std::ffi::OsStr::new(name));
        if !plain {
            return Err(Error::bad_params(format!(
                "metadata {} names no plain file",
                crate::error::clip(k)
            )));
        }
        out.push((dir.join(name), bytes));
    }
    Ok(out)
}

/// Write `bytes` to `path` through a temporary file; the seconds its sync took.
fn write_file(path: &Path, bytes: &[u8], force: bool) -> Result<std::time::Duration> {
    let mut tmp = crate::atomic::create(path)?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io("write", e).with_file(path))?;
    crate::atomic::persist(tmp, force)
}

/// Decompress `input` (.tpk) to `output`: a `.safetensors` file (shards beside it with
/// `max_shard_size`), or a folder (`DIR/`: the model's safetensors, sharded as its source was,
/// and the small files kept from its folder).
pub fn decompress(
    input: &Path,
    output: &Path,
    opts: &DecompressOptions,
    cx: &Context<'_>,
) -> Result<DecompressReport> {
    cx.install(|| decompress_on_threads(input, output, opts, cx))
}

fn decompress_on_threads(
    input: &Path,
    output: &Path,
    opts: &DecompressOptions,
    cx: &Context<'_>,
) -> Result<DecompressReport> {
    let format = output_format(output, opts.format)?;
    if format == OutFormat::Gguf && opts.max_shard_size.is_some() {
        return Err(Error::config(
            "--max-shard-size splits safetensors output; a GGUF is written as one file",
        ));
    }
    let mut ar = Archive::open(input)?;
    if let Some(b) = &opts.base {
        ar = ar.with_base(b)?;
    }
    let tensors = ar.file.tensors();
    let mut skipped = Vec::new();
    let mut plan = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        if opts
            .filter
            .as_deref()
            .is_some_and(|q| !input::name_matches(&t.name, q))
        {
            continue;
        }
        // A delta without its base fails before anything is written.
        if ar.base.is_none() && ar.delta(i).is_some() {
            return Err(Error::input(format!(
                "tensor '{}' is stored as a delta against a base model: pass --base BASE",
                t.name
            ))
            .with_file(input));
        }
        match ar.pipeline(i) {
            Ok((src, p)) => {
                let dt = output_dtype(src, p.tensor_codec().decoded_dtype(src), opts.dtype);
                let n = t.numel().unwrap_or(0);
                plan.push(Planned {
                    index: i,
                    dtype: dt,
                    bytes: n * dt.size() as u64,
                });
            }
            Err(e) if e.kind == ErrorKind::Unsupported => skipped.push((t.name.clone(), e.message)),
            Err(e) => return Err(e.with_file(input)),
        }
    }
    if plan.is_empty() {
        return Err(Error::input("no tensor to write (check --filter)").with_file(input));
    }
    if format == OutFormat::Gguf {
        return gguf::write(&ar, output, plan, skipped, opts, cx).map_err(|e| e.with_file(input));
    }
    let folder = is_folder(output);
    let stored_index = ar.file.meta(&format!("hf.{INDEX}"));
    let (groups, index_path) = match (folder, stored_index, opts.max_shard_size) {
        // A folder from a sharded Hugging Face model: its own shards again.
        (true, Some(text), None) => {
            let (_, map) =
                crate::input::safetensors::parse_index(text).map_err(|e| e.with_file(input))?;
            let mut by_file: BTreeMap<String, Vec<&Planned>> = BTreeMap::new();
            for p in &plan {
                let file = map
                    .get(&tensors[p.index].name)
                    .cloned()
                    .unwrap_or_else(|| "model-extra.safetensors".into());
                by_file.entry(file).or_default().push(p);
            }
            let groups: Vec<(PathBuf, Vec<&Planned>)> = by_file
                .into_iter()
                .map(|(f, ps)| (output.join(f), ps))
                .collect();
            (groups, Some(output.join(INDEX)))
        }
        _ => {
            // Greedy in name order; a tensor larger than the limit gets a shard of its own.
            let mut shards: Vec<Vec<&Planned>> = vec![Vec::new()];
            let mut size = 0u64;
            for p in &plan {
                if let Some(max) = opts.max_shard_size {
                    if size > 0 && size + p.bytes > max {
                        shards.push(Vec::new());
                        size = 0;
                    }
                }
                size += p.bytes;
                shards.last_mut().unwrap().push(p);
            }
            let (dir, stem, single) = if folder {
                (
                    output.to_path_buf(),
                    "model".to_string(),
                    output.join("model.safetensors"),
                )
            } else {
                let dir = match output.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let stem = output
                    .file_name()
                    .map(|n| {
                        n.to_string_lossy()
                            .trim_end_matches(".safetensors")
                            .to_string()
                    })
                    .unwrap_or_else(|| "model".into());
                (dir, stem, output.to_path_buf())
            };
            let n = shards.len();
            if n == 1 {
                (vec![(single, shards.remove(0))], None)
            } else {
                let groups = shards
                    .into_iter()
                    .enumerate()
                    .map(|(k, ps)| {
                        (
                            dir.join(format!("{stem}-{:05}-of-{n:05}.safetensors", k + 1)),
                            ps,
                        )
                    })
                    .collect();
                (
                    groups,
                    Some(dir.join(format!("{stem}.safetensors.index.json"))),
                )
            }
        }
    };
    // A folder also gets the small files kept at compress time (config, tokenizer, ...).
    let kept: Vec<(PathBuf, Vec<u8>)> = if folder {
        kept_files(ar.file.metadata(), output).map_err(|e| e.with_file(input))?
    } else {
        Vec::new()
    };
    let names: Vec<PathBuf> = groups.iter().map(|g| g.0.clone()).collect();
    if folder {
        std::fs::create_dir_all(output)
            .map_err(|e| Error::io("create the output folder", e).with_file(output))?;
    } else {
        create_parent(output)?;
    }
    if !opts.force {
        let all = names
            .iter()
            .chain(&index_path)
            .chain(kept.iter().map(|k| &k.0));
        for p in all {
            if p.exists() {
                return Err(Error::config(format!(
                    "{} already exists (pass --force to overwrite)",
                    p.display()
                )));
            }
        }
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    metadata.insert(
        "tenpak.source".to_string(),
        input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let total: u64 = plan.iter().map(|p| p.bytes).sum();
    cx.event(Event::Start {
        total_bytes: total,
        tensors: plan.len(),
    });
    let mut temps = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (name, shard) in &groups {
        let tmp = write_shard(&ar, shard, name, &metadata, cx).map_err(|e| e.with_file(input))?;
        for p in shard {
            weight_map.insert(
                tensors[p.index].name.clone(),
                name.file_name().unwrap().to_string_lossy().into_owned(),
            );
        }
        temps.push(tmp);
    }
    let mut files = Vec::new();
    let mut sync = std::time::Duration::ZERO;
    for (tmp, name) in temps.into_iter().zip(&names) {
        sync += crate::atomic::persist(tmp, opts.force)?;
        files.push(name.clone());
    }
    if let Some(index_path) = index_path {
        // The source's index keeps its other metadata; the sizes are the written files'.
        let mut index: serde_json::Value = stored_index
            .filter(|_| folder && opts.max_shard_size.is_none())
            .and_then(|t| serde_json::from_str(t).ok())
            .filter(|v: &serde_json::Value| v.is_object())
            .unwrap_or_else(|| serde_json::json!({}));
        if !index["metadata"].is_object() {
            index["metadata"] = serde_json::json!({});
        }
        index["metadata"]["total_size"] = total.into();
        index["weight_map"] = serde_json::to_value(&weight_map).expect("plain data");
        let text = serde_json::to_string_pretty(&index).expect("plain data");
        sync += write_file(&index_path, text.as_bytes(), opts.force)?;
        files.push(index_path);
    }
    for (path, bytes) in &kept {
        sync += write_file(path, bytes, opts.force)?;
        files.push(path.clone());
    }
    cx.event(Event::Finish);
    Ok(DecompressReport {
        files,
        tensors: plan.len(),
        data_bytes: total,
        skipped,
        sync_seconds: sync.as_secs_f64(),
        gguf_types: Vec::new(),
        warnings: Vec::new(),
    })
}

fn write_shard(
    ar: &Archive,
    shard: &[&Planned],
    dest: &Path,
    metadata: &BTreeMap<String, String>,
    cx: &Context<'_>,
) -> Result<crate::atomic::AtomicFile> {
    let tensors = ar.file.tensors();
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).unwrap(),
    );
    let mut offset = 0u64;
    for p in shard {
        let t = &tensors[p.index];
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": p.dtype.name(),
                "shape": t.dims,
                "data_offsets": [offset, offset + p.bytes],
            }),
        );
        offset += p.bytes;
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    // safetensors readers expect the data to start 8-byte aligned: pad the header with spaces.
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut tmp = crate::atomic::create(dest)?;
    let io = |e| Error::io("write safetensors", e);
    tmp.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
    tmp.write_all(&h).map_err(io)?;
    let mut at = 8 + h.len() as u64;
    for p in shard {
        if cx.cancelled() {
            return Err(crate::progress::interrupted());
        }
        cx.event(Event::Tensor {
            name: &tensors[p.index].name,
        });
        let written = write_plain(ar, p, tmp.file(), at)?;
        debug_assert_eq!(written, p.bytes);
        at += p.bytes;
        cx.event(Event::Advance { bytes: p.bytes });
    }
    Ok(tmp)
}

/// Decode tensor `p` into `file` at byte `at`, converted to its output dtype; the bytes written.
/// It is decoded a batch of chunks at a time and each piece written in place: memory holds one
/// batch, not the tensor.
fn write_plain(ar: &Archive, p: &Planned, file: &std::fs::File, at: u64) -> Result<u64> {
    let t = &ar.file.tensors()[p.index];
    let osize = p.dtype.size() as u64;
    let decoded = ar
        .decoded_dtype(p.index)
        .map_err(|e| e.with_tensor(&t.name))?;
    let mut written = 0u64;
    ar.decode_pieces(p.index, &mut |first, bytes| {
        let out = if decoded == p.dtype {
            std::borrow::Cow::Borrowed(bytes)
        } else {
            std::borrow::Cow::Owned(
                convert(decoded, bytes.to_vec(), p.dtype).map_err(|e| e.with_tensor(&t.name))?,
            )
        };
        written += out.len() as u64;
        write_at(file, &out, at + first * osize).map_err(|e| Error::io("write", e))
    })?;
    Ok(written)
}

/// Write `buf` at `offset` of `file`, leaving its position alone where the platform allows.
fn write_at(file: &std::fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.write_all_at(buf, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept files are written only under the folder, whatever a hostile file names them.
    #[test]
    fn kept_file_names_stay_in_the_folder() {
        let dir = Path::new("out");
        let ok = [("hf.config.json".to_string(), "{}".to_string())];
        assert_eq!(kept_files(&ok, dir).unwrap()[0].0, dir.join("config.json"));
        for bad in [
            "hf.../x",
            "hf./etc/passwd",
            "hf.a/b",
            "hf...",
            "hf.",
            "hf.base64.a\\b",
            "hf..hidden",
        ] {
            let m = [(bad.to_string(), "AAAA".to_string())];
            assert!(kept_files(&m, dir).is_err(), "{bad}");
        }
        let m = [("hf.base64.t.model".to_string(), "not base64!".to_string())];
        assert!(kept_files(&m, dir).is_err());
        // The index is rewritten, not copied; other keys are not files.
        let m = [
            (format!("hf.{INDEX}"), "{}".to_string()),
            ("gguf.general.name".to_string(), "\"x\"".to_string()),
        ];
        assert!(kept_files(&m, dir).unwrap().is_empty());
    }
}
