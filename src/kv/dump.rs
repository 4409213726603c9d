//! Reading KV-cache dump folders (formats-spec/kv-dump.md; the reference MNN `kv_dump` layout):
//! `<root>/<run_id>/layer_<i>/{k,v}_t<start>_<end>.bin` with `meta_t<start>_<end>.json`.
//!
//! Every dump is hostile input: the meta JSON is size-capped before it is read, its numbers are
//! checked against each other with checked arithmetic, the `.bin` file names must be plain names
//! in the same folder, and each `.bin` file's length must be exactly `seq_len * kv_heads *
//! head_dim * bytes_per_elem` before anything is allocated for it.

use crate::error::{Error, ErrorKind, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Largest meta JSON accepted (the reference's are a few hundred bytes).
const MAX_META_BYTES: u64 = 64 << 10;

/// Element type of a dump's `.bin` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvDType {
    /// IEEE single precision.
    Fp32,
    /// IEEE half precision.
    Fp16,
    /// bfloat16 (a tenpak extension of the reference layout).
    Bf16,
}

impl KvDType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            KvDType::Fp32 => 4,
            KvDType::Fp16 | KvDType::Bf16 => 2,
        }
    }

    /// The library's dtype of the same elements.
    pub fn dtype(self) -> crate::dtype::DType {
        match self {
            KvDType::Fp32 => crate::dtype::DType::F32,
            KvDType::Fp16 => crate::dtype::DType::F16,
            KvDType::Bf16 => crate::dtype::DType::BF16,
        }
    }
}

/// Prefill (several tokens added at once) or decode (one token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// `add > 1`.
    Prefill,
    /// `add == 1`.
    Decode,
}

/// Which dumps an analysis takes (the reference's shared filters); the default keeps all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpFilter {
    /// `None`: both stages.
    pub stage: Option<Stage>,
    /// Smallest `seq_len` kept (0: no bound).
    pub min_seq_len: u64,
    /// Largest `seq_len` kept (0: no bound).
    pub max_seq_len: u64,
}

impl DumpFilter {
    /// Whether a dump passes.
    pub fn keeps(&self, m: &DumpMeta) -> bool {
        self.stage.is_none_or(|s| s == m.stage)
            && (self.min_seq_len == 0 || m.seq_len >= self.min_seq_len)
            && (self.max_seq_len == 0 || m.seq_len <= self.max_seq_len)
    }
}

/// One dump's meta JSON, checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DumpMeta {
    /// Layer, 0-based.
    pub layer_id: u32,
    /// Position of the first token.
    pub seq_start: u64,
    /// Tokens in this dump.
    pub seq_len: u64,
    /// KV heads.
    pub kv_heads: u64,
    /// Dimensions per head.
    pub head_dim: u64,
    /// Element type.
    pub dtype: KvDType,
    /// Prefill or decode.
    pub stage: Stage,
    /// The run it belongs to.
    pub run_id: String,
    /// The key file's name, in the meta file's folder.
    pub k_file: String,
    /// The value file's name, in the meta file's folder.
    pub v_file: String,
}

/// The meta JSON as written; fields the reference writes and tenpak does not need are accepted
/// and kept in the file's bytes, not here.
#[derive(Deserialize)]
struct RawMeta {
    layer_id: u32,
    seq_start: u64,
    seq_len: u64,
    seq_end_exclusive: Option<u64>,
    kv_heads: u64,
    head_dim: u64,
    bytes_per_elem: u64,
    dtype: String,
    add: Option<u64>,
    stage: Option<String>,
    run_id: Option<String>,
    k_file: String,
    v_file: String,
    layout: Option<String>,
}

impl DumpMeta {
    /// Parse and check meta JSON bytes.
    pub fn parse(bytes: &[u8]) -> Result<DumpMeta> {
        let bad = |m: String| Error::bad_file(format!("KV dump meta: {m}"));
        let r: RawMeta = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if let Some(l) = r.layout.as_deref().filter(|l| *l != "linear") {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("KV dump meta: layout '{l}' is not read (only the linear [seq_len, kv_heads, head_dim] layout)"),
            ));
        }
        let dtype = match r.dtype.as_str() {
            "fp32" | "float32" => KvDType::Fp32,
            "fp16" | "float16" => KvDType::Fp16,
            "bf16" | "bfloat16" => KvDType::Bf16,
            d => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("KV dump meta: dtype '{d}' (fp32, fp16 or bf16)"),
                ))
            }
        };
        if r.bytes_per_elem != dtype.size() {
            return Err(bad(format!(
                "bytes_per_elem {} does not match dtype {}",
                r.bytes_per_elem, r.dtype
            )));
        }
        if r.seq_end_exclusive
            .is_some_and(|e| Some(e) != r.seq_start.checked_add(r.seq_len))
        {
            return Err(bad(format!(
                "seq_end_exclusive {:?} is not seq_start {} + seq_len {}",
                r.seq_end_exclusive, r.seq_start, r.seq_len
            )));
        }
        if r.add.is_some_and(|a| a != r.seq_len) {
            return Err(bad(format!(
                "add {:?} differs from seq_len {}",
                r.add, r.seq_len
            )));
        }
        // The reference: "decode" iff one token was added.
        let stage = if r.seq_len == 1 {
            Stage::Decode
        } else {
            Stage::Prefill
        };
        match r.stage.as_deref() {
            None | Some("prefill") | Some("decode") => {}
            Some(s) => return Err(bad(format!("stage '{s}' (prefill or decode)"))),
        }
        for f in [&r.k_file, &r.v_file] {
            if f.is_empty() || f.contains(['/', '\\']) || f == "." || f == ".." {
                return Err(bad(format!(
                    "'{f}' is not a file name in the dump's folder"
                )));
            }
        }
        if r.kv_heads == 0 || r.head_dim == 0 {
            return Err(bad("kv_heads and head_dim must be positive".into()));
        }
        Ok(DumpMeta {
            layer_id: r.layer_id,
            seq_start: r.seq_start,
            seq_len: r.seq_len,
            kv_heads: r.kv_heads,
            head_dim: r.head_dim,
            dtype,
            stage,
            run_id: r.run_id.unwrap_or_default(),
            k_file: r.k_file,
            v_file: r.v_file,
        })
    }

    /// Elements of the key (or value) tensor, `[seq_len, kv_heads, head_dim]`.
    pub fn numel(&self) -> Option<u64> {
        self.seq_len
            .checked_mul(self.kv_heads)?
            .checked_mul(self.head_dim)
    }

    /// Bytes of each `.bin` file.
    pub fn bin_bytes(&self) -> Option<u64> {
        self.numel()?.checked_mul(self.dtype.size())
    }
}

/// One dump: where it is and what its meta says.
#[derive(Debug, Clone)]
pub struct Dump {
    /// The run folder's name.
    pub run: String,
    /// The layer folder (relative, `layer_<i>`, for a dump inside a safetensors file).
    pub dir: PathBuf,
    /// The meta file.
    pub meta_path: PathBuf,
    /// Its parsed contents.
    pub meta: DumpMeta,
    /// Where the tensors are when not in `.bin` files.
    pub slices: Option<std::sync::Arc<Slices>>,
}

/// A dump inside a safetensors file (LMCache's `[layers, 2, tokens, kv_heads, head_dim]`): the
/// mapped file, the byte ranges of K and V, and the meta JSON tenpak wrote for it.
#[derive(Debug)]
pub struct Slices {
    file: std::sync::Arc<memmap2::Mmap>,
    path: PathBuf,
    k: std::ops::Range<usize>,
    v: std::ops::Range<usize>,
    meta_json: String,
}

impl Dump {
    /// The key tensor's bytes.
    pub fn read_k(&self) -> Result<Vec<u8>> {
        match &self.slices {
            Some(s) => Ok(s.file[s.k.clone()].to_vec()),
            None => self.read_bin(&self.meta.k_file),
        }
    }

    /// The value tensor's bytes.
    pub fn read_v(&self) -> Result<Vec<u8>> {
        match &self.slices {
            Some(s) => Ok(s.file[s.v.clone()].to_vec()),
            None => self.read_bin(&self.meta.v_file),
        }
    }

    /// The meta JSON's text, as in the file (or as tenpak wrote it for a safetensors dump).
    pub fn meta_text(&self) -> Result<String> {
        if let Some(s) = &self.slices {
            return Ok(s.meta_json.clone());
        }
        let b = std::fs::read(&self.meta_path)
            .map_err(|e| Error::io("read", e).with_file(&self.meta_path))?;
        String::from_utf8(b)
            .map_err(|_| Error::bad_file("meta JSON is not UTF-8").with_file(&self.meta_path))
    }

    /// The file to name in errors: the meta file, or the safetensors file.
    pub fn source(&self) -> &Path {
        self.slices.as_ref().map_or(&self.meta_path, |s| &s.path)
    }

    fn read_bin(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name);
        let want = self
            .meta
            .bin_bytes()
            .ok_or_else(|| Error::bad_file("KV dump shape overflows").with_file(&self.meta_path))?;
        let f = std::fs::File::open(&path).map_err(|e| Error::io("open", e).with_file(&path))?;
        let have = f
            .metadata()
            .map_err(|e| Error::io("stat", e).with_file(&path))?
            .len();
        if have != want {
            return Err(Error::bad_length(format!(
                "{have} bytes, the meta file says {} x {} x {} of {} bytes = {want}",
                self.meta.seq_len,
                self.meta.kv_heads,
                self.meta.head_dim,
                self.meta.dtype.size()
            ))
            .with_file(&path));
        }
        let mut buf = Vec::with_capacity(want as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(f, want), &mut buf)
            .map_err(|e| Error::io("read", e).with_file(&path))?;
        if buf.len() as u64 != want {
            return Err(Error::bad_length("the file shrank while being read").with_file(&path));
        }
        Ok(buf)
    }
}

/// Every dump under `root` that `filter` keeps, sorted by (run, layer, seq_start). Run folders
/// whose names start with `.` (a capture in progress) are skipped. A `.safetensors` file is read
/// as LMCache stores caches ([`scan_safetensors`]).
pub fn scan(root: &Path, filter: &DumpFilter) -> Result<Vec<Dump>> {
    if root.is_file() {
        return scan_safetensors(root, filter);
    }
    let list = |dir: &Path| -> Result<Vec<(String, PathBuf)>> {
        let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("read the folder", e).with_file(dir))?
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut dumps = Vec::new();
    for (run, run_dir) in list(root)? {
        if run.starts_with('.') || !run_dir.is_dir() {
            continue;
        }
        for (layer, layer_dir) in list(&run_dir)? {
            if !layer.starts_with("layer_") || !layer_dir.is_dir() {
                continue;
            }
            for (name, path) in list(&layer_dir)? {
                if !(name.starts_with("meta_") && name.ends_with(".json")) {
                    continue;
                }
                let len = std::fs::metadata(&path)
                    .map_err(|e| Error::io("stat", e).with_file(&path))?
                    .len();
                if len > MAX_META_BYTES {
                    return Err(Error::new(
                        ErrorKind::Limit,
                        format!("KV dump meta of {len} bytes (at most {MAX_META_BYTES})"),
                    )
                    .with_file(&path));
                }
                let text =
                    std::fs::read(&path).map_err(|e| Error::io("read", e).with_file(&path))?;
                let meta = DumpMeta::parse(&text).map_err(|e| e.with_file(&path))?;
                if filter.keeps(&meta) {
                    dumps.push(Dump {
                        run: run.clone(),
                        dir: layer_dir.clone(),
                        meta_path: path,
                        meta,
                        slices: None,
                    });
                }
            }
        }
    }
    dumps.sort_by(|a, b| {
        (&a.run, a.meta.layer_id, a.meta.seq_start).cmp(&(
            &b.run,
            b.meta.layer_id,
            b.meta.seq_start,
        ))
    });
    if dumps.is_empty() {
        return Err(Error::input(
            "no KV dump (run/layer_<i>/meta_t<s>_<e>.json) passes the filters",
        )
        .with_file(root));
    }
    Ok(dumps)
}

/// A run name from a tensor name: characters other than ASCII letters, digits, `_` and `-`
/// become `_` (it is a folder name when the dumps are written out).
fn run_name(tensor: &str) -> String {
    let s: String = tensor
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("r{s}")
    } else {
        s
    }
}

/// One LMCache-style tensor of a safetensors file.
#[derive(Debug, Clone)]
pub struct LmTensor {
    /// Its name.
    pub name: String,
    /// Element type.
    pub dtype: KvDType,
    /// The dtype's name in meta JSON.
    pub dname: &'static str,
    /// `[layers, 2, tokens, kv_heads, head_dim]`.
    pub shape: [usize; 5],
    /// Offset of its data in the file.
    pub start: usize,
}

/// The tensors of a safetensors file's bytes, checked to be `[layers, 2, tokens, kv_heads,
/// head_dim]` of F16, BF16 or F32 (the safetensors crate checks the header and the offsets).
pub fn lmcache_tensors(bytes: &[u8]) -> Result<Vec<LmTensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::bad_file(format!("safetensors: {e}")))?;
    let base = bytes.as_ptr() as usize;
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let t = st
            .tensor(&name)
            .map_err(|e| Error::bad_file(format!("safetensors: {e}")))?;
        let (dtype, dname) = match t.dtype() {
            safetensors::Dtype::F16 => (KvDType::Fp16, "fp16"),
            safetensors::Dtype::BF16 => (KvDType::Bf16, "bf16"),
            safetensors::Dtype::F32 => (KvDType::Fp32, "fp32"),
            d => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("KV tensor '{name}' is {d:?} (F16, BF16 or F32)"),
                ))
            }
        };
        let shape: [usize; 5] = match t.shape() {
            &[l, 2, t, h, d] if h > 0 && d > 0 => [l, 2, t, h, d],
            s => {
                return Err(Error::bad_file(format!(
                "KV tensor '{name}' has shape {s:?}, not [layers, 2, tokens, kv_heads, head_dim]"
            )))
            }
        };
        out.push(LmTensor {
            name,
            dtype,
            dname,
            shape,
            start: t.data().as_ptr() as usize - base,
        });
    }
    Ok(out)
}

/// The dumps of a safetensors file holding KV caches as LMCache stores them: each tensor of
/// shape `[layers, 2, tokens, kv_heads, head_dim]` (F16, BF16 or F32; index 0 of the second axis
/// the keys, 1 the values) is one run, named after the tensor, of one prefill dump per layer
/// (positions 0..tokens; one token is a decode dump). Tensors of other shapes are an error.
pub fn scan_safetensors(path: &Path, filter: &DumpFilter) -> Result<Vec<Dump>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("open", e).with_file(path))?;
    // SAFETY: the map is read-only; a file changed underneath gives wrong values, never UB in
    // safe code that only copies bytes out of it.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io("map", e).with_file(path))?;
    let map = std::sync::Arc::new(map);
    let tensors = lmcache_tensors(&map[..]).map_err(|e| e.with_file(path))?;
    let mut dumps = Vec::new();
    for LmTensor {
        name,
        dtype,
        dname,
        shape: [layers, _, tokens, heads, dim],
        start,
    } in tensors
    {
        let run = run_name(&name);
        let one = tokens * heads * dim * dtype.size() as usize;
        for l in 0..layers {
            let k = start + (2 * l) * one;
            let v = k + one;
            let file = |kv: &str| format!("{kv}_t0_{tokens}.bin");
            let meta_json = serde_json::json!({
                "layer_id": l, "seq_start": 0, "seq_len": tokens, "seq_end_exclusive": tokens,
                "kv_heads": heads, "head_dim": dim, "bytes_per_elem": dtype.size(),
                "dtype": dname, "add": tokens, "tensor_seq_len": tokens, "quant_key": false,
                "quant_value": false, "flash_attention": false,
                "stage": if tokens == 1 { "decode" } else { "prefill" },
                "run_id": run, "k_file": file("k"), "v_file": file("v"),
            })
            .to_string();
            let meta = DumpMeta::parse(meta_json.as_bytes()).map_err(|e| e.with_file(path))?;
            if !filter.keeps(&meta) {
                continue;
            }
            let dir = PathBuf::from(format!("layer_{l}"));
            dumps.push(Dump {
                run: run.clone(),
                meta_path: dir.join(format!("meta_t0_{tokens}.json")),
                dir,
                meta,
                slices: Some(std::sync::Arc::new(Slices {
                    file: map.clone(),
                    path: path.to_path_buf(),
                    k: k..k + one,
                    v: v..v + one,
                    meta_json,
                })),
            });
        }
    }
    if dumps.is_empty() {
        return Err(Error::input(
            "no KV tensor [layers, 2, tokens, kv_heads, head_dim] passes the filters",
        )
        .with_file(path));
    }
    Ok(dumps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(extra: &str) -> String {
        format!(
            r#"{{"layer_id": 3, "seq_start": 0, "seq_len": 4, "seq_end_exclusive": 4, "kv_heads": 2,
            "head_dim": 8, "bytes_per_elem": 2, "dtype": "fp16", "add": 4, "tensor_seq_len": 4,
            "quant_key": false, "quant_value": false, "flash_attention": false, "stage": "prefill",
            "run_id": "r", "k_file": "k_t0_4.bin", "v_file": "v_t0_4.bin"{extra}}}"#
        )
    }

    #[test]
    fn meta_is_checked() {
        let m = DumpMeta::parse(meta("").as_bytes()).unwrap();
        assert_eq!(
            (m.layer_id, m.stage, m.dtype),
            (3, Stage::Prefill, KvDType::Fp16)
        );
        assert_eq!(m.bin_bytes(), Some(4 * 2 * 8 * 2));
        let bad = |s: String| DumpMeta::parse(s.as_bytes()).unwrap_err();
        let e = bad(meta("").replace("\"bytes_per_elem\": 2", "\"bytes_per_elem\": 4"));
        assert!(e.message.contains("bytes_per_elem"), "{}", e.message);
        let e = bad(meta("").replace("k_t0_4.bin", "../../etc/passwd"));
        assert!(e.message.contains("not a file name"), "{}", e.message);
        let e = bad(meta("").replace("\"seq_end_exclusive\": 4", "\"seq_end_exclusive\": 5"));
        assert!(e.message.contains("seq_end_exclusive"), "{}", e.message);
        let e = bad(meta(r#", "layout": "packed""#));
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let e = bad(meta("").replace("fp16", "int4"));
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(DumpMeta::parse(b"[1]").is_err());
        let f = DumpFilter {
            stage: Some(Stage::Decode),
            ..DumpFilter::default()
        };
        assert!(!f.keeps(&m));
        let f = DumpFilter {
            min_seq_len: 5,
            ..DumpFilter::default()
        };
        assert!(!f.keeps(&m));
    }
}
