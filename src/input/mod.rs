//! Tensor sources: the model files tenpak reads. They yield elements plus provenance and know
//! nothing about codecs.
//!
//! - safetensors: one file, a model folder with `model.safetensors`, or a sharded model with
//!   `model.safetensors.index.json` (every shard). Memory-mapped: a tensor's bytes are borrowed
//!   from the map, never the whole model in memory.
//! - FP8 weights with a `<name>_scale_inv` tensor (one scale per 128x128 block) are dequantized
//!   to f32 on load and the scale tensor is consumed.
//! - GGUF v2/v3: F32/F16/BF16 kept, quantized types dequantized to f32 as llama.cpp defines them.

mod fp8;
pub mod gguf;
pub(crate) mod safetensors;

use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};
use std::borrow::Cow;
use std::path::Path;

/// What a source knows about one tensor.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Name as in the file.
    pub name: String,
    /// Shape (row-major, outermost first).
    pub dims: Vec<u64>,
    /// Element type of the bytes [`TensorSource::data`] returns.
    pub dtype: DType,
    /// The type in the file (`F32`, `F8_E4M3`, `Q4_1`, ...); differs from `dtype` when dequantized.
    pub source_dtype: String,
    /// Bytes the tensor takes in the file (scale tensors included for FP8).
    pub source_bytes: u64,
}

impl TensorInfo {
    /// Element count. Readers only produce shapes whose count fits in u64 (checked when the
    /// file is opened), so the saturation never shows.
    pub fn numel(&self) -> u64 {
        tpk_format::checked_numel(&self.dims).unwrap_or(u64::MAX)
    }
}

/// A model's tensors, sorted by name.
pub trait TensorSource: Send + Sync {
    /// One line describing the input (format and file names).
    fn describe(&self) -> String;
    /// Tensors in name order.
    fn tensors(&self) -> &[TensorInfo];
    /// Little-endian elements of tensor `i` (`tensors()[i].dtype`), borrowed where possible.
    fn data(&self, i: usize) -> Result<Cow<'_, [u8]>>;
    /// Elements `first..first + count` of tensor `i`, as [`TensorSource::data`] gives them,
    /// into `out` (replaced). Readers of mapped files let go of the pages they read, so a tensor
    /// read piece by piece costs memory for one piece, not the tensor.
    fn read(&self, i: usize, first: u64, count: u64, out: &mut Vec<u8>) -> Result<()> {
        let d = self.data(i)?;
        out.clear();
        out.extend_from_slice(element_range(&d, self.tensors()[i].dtype, first, count)?);
        Ok(())
    }
    /// Let go of the file pages tensor `i`'s bytes occupy in this process (they stay in the
    /// page cache): called when a tensor read whole with [`TensorSource::data`] is done.
    fn release(&self, _i: usize) {}
    /// What a `.tpk` must keep to stand in for this model (architecture, hyperparameters,
    /// tokenizer), as `.tpk` metadata keys and values: `gguf.<key>` (the GGUF value as JSON) or
    /// `hf.config.json` / `hf.tokenizer.json` (the files beside a safetensors model).
    fn model_metadata(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Files of a model folder no bigger than this are kept in the `.tpk` (tokenizer.json files run
/// to ~10 MB).
pub const KEPT_FILE_MAX: u64 = 16 << 20;
/// At most this much of a folder's small files is kept in all.
pub const KEPT_TOTAL_MAX: u64 = 48 << 20;

/// Metadata key of a kept file: `hf.NAME` for UTF-8 text, `hf.base64.NAME` otherwise.
pub const KEPT_BASE64: &str = "hf.base64.";

/// The small files of a model folder as `.tpk` metadata (`hf.NAME` = the text, or
/// `hf.base64.NAME` = the bytes in base64): every plain file up to [`KEPT_FILE_MAX`] that is not
/// weights and not hidden, in name order, up to [`KEPT_TOTAL_MAX`] in all. Links are followed
/// (a Hugging Face cache snapshot is made of links into its blobs).
pub fn folder_files(dir: &Path) -> Vec<(String, String)> {
    use base64::Engine;
    const WEIGHTS: [&str; 12] = [
        "safetensors",
        "gguf",
        "bin",
        "pt",
        "pth",
        "ckpt",
        "h5",
        "msgpack",
        "onnx",
        "tpk",
        "npz",
        "npy",
    ];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<(String, std::path::PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(n, p)| {
            let ext = Path::new(n)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("");
            !n.starts_with('.')
                && !WEIGHTS.contains(&ext.to_ascii_lowercase().as_str())
                && std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= KEPT_FILE_MAX)
        })
        .collect();
    names.sort();
    let mut total = 0u64;
    let mut out = Vec::new();
    for (name, path) in names {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        total += bytes.len() as u64;
        if total > KEPT_TOTAL_MAX {
            break;
        }
        match String::from_utf8(bytes) {
            Ok(text) => out.push((format!("hf.{name}"), text)),
            Err(e) => out.push((
                format!("{KEPT_BASE64}{name}"),
                base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
            )),
        }
    }
    out
}

/// The snapshot a Hugging Face cache folder (`models--org--name`, holding `refs/` and
/// `snapshots/`) stands for: the one `refs/main` names, else the newest; `None` for any other
/// folder.
pub fn hf_cache_snapshot(dir: &Path) -> Result<Option<std::path::PathBuf>> {
    let snapshots = dir.join("snapshots");
    if !snapshots.is_dir() {
        return Ok(None);
    }
    if let Ok(main) = std::fs::read_to_string(dir.join("refs").join("main")) {
        let named = snapshots.join(main.trim());
        // A ref names a commit folder: a plain name, never a path out of the cache.
        if !main.trim().is_empty() && !main.trim().contains(['/', '\\']) && named.is_dir() {
            return Ok(Some(named));
        }
    }
    let mut newest: Option<(std::time::SystemTime, std::path::PathBuf)> = None;
    let entries = std::fs::read_dir(&snapshots)
        .map_err(|e| Error::io("read the cache's snapshots folder", e).with_file(&snapshots))?;
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        let Ok(m) = std::fs::metadata(&p) else {
            continue;
        };
        if !m.is_dir() {
            continue;
        }
        let t = m.modified().unwrap_or(std::time::UNIX_EPOCH);
        // Newest first; the name breaks ties so the choice does not depend on listing order.
        if newest.as_ref().is_none_or(|(bt, bp)| (t, &p) > (*bt, bp)) {
            newest = Some((t, p));
        }
    }
    match newest {
        Some((_, p)) => Ok(Some(p)),
        None => {
            Err(Error::input("a Hugging Face cache folder with no snapshot in it").with_file(dir))
        }
    }
}

/// Open a model file or folder, choosing the reader from the name and the magic bytes. A
/// Hugging Face cache folder (`models--org--name`) opens its current snapshot.
pub fn open(path: &Path) -> Result<Box<dyn TensorSource>> {
    if path.is_dir() {
        if let Some(snapshot) = hf_cache_snapshot(path)? {
            return open(&snapshot);
        }
        let index = path.join("model.safetensors.index.json");
        if index.is_file() {
            return Ok(Box::new(
                safetensors::SafetensorsSource::open_sharded(&index)?.in_model_dir(path),
            ));
        }
        let single = path.join("model.safetensors");
        if single.is_file() {
            return Ok(Box::new(
                safetensors::SafetensorsSource::open_files(&[single])?.in_model_dir(path),
            ));
        }
        let mut found: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| Error::io(format!("read folder {}", path.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("safetensors" | "gguf")
                    )
            })
            .collect();
        found.sort();
        return match found.as_slice() {
            [one] => open(one),
            [] => Err(Error::input(
                "no model.safetensors.index.json, model.safetensors, *.safetensors or *.gguf in this folder",
            )
            .with_file(path)),
            _ => Err(Error::input(format!(
                "{} model files and no model.safetensors.index.json: name one file",
                found.len()
            ))
            .with_file(path)),
        };
    }
    if crate::set::is_index(path) {
        return Err(Error::input(
            "the index of a multi-file .tpk set, not a model: decompress it first (tenpak decompress SET.tpk.index.json -o model.safetensors)",
        )
        .with_file(path));
    }
    if path.to_string_lossy().ends_with(".index.json") {
        let src = safetensors::SafetensorsSource::open_sharded(path)?;
        return Ok(Box::new(match path.parent() {
            Some(d) => src.in_model_dir(if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }),
            None => src,
        }));
    }
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", e).with_file(path))?;
        let _ = f.read(&mut magic);
    }
    if &magic == b"GGUF" {
        return gguf::GgufSource::open(path)
            .map(|g| Box::new(g) as Box<dyn TensorSource>)
            .map_err(|mut e| {
                // A GGUF by its magic: its faults are a bad GGUF's, whatever the reader's wording.
                if e.kind != ErrorKind::Io && !e.message.starts_with("bad GGUF") {
                    e.message = format!("bad GGUF file: {}", e.message);
                }
                e
            });
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        // Named GGUF but without its magic: say so, rather than fail as a safetensors file.
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        return Err(Error::input(if len < 4 {
            format!("not a GGUF file: {len} bytes, too short for the magic \"GGUF\"")
        } else {
            format!("not a GGUF file: it starts with {magic:02x?}, not the magic \"GGUF\"")
        })
        .with_file(path));
    }
    Ok(Box::new(safetensors::SafetensorsSource::open_files(&[
        path.to_path_buf(),
    ])?))
}

/// Bytes of a model on disk: the file, or every model file of a folder (safetensors shards,
/// GGUF; config and tokenizer files not counted).
pub fn model_file_bytes(path: &Path) -> u64 {
    if !path.is_dir() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.path()
                        .extension()
                        .is_some_and(|x| x == "safetensors" || x == "gguf")
                })
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

/// The tensor filter: a query containing a dot is a module-prefix match (`model.layers.0`
/// matches `model.layers.0.mlp.w` but not `model.layers.01.w`); otherwise a substring match.
pub fn name_matches(name: &str, query: &str) -> bool {
    if query.contains('.') {
        name == query
            || (name.starts_with(query)
                && (query.ends_with('.') || name[query.len()..].starts_with('.')))
    } else {
        name.contains(query)
    }
}

/// Indices of the tensors selected by `filter` and `limit` (the first N matches in name order).
pub fn select(infos: &[TensorInfo], filter: Option<&str>, limit: Option<usize>) -> Vec<usize> {
    infos
        .iter()
        .enumerate()
        .filter(|(_, t)| filter.is_none_or(|q| name_matches(&t.name, q)))
        .map(|(i, _)| i)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

/// Bytes of elements `first..first + count` of `data` (elements of `dtype`).
pub(crate) fn element_range(data: &[u8], dtype: DType, first: u64, count: u64) -> Result<&[u8]> {
    let es = dtype.size() as u64;
    first
        .checked_add(count)
        .and_then(|end| end.checked_mul(es))
        .and_then(|end| data.get((first * es) as usize..end as usize))
        .ok_or_else(|| {
            Error::internal(format!(
                "elements {first}..+{count} read past the tensor's {} bytes",
                data.len()
            ))
        })
}

/// Drop `range` of a read-only map from this process's memory; the pages stay in the page
/// cache and come back on the next touch. Reading a large tensor through a map otherwise keeps
/// every page it touched resident (and counted) until the map goes.
pub(crate) fn release_pages(map: &memmap2::Mmap, range: std::ops::Range<usize>) {
    if range.is_empty() || range.end > map.len() {
        return;
    }
    #[cfg(unix)]
    // SAFETY: the map is shared and read-only (Mmap::map): MADV_DONTNEED only unmaps the pages
    // from this process, a later read faults the same file bytes in again, so slices borrowed
    // from the map keep their contents. A failure only means the pages stay resident.
    unsafe {
        let _ = map.unchecked_advise_range(
            memmap2::UncheckedAdvice::DontNeed,
            range.start,
            range.len(),
        );
    }
}

/// Memory-map a file read-only.
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("open", e).with_file(path))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("stat", e).with_file(path))?
        .len();
    if len == 0 {
        return Err(Error::input("file is empty").with_file(path));
    }
    // SAFETY: read-only map; another process truncating the file under us is the accepted risk
    // of every mmap-based model reader.
    unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io("memory-map", e).with_file(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_rules() {
        assert!(name_matches("model.layers.0.mlp.w", "model.layers.0"));
        assert!(!name_matches("model.layers.01.mlp.w", "model.layers.0"));
        assert!(name_matches("model.layers.0", "model.layers.0"));
        assert!(name_matches("model.layers.01.w", "model.layers."));
        assert!(name_matches("encoder.attention.q", "attention"));
        assert!(!name_matches("encoder.ffn", "attention"));
    }
}
