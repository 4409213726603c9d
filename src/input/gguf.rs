//! GGUF (v2, v3) reader: metadata, tensor table, and dequantization to f32 exactly as llama.cpp
//! defines it (ggml/src/ggml-quants.c, `dequantize_row_*`, at llama.cpp commit 917dc8cf; the
//! block layouts are those of ggml-common.h). Quantized tensors are handed on as f32 with their
//! GGUF type kept as `source_dtype`; F32/F16/BF16 and integer tensors are passed through.
//!
//! Every count read from the file is checked against the bytes that remain before anything is
//! allocated from it; shapes use checked products; tensor data must lie inside the file.

use super::{map_file, TensorInfo, TensorSource};
use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};
use half::f16;
use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// GGML tensor types tenpak reads: (id, name, elements per block, bytes per block).
const TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (30, "BF16", 1, 2),
];

struct Entry {
    ggml_type: u32,
    range: Range<usize>,
}

/// A GGUF file.
pub struct GgufSource {
    path: PathBuf,
    map: memmap2::Mmap,
    version: u32,
    /// `general.architecture`, if present.
    pub architecture: Option<String>,
    metadata: Vec<(String, MetaValue)>,
    /// Each metadata value's type name.
    types: Vec<String>,
    /// Tensor names and GGML types in the file's order.
    order: Vec<(String, String)>,
    infos: Vec<TensorInfo>,
    entries: Vec<Entry>,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let rem = (self.b.len() - self.pos) as u64;
        if n > rem {
            return Err(Error::bad_file(format!(
                "truncated: {what} needs {n} bytes at offset {}, {rem} remain",
                self.pos
            )));
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn string(&mut self, what: &str) -> Result<&'a str> {
        let n = self.u64(what)?;
        std::str::from_utf8(self.take(n, what)?)
            .map_err(|_| Error::bad_file(format!("{what} is not UTF-8")))
    }
    fn remaining(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }
}

/// One GGUF metadata value. Integers keep their sign; arrays hold values of one type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// u8, u16, u32, u64.
    UInt(u64),
    /// i8, i16, i32, i64.
    Int(i64),
    /// f32, f64.
    Float(f64),
    /// bool.
    Bool(bool),
    /// string.
    Str(String),
    /// array.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::UInt(v) => Some(v),
            MetaValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::UInt(v) => Some(v as f64),
            MetaValue::Int(v) => Some(v as f64),
            MetaValue::Float(v) => Some(v),
            _ => None,
        }
    }
    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an array, if it is one.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
    /// JSON form: numbers, booleans, strings and arrays as themselves.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            MetaValue::UInt(v) => (*v).into(),
            MetaValue::Int(v) => (*v).into(),
            MetaValue::Float(v) => serde_json::Number::from_f64(*v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            MetaValue::Bool(v) => (*v).into(),
            MetaValue::Str(s) => s.as_str().into(),
            MetaValue::Array(a) => a.iter().map(MetaValue::to_json).collect(),
        }
    }
    /// Read back [`MetaValue::to_json`]'s form (integers stay integers, other numbers floats).
    pub fn from_json(v: &serde_json::Value) -> Option<MetaValue> {
        Some(match v {
            serde_json::Value::Bool(b) => MetaValue::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    MetaValue::UInt(u)
                } else if let Some(i) = n.as_i64() {
                    MetaValue::Int(i)
                } else {
                    MetaValue::Float(n.as_f64()?)
                }
            }
            serde_json::Value::String(s) => MetaValue::Str(s.clone()),
            serde_json::Value::Array(a) => {
                MetaValue::Array(a.iter().map(MetaValue::from_json).collect::<Option<_>>()?)
            }
            _ => return None,
        })
    }
}

/// Size in the file of a scalar metadata value type, `None` for string (8) and array (9).
fn scalar_size(t: u32) -> Result<Option<u64>> {
    Ok(match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        8 | 9 => None,
        _ => return Err(Error::bad_file(format!("unknown metadata value type {t}"))),
    })
}

/// GGUF metadata value type names, by type id (formats-spec/tpk.md, `tenpak.gguf`).
pub const VALUE_TYPES: [&str; 13] = [
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
];

/// Read one metadata value of GGUF value type `t`, with its type's name (`u32`, `string`,
/// `array:i32`, ...).
fn read_value(c: &mut Cursor<'_>, t: u32, depth: u32) -> Result<(MetaValue, String)> {
    let le = |b: &[u8]| {
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(a)
    };
    let v = match t {
        0 => MetaValue::UInt(c.take(1, "u8 value")?[0] as u64),
        1 => MetaValue::Int(c.take(1, "i8 value")?[0] as i8 as i64),
        2 => MetaValue::UInt(le(c.take(2, "u16 value")?)),
        3 => MetaValue::Int(le(c.take(2, "i16 value")?) as u16 as i16 as i64),
        4 => MetaValue::UInt(le(c.take(4, "u32 value")?)),
        5 => MetaValue::Int(le(c.take(4, "i32 value")?) as u32 as i32 as i64),
        6 => MetaValue::Float(f32::from_bits(le(c.take(4, "f32 value")?) as u32) as f64),
        7 => MetaValue::Bool(c.take(1, "bool value")?[0] != 0),
        8 => MetaValue::Str(c.string("metadata string")?.to_string()),
        10 => MetaValue::UInt(le(c.take(8, "u64 value")?)),
        11 => MetaValue::Int(le(c.take(8, "i64 value")?) as i64),
        12 => MetaValue::Float(f64::from_bits(le(c.take(8, "f64 value")?))),
        9 => {
            if depth > 2 {
                return Err(Error::bad_file("metadata arrays nested too deeply"));
            }
            let et = c.u32("array type")?;
            let count = c.u64("array length")?;
            // Every item takes at least its scalar size, or 8 bytes (a length) for strings and
            // arrays: the count is bounded by the bytes left before anything is allocated.
            let min_item = scalar_size(et)?.unwrap_or(8);
            if count > c.remaining() / min_item {
                return Err(Error::bad_file(format!(
                    "metadata array of {count} items cannot fit in the {} bytes left",
                    c.remaining()
                )));
            }
            let mut items = Vec::with_capacity(count as usize);
            // An array of arrays is named by its first item's type (`u8` when empty).
            let mut item_type = VALUE_TYPES[et as usize].to_string();
            for k in 0..count {
                let (v, t) = read_value(c, et, depth + 1)?;
                if k == 0 {
                    item_type = t;
                }
                items.push(v);
            }
            if et == 9 && count == 0 {
                item_type = "array:u8".into();
            }
            return Ok((MetaValue::Array(items), format!("array:{item_type}")));
        }
        _ => return Err(Error::bad_file(format!("unknown metadata value type {t}"))),
    };
    Ok((v, VALUE_TYPES[t as usize].to_string()))
}

impl GgufSource {
    /// Open and validate a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let map = map_file(path)?;
        Self::parse(path, map).map_err(|e| e.with_file(path))
    }

    fn parse(path: &Path, map: memmap2::Mmap) -> Result<Self> {
        let Parsed {
            version,
            metadata,
            types,
            order,
            infos,
            entries,
        } = parse_bytes(&map)?;
        let architecture = metadata
            .iter()
            .find(|(k, _)| k == "general.architecture")
            .and_then(|(_, v)| v.as_str())
            .map(str::to_string);
        Ok(GgufSource {
            path: path.to_path_buf(),
            map,
            version,
            architecture,
            metadata,
            types,
            order,
            infos,
            entries,
        })
    }
}

/// The metadata of a GGUF file's bytes (everything before the tensor data is read, the tensor
/// table checked): what `eval` reads the architecture and tokenizer from.
pub fn metadata_of(b: &[u8]) -> Result<Vec<(String, MetaValue)>> {
    parse_bytes(b).map(|p| p.metadata)
}

struct Parsed {
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    /// Each metadata value's type name, in `metadata`'s order.
    types: Vec<String>,
    /// Tensor names and GGML type names in the file's order.
    order: Vec<(String, String)>,
    infos: Vec<TensorInfo>,
    entries: Vec<Entry>,
}

fn parse_bytes(b: &[u8]) -> Result<Parsed> {
    let mut c = Cursor { b, pos: 0 };
    if c.take(4, "magic")? != b"GGUF" {
        return Err(Error::bad_file("not a GGUF file (bad magic)"));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("GGUF version {version} is not supported (2 and 3 are)"),
        ));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    if n_kv > c.remaining() / 13 || n_tensors > c.remaining() / 32 {
        return Err(Error::bad_file(format!(
            "{n_tensors} tensors and {n_kv} metadata entries cannot fit in a {} byte file",
            b.len()
        )));
    }
    let mut alignment = 32u64;
    let mut metadata = Vec::with_capacity(n_kv.min(4096) as usize);
    let mut types = Vec::with_capacity(n_kv.min(4096) as usize);
    for _ in 0..n_kv {
        let key = c.string("metadata key")?.to_string();
        let t = c.u32("metadata type")?;
        let (v, tname) = read_value(&mut c, t, 0)?;
        types.push(tname);
        if key == "general.alignment" {
            alignment = match v {
                MetaValue::UInt(a) if t == 4 => a,
                _ => return Err(Error::bad_file("general.alignment is not a u32")),
            };
            if alignment == 0 || !alignment.is_power_of_two() {
                return Err(Error::bad_file(format!(
                    "alignment {alignment} is not a power of two"
                )));
            }
        }
        metadata.push((key, v));
    }
    let mut raw = Vec::with_capacity(n_tensors.min(4096) as usize);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?.to_string();
        let nd = c.u32("tensor dims")?;
        if nd > 8 {
            return Err(Error::bad_file(format!(
                "tensor '{name}' has {nd} dimensions"
            )));
        }
        let mut ne = Vec::with_capacity(nd as usize);
        for _ in 0..nd {
            ne.push(c.u64("tensor dim")?);
        }
        let ty = c.u32("tensor type")?;
        let off = c.u64("tensor offset")?;
        raw.push((name, ne, ty, off));
    }
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let mut order = Vec::with_capacity(raw.len());
    for (name, _, ty, _) in &raw {
        let tname = TYPES.iter().find(|t| t.0 == *ty).map_or("?", |t| t.1);
        order.push((name.clone(), tname.to_string()));
    }
    let mut infos = Vec::with_capacity(raw.len());
    let mut entries = Vec::with_capacity(raw.len());
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    for w in raw.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::bad_file(format!(
                "tensor '{}' appears twice",
                w[0].0
            )));
        }
    }
    for (name, ne, ty, off) in raw {
        let err = |m: String| Error::bad_file(m).with_tensor(&name);
        let &(_, tname, blk, bsize) = TYPES.iter().find(|t| t.0 == ty).ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("GGML type {ty} is not supported"),
            )
            .with_tensor(&name)
        })?;
        let numel = tpk_format::checked_numel(&ne).ok_or_else(|| err("shape overflows".into()))?;
        if ne.first().is_some_and(|&n0| n0 % blk as u64 != 0) {
            return Err(err(format!(
                "row length {} is not a multiple of {tname}'s block of {blk}",
                ne[0]
            )));
        }
        let size = (numel / blk as u64)
            .checked_mul(bsize as u64)
            .ok_or_else(|| err("size overflows".into()))?;
        let start = data_start
            .checked_add(off)
            .ok_or_else(|| err("offset overflows".into()))?;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= b.len() as u64)
            .ok_or_else(|| {
                err(format!(
                    "data at {start}+{size} runs past the end of the {} byte file",
                    b.len()
                ))
            })?;
        let dtype = match tname {
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "I8" => DType::I8,
            "I16" => DType::I16,
            "I32" => DType::I32,
            "I64" => DType::I64,
            "F64" => DType::F64,
            _ => DType::F32,
        };
        infos.push(TensorInfo {
            name,
            dims: ne.iter().rev().copied().collect(),
            dtype,
            source_dtype: tname.to_string(),
            source_bytes: size,
        });
        entries.push(Entry {
            ggml_type: ty,
            range: start as usize..end as usize,
        });
    }
    Ok(Parsed {
        version,
        metadata,
        types,
        order,
        infos,
        entries,
    })
}

/// The `.tpk` metadata key holding what a GGUF writer needs beyond the `gguf.*` values: the
/// version, each key's value type in file order, and each tensor's GGML type in file order.
pub const LAYOUT_KEY: &str = "tenpak.gguf";

impl GgufSource {
    /// [`LAYOUT_KEY`]'s value: `{"version": 3, "metadata": [[key, type], ...],
    /// "tensors": [[name, ggml_type], ...]}`.
    pub fn layout_json(&self) -> String {
        let metadata: Vec<(&str, &str)> = self
            .metadata
            .iter()
            .zip(&self.types)
            .map(|((k, _), t)| (k.as_str(), t.as_str()))
            .collect();
        serde_json::json!({
            "version": self.version,
            "metadata": metadata,
            "tensors": self.order,
        })
        .to_string()
    }
    /// Every metadata key and value, in file order (`general.alignment` included).
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }
    /// The value of metadata `key`.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl TensorSource for GgufSource {
    fn describe(&self) -> String {
        format!(
            "gguf v{} {}{}",
            self.version,
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            self.architecture
                .as_ref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default()
        )
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn model_metadata(&self) -> Vec<(String, String)> {
        let mut m: Vec<(String, String)> = self
            .metadata
            .iter()
            .map(|(k, v)| (format!("gguf.{k}"), v.to_json().to_string()))
            .collect();
        m.push((LAYOUT_KEY.to_string(), self.layout_json()));
        m
    }
    fn read(&self, i: usize, first: u64, count: u64, out: &mut Vec<u8>) -> Result<()> {
        let e = &self.entries[i];
        let info = &self.infos[i];
        let bytes = &self.map[e.range.clone()];
        out.clear();
        if info.dtype != DType::F32 || e.ggml_type == 0 {
            let part = super::element_range(bytes, info.dtype, first, count)?;
            out.extend_from_slice(part);
            let at = e.range.start + (part.as_ptr() as usize - bytes.as_ptr() as usize);
            super::release_pages(&self.map, at..at + part.len());
            return Ok(());
        }
        // Whole blocks around the range, dequantized, then cut to it.
        let (blk, bsize) = block_shape(e.ggml_type).ok_or_else(|| {
            Error::new(ErrorKind::Unsupported, format!("GGML type {}", e.ggml_type))
        })?;
        let (b0, b1) = (first / blk as u64, (first + count).div_ceil(blk as u64));
        let part = bytes
            .get(b0 as usize * bsize..b1 as usize * bsize)
            .ok_or_else(|| Error::internal("GGUF read past the tensor's end"))?;
        let mut y = vec![0f32; (b1 - b0) as usize * blk];
        dequantize(e.ggml_type, part, &mut y).map_err(|err| err.with_tensor(&info.name))?;
        let skip = (first - b0 * blk as u64) as usize;
        out.reserve(count as usize * 4);
        for v in &y[skip..skip + count as usize] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let at = e.range.start + b0 as usize * bsize;
        super::release_pages(&self.map, at..at + part.len());
        Ok(())
    }
    fn release(&self, i: usize) {
        super::release_pages(&self.map, self.entries[i].range.clone());
    }
    fn data(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        let e = &self.entries[i];
        let bytes = &self.map[e.range.clone()];
        if self.infos[i].dtype != DType::F32 || e.ggml_type == 0 {
            return Ok(Cow::Borrowed(bytes));
        }
        let mut out = vec![0f32; self.infos[i].numel() as usize];
        dequantize(e.ggml_type, bytes, &mut out)
            .map_err(|err| err.with_tensor(&self.infos[i].name))?;
        let mut le = vec![0u8; 4 * out.len()];
        for (b, v) in le.chunks_exact_mut(4).zip(&out) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        Ok(Cow::Owned(le))
    }
}

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The GGML type (id, name) a tensor of `dtype` is stored as unquantized, if GGUF has one
/// (F32, F16, BF16, F64 and the signed integers).
pub fn plain_type(dtype: DType) -> Option<(u32, &'static str)> {
    TYPES
        .iter()
        .find(|t| t.2 == 1 && t.1 == dtype.name())
        .map(|t| (t.0, t.1))
}

/// Whether `name` is a GGML block (quantized) type this reader knows.
pub fn is_block_type(name: &str) -> bool {
    TYPES.iter().any(|t| t.1 == name && t.2 > 1)
}

/// Elements and bytes per block of GGML type `ty`.
fn block_shape(ty: u32) -> Option<(usize, usize)> {
    TYPES.iter().find(|t| t.0 == ty).map(|t| (t.2, t.3))
}

/// Dequantize whole blocks of GGML type `ty` into `y` (`y.len()` elements).
pub fn dequantize(ty: u32, x: &[u8], y: &mut [f32]) -> Result<()> {
    let &(_, name, blk, bsize) = TYPES
        .iter()
        .find(|t| t.0 == ty)
        .ok_or_else(|| Error::new(ErrorKind::Unsupported, format!("GGML type {ty}")))?;
    if !y.len().is_multiple_of(blk) || x.len() != y.len() / blk * bsize {
        return Err(Error::bad_file(format!(
            "{name}: {} bytes for {} elements",
            x.len(),
            y.len()
        )));
    }
    for (b, y) in x.chunks_exact(bsize).zip(y.chunks_exact_mut(blk)) {
        match ty {
            2 => {
                let d = h(b, 0);
                for j in 0..16 {
                    y[j] = ((b[2 + j] & 0xF) as i32 - 8) as f32 * d;
                    y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
                }
            }
            3 => {
                let (d, m) = (h(b, 0), h(b, 2));
                for j in 0..16 {
                    y[j] = (b[4 + j] & 0xF) as f32 * d + m;
                    y[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
                }
            }
            6 => {
                let d = h(b, 0);
                let qh = u32::from_le_bytes(b[2..6].try_into().unwrap());
                for j in 0..16 {
                    let xh0 = ((qh >> j) << 4) & 0x10;
                    let xh1 = (qh >> (j + 12)) & 0x10;
                    y[j] = ((((b[6 + j] & 0xF) as u32) | xh0) as i32 - 16) as f32 * d;
                    y[j + 16] = ((((b[6 + j] >> 4) as u32) | xh1) as i32 - 16) as f32 * d;
                }
            }
            7 => {
                let (d, m) = (h(b, 0), h(b, 2));
                let qh = u32::from_le_bytes(b[4..8].try_into().unwrap());
                for j in 0..16 {
                    let xh0 = ((qh >> j) << 4) & 0x10;
                    let xh1 = (qh >> (j + 12)) & 0x10;
                    y[j] = (((b[8 + j] & 0xF) as u32) | xh0) as f32 * d + m;
                    y[j + 16] = (((b[8 + j] >> 4) as u32) | xh1) as f32 * d + m;
                }
            }
            8 => {
                let d = h(b, 0);
                for j in 0..32 {
                    y[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
            10 => q2_k(b, y),
            11 => q3_k(b, y),
            12 => q4_k(b, y),
            13 => q5_k(b, y),
            14 => q6_k(b, y),
            _ => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{name} is not a quantized type"),
                ))
            }
        }
    }
    Ok(())
}

// block_q2_K: scales[16], qs[64], d: f16, dmin: f16.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, min) = (h(b, 80), h(b, 82));
    let (mut is, mut yi) = (0, 0);
    for n in 0..2 {
        let q = &qs[32 * n..];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
                for l in 0..16 {
                    y[yi] = dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml;
                    yi += 1;
                }
            }
        }
    }
}

// block_q3_K: hmask[32], qs[64], scales[12], d: f16.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hm, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
    let d_all = h(b, 108);
    let mut aux = [0u32; 4];
    for (i, a) in aux.iter_mut().take(3).enumerate() {
        *a = u32::from_le_bytes(sc[4 * i..4 * i + 4].try_into().unwrap());
    }
    let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
    aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
    aux[0] = (aux[0] & k2) | ((tmp & k1) << 4);
    aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
    let scales: Vec<i8> = aux
        .iter()
        .flat_map(|a| a.to_le_bytes())
        .map(|v| v as i8)
        .collect();
    let (mut is, mut yi, mut m) = (0, 0, 1u8);
    for n in 0..2 {
        let q = &qs[32 * n..];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let k = l + 16 * half;
                    let v = ((q[k] >> shift) & 3) as i32 - if hm[k] & m != 0 { 0 } else { 4 };
                    y[yi] = dl * v as f32;
                    yi += 1;
                }
            }
            m <<= 1;
        }
    }
}

fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Scales and mins (already multiplied by `d` and `dmin`) of sub-blocks `2j` and `2j + 1`.
fn k4_pair(j: usize, scales: &[u8], d: f32, min: f32) -> [(f32, f32); 2] {
    [2 * j, 2 * j + 1].map(|i| {
        let (s, m) = scale_min_k4(i, scales);
        (d * s as f32, min * m as f32)
    })
}

// block_q4_K: d: f16, dmin: f16, scales[12], qs[128].
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (h(b, 0), h(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for j in 0..4 {
        let [(d1, m1), (d2, m2)] = k4_pair(j, scales, d, min);
        let q = &qs[32 * j..32 * j + 32];
        for l in 0..32 {
            y[64 * j + l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[64 * j + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

// block_q5_K: d: f16, dmin: f16, scales[12], qh[32], qs[128].
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (h(b, 0), h(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    let (mut u1, mut u2) = (1u8, 2u8);
    for j in 0..4 {
        let [(d1, m1), (d2, m2)] = k4_pair(j, scales, d, min);
        let ql = &qs[32 * j..32 * j + 32];
        for l in 0..32 {
            let hi1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let hi2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[64 * j + l] = d1 * ((ql[l] & 0xF) + hi1) as f32 - m1;
            y[64 * j + 32 + l] = d2 * ((ql[l] >> 4) + hi2) as f32 - m2;
        }
        u1 <<= 2;
        u2 <<= 2;
    }
}

// block_q6_K: ql[128], qh[64], scales[16] (i8), d: f16.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = h(b, 208);
    for n in 0..2 {
        let (ql, qh) = (&b[64 * n..64 * n + 64], &b[128 + 32 * n..128 + 32 * n + 32]);
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let y = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Parse GGUF bytes without a file (fuzzing): the tensor table, and every tensor dequantized.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_parse(b: &[u8], max_elems: u64) -> Result<usize> {
    let Parsed { infos, entries, .. } = parse_bytes(b)?;
    for (t, e) in infos.iter().zip(&entries) {
        if t.dtype == DType::F32 && e.ggml_type != 0 && t.numel() <= max_elems {
            let mut y = vec![0f32; t.numel() as usize];
            dequantize(e.ggml_type, &b[e.range.clone()], &mut y)?;
        }
    }
    Ok(infos.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_and_q8_0_by_hand() {
        // d = 0.5, nibbles 0..15 then 15..0: values (q - 8) * 0.5.
        let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut y = [0f32; 32];
        dequantize(2, &b, &mut y).unwrap();
        assert_eq!(y[0], -4.0);
        assert_eq!(y[15], 3.5);
        assert_eq!(y[16], 3.5);
        assert_eq!(y[31], -4.0);
        let mut b = f16::from_f32(0.25).to_le_bytes().to_vec();
        b.extend((0..32u8).map(|j| (j as i8 - 16) as u8));
        dequantize(8, &b, &mut y).unwrap();
        assert_eq!(y[0], -4.0);
        assert_eq!(y[31], 3.75);
        assert!(dequantize(8, &b[..10], &mut y).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_bytes(b"GGUF\x03\0\0\0").is_err());
        let mut b = b"GGUF\x03\0\0\0".to_vec();
        b.extend(u64::MAX.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        assert!(parse_bytes(&b).is_err());
    }
}
