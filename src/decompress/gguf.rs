//! GGUF output of `decompress` (`-o model.gguf` or `--format gguf`): what llama.cpp loads.
//!
//! The file is GGUF version 3 (formats-spec/tpk.md, "GGUF output", says what is written):
//! - metadata: every `gguf.*` value the `.tpk` kept of its source GGUF, in the source's order and
//!   with the source's value types (the `tenpak.gguf` key records them at compress time; for
//!   files without it the types are inferred: unsigned integers `u32`, signed `i32`, reals `f32`).
//!   `general.file_type` is set from the types written when it says otherwise.
//! - tensors in the source's order, each natively in a GGML block type when its decoded values lie
//!   on that type's grid, else as F32/F16/BF16 (`--dtype`) or its integer type.
//!
//! Native blocks are never a requantization: each block of 32 decoded values is re-derived
//! (scale, offset, codes) and written only if llama.cpp's dequantization of it (this crate's
//! GGUF reader, [`crate::input::gguf::dequantize`]) gives back exactly the same bits. The types
//! tried are the tensor's type in its source GGUF (so a lossless `.tpk` of a GGUF comes back with
//! its original blocks) and the type the tensor's codec names ([`TensorCodec::ggml_block`]:
//! `int8` → Q8_0, `int4_g32` → Q4_0, `int4_g32_asym` → Q4_1, `int5_g32[_asym]` → Q5_0/Q5_1).
//! A tensor with one block off the grid is written as floats instead, its blocks so far
//! overwritten. Only tensors of two or more dimensions whose rows are whole blocks are tried,
//! as llama-quantize does.
//!
//! Hand-written: the `gguf` crates on crates.io read GGUF but none writes it with streamed,
//! positioned tensor data, which bounded memory needs.
//!
//! [`TensorCodec::ggml_block`]: crate::codec::TensorCodec::ggml_block

use super::{write_at, DecompressOptions, DecompressReport, OutDType, Planned};
use crate::archive::Archive;
use crate::dtype::{self, DType};
use crate::error::{clip, Error, Result};
use crate::input::gguf::{MetaValue, LAYOUT_KEY, VALUE_TYPES};
use crate::progress::Event;
use crate::Context;
use half::f16;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// A GGML block type tenpak writes natively: 32 values a block, f16 scale (and offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quant {
    /// GGML type id.
    pub id: u32,
    /// GGML type name.
    pub name: &'static str,
    bits: u32,
    asym: bool,
    /// Bytes per block.
    pub bytes: usize,
}

/// Values per block of every [`Quant`].
pub const BLOCK: usize = 32;

/// The GGML block types written natively.
pub const QUANTS: [Quant; 5] = [
    Quant {
        id: 8,
        name: "Q8_0",
        bits: 8,
        asym: false,
        bytes: 34,
    },
    Quant {
        id: 2,
        name: "Q4_0",
        bits: 4,
        asym: false,
        bytes: 18,
    },
    Quant {
        id: 3,
        name: "Q4_1",
        bits: 4,
        asym: true,
        bytes: 20,
    },
    Quant {
        id: 6,
        name: "Q5_0",
        bits: 5,
        asym: false,
        bytes: 22,
    },
    Quant {
        id: 7,
        name: "Q5_1",
        bits: 5,
        asym: true,
        bytes: 24,
    },
];

impl Quant {
    /// The block type called `name`, if it is written natively.
    pub fn named(name: &str) -> Option<Quant> {
        QUANTS.iter().copied().find(|q| q.name == name)
    }

    fn levels(&self) -> i32 {
        (1 << self.bits) - 1
    }

    fn bias(&self) -> i32 {
        if self.asym {
            0
        } else {
            1 << (self.bits - 1)
        }
    }

    /// llama.cpp's reconstruction of code `c` (`dequantize_row_*`, without fused multiply-add).
    #[inline]
    fn value(&self, c: i32, d: f32, m: f32) -> f32 {
        if self.asym {
            c as f32 * d + m
        } else {
            (c - self.bias()) as f32 * d
        }
    }

    /// The codes of `v` under scale `d` and offset `m`, if every value is reconstructed exactly.
    fn codes(&self, v: &[f32], d: f16, m: f16, codes: &mut [u8; BLOCK]) -> bool {
        let (d, m) = (d.to_f32(), m.to_f32());
        if !d.is_finite() || !m.is_finite() {
            return false;
        }
        let (levels, bias) = (self.levels(), self.bias());
        for (c, &x) in codes.iter_mut().zip(v) {
            let g = if d == 0.0 {
                bias
            } else if self.asym {
                ((x - m) / d).round() as i32
            } else {
                (x / d).round() as i32 + bias
            };
            // The division's rounding can land one code off.
            let Some(k) = [g, g - 1, g + 1].into_iter().find(|&k| {
                (0..=levels).contains(&k) && self.value(k, d, m).to_bits() == x.to_bits()
            }) else {
                return false;
            };
            *c = k as u8;
        }
        true
    }

    fn pack(&self, d: f16, m: f16, c: &[u8; BLOCK], out: &mut [u8]) {
        out[0..2].copy_from_slice(&d.to_le_bytes());
        let mut at = 2;
        if self.asym {
            out[2..4].copy_from_slice(&m.to_le_bytes());
            at = 4;
        }
        match self.bits {
            8 => {
                for (o, &c) in out[at..at + BLOCK].iter_mut().zip(c) {
                    *o = (c as i32 - 128) as i8 as u8;
                }
            }
            4 => {
                for j in 0..16 {
                    out[at + j] = c[j] | c[j + 16] << 4;
                }
            }
            _ => {
                // Q5: bit j of `qh` is value j's fifth bit; then the low nibbles as Q4's.
                let qh = c
                    .iter()
                    .enumerate()
                    .fold(0u32, |h, (j, &c)| h | ((c as u32 >> 4) & 1) << j);
                out[at..at + 4].copy_from_slice(&qh.to_le_bytes());
                at += 4;
                for j in 0..16 {
                    out[at + j] = (c[j] & 15) | (c[j + 16] & 15) << 4;
                }
            }
        }
    }

    /// Write 32 values as one block of this type into `out` (`self.bytes` long), if a block
    /// whose dequantization gives back exactly these bits is found. The scale is sought first
    /// where llama.cpp's default and tenpak's quantizers put it (the largest magnitude on an end
    /// code, the offset on the smallest value), then, for blocks whose scale was searched for
    /// (importance-weighted or refitted quantizers), with the largest magnitude on any code and
    /// the smallest value on any code (offset types: a non-negative scale, as quantizers write);
    /// each with its f16 neighbours. A block off the grid costs
    /// the whole search (a few thousand tries that mostly stop at the first value); the writer
    /// gives up on a tensor at its first such block.
    pub fn encode_exact(&self, v: &[f32], out: &mut [u8]) -> bool {
        debug_assert_eq!((v.len(), out.len()), (BLOCK, self.bytes));
        if v.iter().any(|x| !x.is_finite()) {
            return false;
        }
        let mut codes = [0u8; BLOCK];
        let mut found = false;
        let mut attempt = |d: f16, m: f16| -> bool {
            if !self.codes(v, d, m, &mut codes) {
                return false;
            }
            self.pack(d, m, &codes, out);
            // The reader's dequantization is the judge.
            let mut y = [0f32; BLOCK];
            found = crate::input::gguf::dequantize(self.id, out, &mut y).is_ok()
                && y.iter().zip(v).all(|(a, b)| a.to_bits() == b.to_bits());
            found
        };
        let near = |x: f32| {
            let d = f16::from_f32(x);
            [
                d,
                f16::from_bits(d.to_bits().wrapping_add(1)),
                f16::from_bits(d.to_bits().wrapping_sub(1)),
            ]
        };
        if self.asym {
            let (lo, hi) = v
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
                    (l.min(x), h.max(x))
                });
            let m = f16::from_f32(lo);
            let lo_exact = m.to_f32().to_bits() == lo.to_bits();
            if lo_exact && hi == lo && attempt(f16::ZERO, m) {
                return true;
            }
            // The span covers k codes; the smallest value sits on code c.
            let levels = self.levels();
            let fast = [(levels, 0), (levels - 1, 0)];
            let full = (1..=levels)
                .rev()
                .flat_map(|k| (0..=levels - k).map(move |c| (k, c)));
            for (k, c) in fast.into_iter().chain(full) {
                if c == 0 && !lo_exact {
                    continue;
                }
                for d in near((hi - lo) / k as f32) {
                    let ms = if c == 0 {
                        [m; 3]
                    } else {
                        near(lo - c as f32 * d.to_f32())
                    };
                    for m in ms {
                        if attempt(d, m) {
                            return true;
                        }
                    }
                }
            }
        } else {
            let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            if amax == 0.0 {
                return attempt(f16::ZERO, f16::ZERO);
            }
            // The largest magnitude sits on code +-k.
            let bias = self.bias();
            let fast = [bias - 1, bias];
            let full = (1..=bias - 2).rev();
            for k in fast.into_iter().chain(full) {
                for s in [1f32, -1.0] {
                    for d in near(s * amax / k as f32) {
                        if attempt(d, f16::ZERO) {
                            return true;
                        }
                    }
                }
            }
        }
        found
    }
}

/// What the `.tpk` recorded of its source GGUF's layout ([`LAYOUT_KEY`]).
#[derive(Default)]
struct Layout {
    metadata: Vec<(String, String)>,
    tensors: Vec<(String, String)>,
}

fn layout(meta: &[(String, String)]) -> Result<Layout> {
    let Some((_, text)) = meta.iter().find(|(k, _)| k == LAYOUT_KEY) else {
        return Ok(Layout::default());
    };
    let bad = |why: &str| Error::bad_params(format!("metadata {LAYOUT_KEY}: {why}"));
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let pairs = |field: &str| -> Result<Vec<(String, String)>> {
        match &v[field] {
            serde_json::Value::Null => Ok(Vec::new()),
            x => serde_json::from_value(x.clone())
                .map_err(|_| bad(&format!("{field} is not a list of [name, type] pairs"))),
        }
    };
    Ok(Layout {
        metadata: pairs("metadata")?,
        tensors: pairs("tensors")?,
    })
}

/// A metadata entry to write: key, value type name, value.
type Kv = (String, String, MetaValue);

/// Value type names: `u32`, ..., `string`, `array:ITEM`.
fn type_id(ty: &str) -> Option<u32> {
    let head = ty.split(':').next().unwrap_or(ty);
    VALUE_TYPES
        .iter()
        .position(|t| *t == head)
        .map(|i| i as u32)
        .filter(|_| head != "array" || ty.len() > "array:".len())
}

/// The type of a value kept without one (`.tpk` files older than [`LAYOUT_KEY`]).
fn infer_type(v: &MetaValue) -> String {
    match v {
        MetaValue::UInt(u) if *u <= u32::MAX as u64 => "u32".into(),
        MetaValue::UInt(_) => "u64".into(),
        MetaValue::Int(i) if i32::try_from(*i).is_ok() => "i32".into(),
        MetaValue::Int(_) => "i64".into(),
        MetaValue::Float(_) => "f32".into(),
        MetaValue::Bool(_) => "bool".into(),
        MetaValue::Str(_) => "string".into(),
        MetaValue::Array(a) => {
            // The widest item type: any real makes f32, any negative a signed type.
            let mut t = a.first().map_or("u8".to_string(), infer_type);
            for x in a.iter().skip(1) {
                let u = infer_type(x);
                let rank = |s: &str| match s {
                    "u32" => 1,
                    "i32" => 2,
                    "u64" => 3,
                    "i64" => 4,
                    "f32" => 5,
                    _ => 0,
                };
                if rank(&u) > rank(&t) {
                    t = u;
                }
            }
            format!("array:{t}")
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Append `v` as a value of type `ty`; `Err(())` when it does not fit that type.
fn put_value(
    out: &mut Vec<u8>,
    ty: &str,
    v: &MetaValue,
    depth: u32,
) -> std::result::Result<(), ()> {
    let int = |v: &MetaValue| -> Option<i128> {
        match *v {
            MetaValue::UInt(u) => Some(u as i128),
            MetaValue::Int(i) => Some(i as i128),
            _ => None,
        }
    };
    let ranged = |lo: i128, hi: i128| int(v).filter(|x| (lo..=hi).contains(x)).ok_or(());
    match ty {
        "u8" => out.push(ranged(0, u8::MAX as i128)? as u8),
        "i8" => out.push(ranged(i8::MIN as i128, i8::MAX as i128)? as i8 as u8),
        "u16" => out.extend_from_slice(&(ranged(0, u16::MAX as i128)? as u16).to_le_bytes()),
        "i16" => out
            .extend_from_slice(&(ranged(i16::MIN as i128, i16::MAX as i128)? as i16).to_le_bytes()),
        "u32" => out.extend_from_slice(&(ranged(0, u32::MAX as i128)? as u32).to_le_bytes()),
        "i32" => out
            .extend_from_slice(&(ranged(i32::MIN as i128, i32::MAX as i128)? as i32).to_le_bytes()),
        "u64" => out.extend_from_slice(&(ranged(0, u64::MAX as i128)? as u64).to_le_bytes()),
        "i64" => out
            .extend_from_slice(&(ranged(i64::MIN as i128, i64::MAX as i128)? as i64).to_le_bytes()),
        "f32" => out.extend_from_slice(&(v.as_f64().ok_or(())? as f32).to_le_bytes()),
        "f64" => out.extend_from_slice(&v.as_f64().ok_or(())?.to_le_bytes()),
        "bool" => match v {
            MetaValue::Bool(b) => out.push(*b as u8),
            _ => return Err(()),
        },
        "string" => put_str(out, v.as_str().ok_or(())?),
        _ => {
            let item = ty.strip_prefix("array:").ok_or(())?;
            let items = v.as_array().ok_or(())?;
            // GGUF readers (this crate's included) refuse deeper nesting.
            if depth > 2 {
                return Err(());
            }
            out.extend_from_slice(&type_id(item).ok_or(())?.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                put_value(out, item, x, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// The metadata to write: (key, type, value), in the source's order, then any key the layout
/// does not list (types inferred). The second value counts inferred types.
fn metadata(meta: &[(String, String)], layout: &Layout) -> Result<(Vec<Kv>, usize)> {
    let mut values: Vec<(String, MetaValue)> = Vec::new();
    for (k, text) in meta {
        let Some(key) = k.strip_prefix("gguf.") else {
            continue;
        };
        let v = serde_json::from_str(text)
            .ok()
            .and_then(|j| MetaValue::from_json(&j))
            .ok_or_else(|| Error::bad_params(format!("metadata {}: not a GGUF value", clip(k))))?;
        values.push((key.to_string(), v));
    }
    let mut out = Vec::with_capacity(values.len());
    let mut taken = vec![false; values.len()];
    let at: HashMap<&str, usize> = values
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.as_str(), i))
        .collect();
    for (k, ty) in &layout.metadata {
        if let Some(&i) = at.get(k.as_str()) {
            if !taken[i] {
                taken[i] = true;
                out.push((k.clone(), ty.clone(), values[i].1.clone()));
            }
        }
    }
    let mut inferred = 0;
    for (i, (k, v)) in values.iter().enumerate() {
        if !taken[i] {
            inferred += 1;
            out.push((k.clone(), infer_type(v), v.clone()));
        }
    }
    for (k, ty, v) in &mut out {
        if k == "general.alignment" {
            // llama.cpp refuses any other type.
            *ty = "u32".into();
            if !v
                .as_u64()
                .is_some_and(|a| a.is_power_of_two() && a <= MAX_ALIGNMENT)
            {
                return Err(Error::bad_params(format!(
                    "metadata gguf.general.alignment: {} is not a power of two up to {MAX_ALIGNMENT}",
                    clip(&v.to_json().to_string())
                )));
            }
        }
    }
    Ok((out, inferred))
}

fn kv_bytes(kv: &[Kv]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (k, ty, v) in kv {
        let bad = || {
            Error::bad_params(format!(
                "metadata gguf.{}: {} is not a GGUF {ty}",
                clip(k),
                clip(&v.to_json().to_string())
            ))
        };
        put_str(&mut out, k);
        out.extend_from_slice(&type_id(ty).ok_or_else(bad)?.to_le_bytes());
        put_value(&mut out, ty, v, 0).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The GGUF metadata section a `.tpk`'s metadata gives (fuzzing: untrusted values and types).
#[cfg(feature = "fuzzing")]
pub fn metadata_section(meta: &[(String, String)]) -> Result<Vec<u8>> {
    let layout = layout(meta)?;
    let (kv, _) = metadata(meta, &layout)?;
    kv_bytes(&kv)
}

/// One tensor as the header lists it.
struct Slot {
    name: String,
    /// GGML dims: innermost first.
    ne: Vec<u64>,
    ty: u32,
    ty_name: &'static str,
    offset: u64,
}

fn header(kv: &[u8], n_kv: usize, slots: &[Slot]) -> Vec<u8> {
    let mut h = Vec::with_capacity(kv.len() + 64 * slots.len() + 24);
    h.extend_from_slice(b"GGUF");
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&(slots.len() as u64).to_le_bytes());
    h.extend_from_slice(&(n_kv as u64).to_le_bytes());
    h.extend_from_slice(kv);
    for s in slots {
        put_str(&mut h, &s.name);
        h.extend_from_slice(&(s.ne.len() as u32).to_le_bytes());
        for d in &s.ne {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h.extend_from_slice(&s.ty.to_le_bytes());
        h.extend_from_slice(&s.offset.to_le_bytes());
    }
    h
}

/// llama.cpp's `llama_ftype` for a model whose most common tensor type is `ty`.
fn file_type(ty: u32) -> Option<u64> {
    Some(match ty {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 3,
        8 => 7,
        6 => 8,
        7 => 9,
        30 => 32,
        _ => return None,
    })
}

/// The largest `general.alignment` written (checked by [`metadata`]).
const MAX_ALIGNMENT: u64 = 1 << 20;

/// GGML's limits: names of at most 63 bytes, at most 4 dimensions.
const MAX_NAME: usize = 63;
const MAX_DIMS: usize = 4;

/// Write the planned tensors of `ar` as a GGUF file at `output`.
pub(super) fn write(
    ar: &Archive,
    output: &Path,
    mut plan: Vec<Planned>,
    mut skipped: Vec<(String, String)>,
    opts: &DecompressOptions,
    cx: &Context<'_>,
) -> Result<DecompressReport> {
    let tensors = ar.file.tensors();
    let layout = layout(ar.file.metadata())?;
    let (mut kv, inferred) = metadata(ar.file.metadata(), &layout)?;
    let mut warnings = Vec::new();
    if kv.is_empty() {
        warnings.push(
            "the .tpk keeps no GGUF metadata (its source was not a GGUF): the file holds the \
             tensors only, which llama.cpp cannot run"
                .to_string(),
        );
    } else if inferred > 0 {
        warnings.push(format!(
            "{inferred} metadata value types were not recorded (a .tpk from an older tenpak): \
             written as u32/i32/f32/string by their values"
        ));
    }
    let alignment = kv
        .iter()
        .find(|(k, _, _)| k == "general.alignment")
        .and_then(|(_, _, v)| v.as_u64())
        .unwrap_or(32);
    // The source's tensor order, then any other.
    let rank: HashMap<&str, usize> = layout
        .tensors
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    plan.sort_by_key(|p| {
        (
            rank.get(tensors[p.index].name.as_str())
                .copied()
                .unwrap_or(usize::MAX),
            p.index,
        )
    });
    let source_type: HashMap<&str, &str> = layout
        .tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    // Per tensor: its header slot, the block types to try, its fallback type.
    let mut slots = Vec::with_capacity(plan.len());
    let mut tries = Vec::with_capacity(plan.len());
    let mut kept = Vec::with_capacity(plan.len());
    // Source block types this writer does not produce (k-quants, ...): those tensors come out as
    // floats, which the user should hear about.
    let mut unwritable: Vec<(&str, &str)> = Vec::new();
    for p in plan {
        let t = &tensors[p.index];
        if t.name.len() > MAX_NAME {
            return Err(Error::input(format!(
                "tensor '{}' has a {}-byte name; GGUF names hold at most {MAX_NAME} bytes",
                clip(&t.name),
                t.name.len()
            )));
        }
        if t.dims.len() > MAX_DIMS {
            return Err(Error::input(format!(
                "tensor '{}' has {} dimensions; GGUF holds at most {MAX_DIMS}",
                t.name,
                t.dims.len()
            )));
        }
        let Some((ty, ty_name)) = crate::input::gguf::plain_type(p.dtype) else {
            skipped.push((
                t.name.clone(),
                format!("GGUF has no {} type", p.dtype.name()),
            ));
            continue;
        };
        let mut quants = Vec::new();
        if let Some(st) = source_type.get(t.name.as_str()) {
            if Quant::named(st).is_none() && crate::input::gguf::is_block_type(st) {
                unwritable.push((t.name.as_str(), st));
            }
        }
        let blocks_fit = t.dims.len() >= 2
            && t.dims
                .last()
                .is_some_and(|&n| n > 0 && n % BLOCK as u64 == 0)
            && !t.dims.contains(&0);
        if opts.dtype == OutDType::Source && p.dtype.is_float() && blocks_fit {
            let hint = ar
                .pipeline(p.index)
                .ok()
                .and_then(|(_, pl)| pl.tensor_codec().ggml_block());
            for name in [source_type.get(t.name.as_str()).copied(), hint]
                .into_iter()
                .flatten()
            {
                if let Some(q) = Quant::named(name) {
                    if !quants.contains(&q) {
                        quants.push(q);
                    }
                }
            }
        }
        let ne = if t.dims.is_empty() {
            vec![1]
        } else {
            t.dims.iter().rev().copied().collect()
        };
        slots.push(Slot {
            name: t.name.clone(),
            ne,
            ty,
            ty_name,
            offset: 0,
        });
        tries.push(quants);
        kept.push(p);
    }
    if kept.is_empty() {
        return Err(Error::input(
            "no tensor GGUF can hold (see the skipped list)",
        ));
    }
    if let Some((name, ty)) = unwritable.first() {
        warnings.push(format!(
            "{} tensor{} stored from GGML block types tenpak does not write (first: '{name}', {ty}) \
             come out as floats; native blocks are Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1",
            unwritable.len(),
            if unwritable.len() == 1 { "" } else { "s" },
        ));
    }
    // The header's length does not depend on the types or offsets written into it later.
    let n_kv = kv.len();
    let head_len = header(&kv_bytes(&kv)?, n_kv, &slots).len() as u64;
    let data_start = head_len.next_multiple_of(alignment);

    super::create_parent(output)?;
    if !opts.force && output.exists() {
        return Err(Error::config(format!(
            "{} already exists (pass --force to overwrite)",
            output.display()
        )));
    }
    let total: u64 = kept.iter().map(|p| p.bytes).sum();
    cx.event(Event::Start {
        total_bytes: total,
        tensors: kept.len(),
    });
    let tmp = crate::atomic::create(output)?;
    let file = tmp.file();
    let io = |e| Error::io("write GGUF", e).with_file(output);
    let mut cursor = 0u64;
    let mut off_grid: Vec<(String, &'static str)> = Vec::new();
    for ((p, slot), quants) in kept.iter().zip(&mut slots).zip(&tries) {
        if cx.cancelled() {
            return Err(crate::progress::interrupted());
        }
        let t = &tensors[p.index];
        cx.event(Event::Tensor { name: &t.name });
        let offset = cursor.next_multiple_of(alignment);
        let at = data_start + offset;
        let mut size = None;
        for q in quants {
            if let Some(n) = write_blocks(ar, p.index, *q, file, at)? {
                (slot.ty, slot.ty_name, size) = (q.id, q.name, Some(n));
                break;
            }
        }
        let size = match size {
            Some(n) => n,
            None => {
                if let Some(q) = quants.first() {
                    off_grid.push((t.name.clone(), q.name));
                }
                super::write_plain(ar, p, file, at)?
            }
        };
        slot.offset = offset;
        cursor = offset + size;
        cx.event(Event::Advance { bytes: p.bytes });
    }
    // ggml pads every tensor's data, the last one included.
    let end = data_start + cursor.next_multiple_of(alignment);
    file.set_len(end).map_err(io)?;

    // The most common type written is what llama.cpp reports as the file's type.
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for s in &slots {
        *counts.entry(s.ty).or_default() += 1;
    }
    let common = counts
        .iter()
        .max_by_key(|(ty, n)| (**n, std::cmp::Reverse(**ty)))
        .map(|(ty, _)| *ty);
    if let (Some((_, _, v)), Some(ft)) = (
        kv.iter_mut().find(|(k, _, _)| k == "general.file_type"),
        common.and_then(file_type),
    ) {
        if v.as_u64() != Some(ft) {
            warnings.push(format!(
                "general.file_type set to {ft} (was {}): the tensor types written",
                clip(&v.to_json().to_string())
            ));
            *v = MetaValue::UInt(ft);
        }
    }
    if !off_grid.is_empty() {
        let (n, first) = (off_grid.len(), &off_grid[0]);
        warnings.push(format!(
            "{n} tensor{} written as floats: decoded values off the grid of the block type \
             tried (first: '{}', {}); a lossless or same-grid codec keeps the source's blocks",
            if n == 1 { "" } else { "s" },
            first.0,
            first.1
        ));
    }
    let head = header(&kv_bytes(&kv)?, n_kv, &slots);
    debug_assert_eq!(head.len() as u64, head_len);
    let mut padded = head;
    padded.resize(data_start as usize, 0);
    write_at(file, &padded, 0).map_err(io)?;
    let sync = crate::atomic::persist(tmp, opts.force)?;
    cx.event(Event::Finish);
    let types: Vec<(String, String)> = slots
        .iter()
        .map(|s| (s.name.clone(), s.ty_name.to_string()))
        .collect();
    Ok(DecompressReport {
        files: vec![output.to_path_buf()],
        tensors: slots.len(),
        data_bytes: cursor,
        skipped,
        sync_seconds: sync.as_secs_f64(),
        gguf_types: types,
        warnings,
    })
}

/// Values of decoded bytes as f32.
fn as_f32(decoded: DType, bytes: &[u8]) -> Vec<f32> {
    if decoded == DType::F32 {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    } else {
        let mut f = Vec::new();
        dtype::to_f32(decoded, bytes, &mut f);
        f
    }
}

/// Write tensor `i` as blocks of `q` at `at`; its byte size, or `None` (nothing valid written)
/// when a block is off the grid.
fn write_blocks(
    ar: &Archive,
    i: usize,
    q: Quant,
    file: &std::fs::File,
    at: u64,
) -> Result<Option<u64>> {
    let t = &ar.file.tensors()[i];
    let numel = t.numel().unwrap_or(0);
    let decoded = ar.decoded_dtype(i).map_err(|e| e.with_tensor(&t.name))?;
    let bs = q.bytes as u64;
    // Pieces need not end on a block: a block's values wait here until all have come.
    let mut pending: HashMap<u64, (Vec<f32>, usize)> = HashMap::new();
    let mut off = false;
    let io = |e| Error::io("write GGUF", e);
    let r = ar.decode_pieces(i, &mut |first, bytes| {
        let v = as_f32(decoded, bytes);
        let end = first + v.len() as u64;
        let head = (first.next_multiple_of(BLOCK as u64).min(end) - first) as usize;
        let whole = (v.len() - head) / BLOCK * BLOCK;
        let mut partial: Vec<(u64, f32)> = (0..head).map(|k| (first + k as u64, v[k])).collect();
        partial.extend((head + whole..v.len()).map(|k| (first + k as u64, v[k])));
        let mut out = vec![0u8; whole / BLOCK * q.bytes];
        let ok = out
            .par_chunks_mut(q.bytes)
            .zip(v[head..head + whole].par_chunks(BLOCK))
            .all(|(o, x)| q.encode_exact(x, o));
        if !ok {
            off = true;
            return Err(Error::internal("off grid"));
        }
        let b0 = (first + head as u64) / BLOCK as u64;
        write_at(file, &out, at + b0 * bs).map_err(io)?;
        for (e, x) in partial {
            let b = e / BLOCK as u64;
            let slot = pending.entry(b).or_insert_with(|| (vec![0f32; BLOCK], 0));
            slot.0[(e % BLOCK as u64) as usize] = x;
            slot.1 += 1;
            if slot.1 == BLOCK {
                let (vals, _) = pending.remove(&b).expect("present");
                let mut blk = vec![0u8; q.bytes];
                if !q.encode_exact(&vals, &mut blk) {
                    off = true;
                    return Err(Error::internal("off grid"));
                }
                write_at(file, &blk, at + b * bs).map_err(io)?;
            }
        }
        Ok(())
    });
    match r {
        Err(_) if off => Ok(None),
        Err(e) => Err(e.with_tensor(&t.name)),
        Ok(_) => {
            debug_assert!(pending.is_empty());
            Ok(Some(numel / BLOCK as u64 * bs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }
    }

    /// Blocks quantized as llama.cpp does come back bit for bit from their dequantized values,
    /// for every native type; values off the grid are refused.
    #[test]
    fn blocks_are_rederived_exactly() {
        let mut r = rng(7);
        for q in QUANTS {
            for trial in 0..200 {
                let scale = [1e-3f32, 0.05, 1.0, 30.0][trial % 4];
                let x: Vec<f32> = (0..BLOCK).map(|_| r() * scale).collect();
                // llama.cpp's reference quantizers (quantize_row_*_ref).
                let mut blk = vec![0u8; q.bytes];
                let mut codes = [0u8; BLOCK];
                let (d, m) = if q.asym {
                    let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let d = (hi - lo) / q.levels() as f32;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    for (c, &v) in codes.iter_mut().zip(&x) {
                        *c = (((v - lo) * id + 0.5) as i32).min(q.levels()) as u8;
                    }
                    (f16::from_f32(d), f16::from_f32(lo))
                } else if q.bits == 8 {
                    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    for (c, &v) in codes.iter_mut().zip(&x) {
                        *c = ((v * id).round() as i32 + 128) as u8;
                    }
                    (f16::from_f32(d), f16::ZERO)
                } else {
                    let max = x
                        .iter()
                        .copied()
                        .fold(0f32, |a, v| if v.abs() > a.abs() { v } else { a });
                    let d = max / -(q.bias() as f32);
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    for (c, &v) in codes.iter_mut().zip(&x) {
                        *c = ((v * id + q.bias() as f32 + 0.5) as i32).min(q.levels()) as u8;
                    }
                    (f16::from_f32(d), f16::ZERO)
                };
                q.pack(d, m, &codes, &mut blk);
                let mut y = vec![0f32; BLOCK];
                crate::input::gguf::dequantize(q.id, &blk, &mut y).unwrap();
                let mut again = vec![0u8; q.bytes];
                assert!(q.encode_exact(&y, &mut again), "{} trial {trial}", q.name);
                let mut y2 = vec![0f32; BLOCK];
                crate::input::gguf::dequantize(q.id, &again, &mut y2).unwrap();
                assert!(y.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()));
                assert_eq!(again, blk, "{} trial {trial}: same block bytes", q.name);
                // Off the grid: one value nudged by an ulp.
                let mut z = y.clone();
                z[5] = f32::from_bits(z[5].to_bits() + 1);
                let zero_ok = z.iter().all(|v| *v == 0.0);
                assert!(zero_ok || !q.encode_exact(&z, &mut again), "{}", q.name);
            }
            // Any block (a searched scale, as importance-weighted quantizers pick): random
            // codes, scale and offset. The block found may differ (codes all even, say); its
            // values may not.
            for trial in 0..300 {
                let mut codes = [0u8; BLOCK];
                let top = 1 + (r().abs() * 2.0 * q.levels() as f32) as i32 % q.levels();
                for c in codes.iter_mut() {
                    *c = (((r() + 0.5) * (top + 1) as f32) as u32 % (top as u32 + 1)) as u8;
                }
                // Offset types: a non-negative scale, as every quantizer writes.
                let d = f16::from_f32(if q.asym { r().abs() } else { r() } * 0.2);
                let m = f16::from_f32(if q.asym { r() } else { 0.0 });
                let mut blk = vec![0u8; q.bytes];
                q.pack(d, m, &codes, &mut blk);
                let mut y = vec![0f32; BLOCK];
                crate::input::gguf::dequantize(q.id, &blk, &mut y).unwrap();
                let mut again = vec![0u8; q.bytes];
                assert!(
                    q.encode_exact(&y, &mut again),
                    "{} random block {trial}",
                    q.name
                );
                let mut y2 = vec![0f32; BLOCK];
                crate::input::gguf::dequantize(q.id, &again, &mut y2).unwrap();
                assert!(y.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            // All zeros; a constant block (offset types).
            let mut b = vec![0u8; q.bytes];
            assert!(q.encode_exact(&[0.0; BLOCK], &mut b));
            assert!(q.encode_exact(&[0.5; BLOCK], &mut b));
            assert!(!q.encode_exact(&[f32::NAN; BLOCK], &mut b));
        }
    }

    #[test]
    fn metadata_values_keep_their_types() {
        let mut out = Vec::new();
        put_value(&mut out, "u8", &MetaValue::UInt(7), 0).unwrap();
        put_value(&mut out, "i16", &MetaValue::Int(-2), 0).unwrap();
        put_value(&mut out, "f32", &MetaValue::Float(0.1f32 as f64), 0).unwrap();
        assert_eq!(out[0], 7);
        assert_eq!(&out[1..3], &(-2i16).to_le_bytes());
        assert_eq!(&out[3..7], &0.1f32.to_le_bytes());
        assert!(put_value(&mut out, "u8", &MetaValue::UInt(300), 0).is_err());
        assert!(put_value(&mut out, "u32", &MetaValue::Int(-1), 0).is_err());
        assert!(put_value(&mut out, "bool", &MetaValue::UInt(1), 0).is_err());
        assert!(put_value(&mut out, "array:", &MetaValue::Array(vec![]), 0).is_err());
        assert!(put_value(&mut out, "nope", &MetaValue::UInt(1), 0).is_err());
        let mut a = Vec::new();
        let arr = MetaValue::Array(vec![
            MetaValue::Str("a".into()),
            MetaValue::Str("bc".into()),
        ]);
        put_value(&mut a, "array:string", &arr, 0).unwrap();
        assert_eq!(&a[0..4], &8u32.to_le_bytes());
        assert_eq!(&a[4..12], &2u64.to_le_bytes());
        assert_eq!(a.len(), 12 + 9 + 10);
        assert_eq!(
            infer_type(&MetaValue::Array(vec![
                MetaValue::UInt(1),
                MetaValue::Int(-1)
            ])),
            "array:i32"
        );
        assert_eq!(infer_type(&MetaValue::UInt(1 << 40)), "u64");
        assert_eq!(type_id("array:u32"), Some(9));
        assert_eq!(type_id("array"), None);
    }
}
