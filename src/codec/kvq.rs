//! `kvq` (id 25): KV-cache quantizers with real bit-packed integer codes (issue 14; the lossy
//! families of `../shared/kv.md` §3.4-3.5 and §5). Spec: formats-spec/kvq.md.
//!
//! One codec, five groupings of a `[T, row]` tensor (`row = H * D`):
//! - `tensor`: symmetric, one scale for the whole tensor, `max|x| / qmax` as the KV reference's
//!   `quant` computes it (bound from the tensor's amax);
//! - `channel`: asymmetric (scale and minimum, f16 each) per channel over `group` tokens, KIVI's
//!   keys;
//! - `token`: asymmetric per run of `group` elements of one token's row, KIVI's values;
//! - `block`: symmetric per run of `group` elements of a token's row, one f16 scale (the
//!   block-norm family with real codes);
//! - `step`: a fixed quantization step (the guaranteed-bound mode), codes zigzag-packed at the
//!   width the chunk needs.
//!
//! Any element can be kept exactly as a sparse outlier: the `outliers` fraction of the largest
//! magnitudes per chunk (dense-and-sparse), every non-finite value, and, when an error bound
//! `eb` is set, every element whose decoded value (in the source dtype) misses the original by
//! more than `eb`. That check runs on the decoded values, so the bound holds by construction.
//! Codes are packed LSB-first; the packed codes are zstd-compressed when that is smaller.
//! The codes are hand-packed because no bit-packing crate handles every width from 1 to 16 bits
//! and the layout must be the spec's exactly.

use super::zstd::{zstd_decode, zstd_encode};
use super::{Binds, Codec, CodecEntry, Props, TensorCodec, TensorFacts};
use crate::dtype::DType;
use crate::error::{Error, Result};
use half::f16;
use std::sync::Arc;

/// Registry id of `kvq`.
pub const KVQ_ID: u16 = 25;

const RAW: u8 = 0;
const CODES: u8 = 1;
const PACKED: u8 = 0;
const ZSTD: u8 = 1;

/// How elements share quantization parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// One symmetric scale per tensor.
    Tensor = 0,
    /// Asymmetric, per channel over `group` tokens (KIVI keys).
    Channel = 1,
    /// Asymmetric, per `group` elements of a token (KIVI values).
    Token = 2,
    /// Symmetric, one f16 scale per `group` elements of a token (block-norm).
    Block = 3,
    /// A fixed step; codes as wide as the chunk needs.
    Step = 4,
}

const NAMES: [&str; 5] = ["tensor", "channel", "token", "block", "step"];

/// The KV quantizer; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvqCodec {
    grouping: Grouping,
    /// Code width (1..=16); 0 for `step` (chosen per chunk).
    bits: u8,
    /// Outliers kept exactly, in units of 1/10000 of the chunk's elements.
    outliers_bp: u16,
    /// Tokens (channel) or elements (token, block) per group.
    group: u32,
    /// Elements per token, bound from the shape; 0 until bound.
    row: u64,
    /// `tensor`: the scale (`amax / qmax`, bound); `step`: the step.
    scale: f32,
    /// Largest absolute error allowed after decoding (0: no bound).
    eb: f32,
    /// A bound relative to the tensor's largest magnitude, turned into `eb` by the bind step.
    rel_eb: f32,
    /// Hadamard rotation block (a power of two dividing `row`); 0: none. `u32::MAX` until
    /// bound: "rotate each head", fixed from the last dimension by the bind step.
    rot: u32,
}

fn parse_f32(o: &mut super::Options, key: &str, default: f32) -> Result<f32> {
    match o.take(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<f32>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| {
                Error::config(format!("codec kvq: {key}={v} is not a non-negative number"))
            }),
    }
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: KVQ_ID,
    name: "kvq",
    version: 1,
    summary: "KV quantizer with bit-packed codes: group=tensor|channel|token|block|step, bits=1..16, size=tokens or elements per group, outliers=fraction kept exact, eb=absolute bound, rel-eb=bound relative to max|x|",
    from_options: |o| {
        let grouping = match o.choice("group", &NAMES)? {
            "channel" => Grouping::Channel,
            "token" => Grouping::Token,
            "block" => Grouping::Block,
            "step" => Grouping::Step,
            _ => Grouping::Tensor,
        };
        let bits = o.int("bits", 8, 1, 16)? as u8;
        let size = o.int("size", 64, 1, 1 << 24)? as u32;
        let outliers = parse_f32(o, "outliers", 0.0)?;
        if outliers > 0.5 {
            return Err(Error::config("codec kvq: outliers is a fraction of at most 0.5"));
        }
        let eb = parse_f32(o, "eb", 0.0)?;
        let rel_eb = parse_f32(o, "rel-eb", 0.0)?;
        let rot = match o.choice("rot", &["none", "hadamard"])? {
            "hadamard" => u32::MAX,
            _ => 0,
        };
        if grouping == Grouping::Step && eb == 0.0 && rel_eb == 0.0 {
            return Err(Error::config(
                "codec kvq: group=step needs a bound, eb=ABS or rel-eb=FRACTION",
            ));
        }
        let scale = if grouping == Grouping::Step {
            step_for(eb)
        } else {
            0.0
        };
        Ok(Codec::Tensor(Arc::new(KvqCodec {
            grouping,
            bits: if grouping == Grouping::Step { 0 } else { bits },
            outliers_bp: (outliers * 10000.0).round() as u16,
            group: size,
            row: 0,
            scale,
            eb,
            rel_eb,
            rot,
        })))
    },
    from_params: |p| {
        let bad = |m: &str| Error::bad_params(format!("kvq parameters: {m}"));
        if p.len() != 28 {
            return Err(bad("expected 28 bytes"));
        }
        let grouping = match p[0] {
            0 => Grouping::Tensor,
            1 => Grouping::Channel,
            2 => Grouping::Token,
            3 => Grouping::Block,
            4 => Grouping::Step,
            _ => return Err(bad("unknown grouping")),
        };
        let bits = p[1];
        let outliers_bp = u16::from_le_bytes([p[2], p[3]]);
        let group = u32::from_le_bytes(p[4..8].try_into().expect("4 bytes"));
        let row = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes"));
        let scale = f32::from_le_bytes(p[16..20].try_into().expect("4 bytes"));
        let eb = f32::from_le_bytes(p[20..24].try_into().expect("4 bytes"));
        let rot = u32::from_le_bytes(p[24..28].try_into().expect("4 bytes"));
        // The bind step never makes a block over MAX_ROT; a larger one would only make the
        // decoder build a sign pattern the file cannot justify.
        let rot_ok = rot == 0
            || ((2..=MAX_ROT).contains(&rot) && rot.is_power_of_two() && row % rot as u64 == 0);
        let bits_ok = if grouping == Grouping::Step {
            bits == 0
        } else {
            (1..=16).contains(&bits)
        };
        let scale_ok = match grouping {
            Grouping::Tensor => scale.is_finite() && scale >= 0.0,
            Grouping::Step => scale.is_finite() && scale > 0.0,
            _ => scale == 0.0,
        };
        if !bits_ok
            || outliers_bp > 5000
            || group == 0
            || row == 0
            || !scale_ok
            || !(eb.is_finite() && eb >= 0.0)
            || !rot_ok
        {
            return Err(bad("a field is out of range"));
        }
        Ok(Codec::Tensor(Arc::new(KvqCodec {
            grouping,
            bits,
            outliers_bp,
            group,
            row,
            scale,
            eb,
            rel_eb: 0.0,
            rot,
        })))
    },
};

/// The largest rotation block: the bind step takes the largest power of two dividing the last
/// dimension, up to this.
pub const MAX_ROT: u32 = 1 << 16;

/// Sign of element `j` of a rotation block (a fixed pattern, so that a block's mean does not
/// land in one coefficient): `-1` when bit 31 of `j * 0x9E3779B9` (wrapping u32) is set.
fn rot_sign(j: usize) -> f32 {
    if (j as u32).wrapping_mul(0x9E37_79B9) >> 31 == 1 {
        -1.0
    } else {
        1.0
    }
}

/// Rotate (`forward`: signs, then the transform) or rotate back (the transform, then signs)
/// every block of `rot` elements.
fn rotate(x: &mut [f32], rot: usize, forward: bool) {
    let signs: Vec<f32> = (0..rot).map(rot_sign).collect();
    super::rot::rotate(x, &signs, forward);
}

/// The step of the bound mode: 1.8 times the bound, so that the rounding error (half a step)
/// leaves a tenth of the bound to the cast into the output dtype; elements the cast still
/// pushes over become outliers.
fn step_for(eb: f32) -> f32 {
    1.8 * eb
}

/// Per-group parameters, as stored (f16) and as used (their f32 values).
#[derive(Clone, Copy, Default)]
struct GroupParams {
    scale: f32,
    zero: f32,
}

impl KvqCodec {
    /// A codec with these settings, bound to `row` elements per token (for library callers and
    /// tests; the command line goes through the registry).
    pub fn new(grouping: Grouping, bits: u8, group: u32, outliers: f32, eb: f32) -> KvqCodec {
        KvqCodec {
            grouping,
            bits: if grouping == Grouping::Step { 0 } else { bits },
            outliers_bp: (outliers * 10000.0).round() as u16,
            group,
            row: 0,
            scale: if grouping == Grouping::Step {
                step_for(eb)
            } else {
                0.0
            },
            eb,
            rel_eb: 0.0,
            rot: 0,
        }
    }

    fn qmax(&self) -> f32 {
        ((1u32 << (self.bits - 1)) - 1).max(1) as f32
    }

    /// Number of groups of a chunk of `n` elements (`n` a multiple of `row`) and the group of
    /// element `i`.
    fn groups(&self, n: usize) -> usize {
        let row = self.row as usize;
        let g = self.group as usize;
        let tokens = n / row;
        match self.grouping {
            Grouping::Tensor | Grouping::Step => 0,
            Grouping::Channel => tokens.div_ceil(g) * row,
            Grouping::Token | Grouping::Block => tokens * row.div_ceil(g),
        }
    }

    #[inline]
    fn group_of(&self, i: usize) -> usize {
        let row = self.row as usize;
        let g = self.group as usize;
        let (t, c) = (i / row, i % row);
        match self.grouping {
            Grouping::Tensor | Grouping::Step => 0,
            Grouping::Channel => (t / g) * row + c,
            Grouping::Token | Grouping::Block => t * row.div_ceil(g) + c / g,
        }
    }

    /// Bytes of the stored parameters per group.
    fn param_bytes(&self) -> usize {
        match self.grouping {
            Grouping::Channel | Grouping::Token => 4,
            Grouping::Block => 2,
            Grouping::Tensor | Grouping::Step => 0,
        }
    }

    /// The code of `x` in group `p`, and its reconstruction in f32.
    #[inline]
    fn quantize(&self, x: f32, p: GroupParams, bits: u8) -> u32 {
        match self.grouping {
            Grouping::Tensor | Grouping::Block => {
                let qmax = self.qmax();
                if p.scale == 0.0 {
                    return qmax as u32;
                }
                let q = (x / p.scale).round_ties_even().clamp(-qmax, qmax);
                (q + qmax) as u32
            }
            Grouping::Channel | Grouping::Token => {
                let top = ((1u32 << bits) - 1) as f32;
                if p.scale == 0.0 {
                    return 0;
                }
                ((x - p.zero) / p.scale).round_ties_even().clamp(0.0, top) as u32
            }
            Grouping::Step => {
                let q = (x / p.scale).round_ties_even() as i64;
                ((q << 1) ^ (q >> 63)) as u32
            }
        }
    }

    #[inline]
    fn dequantize(&self, code: u32, p: GroupParams) -> f32 {
        match self.grouping {
            Grouping::Tensor | Grouping::Block => (code as f32 - self.qmax()) * p.scale,
            Grouping::Channel | Grouping::Token => code as f32 * p.scale + p.zero,
            Grouping::Step => {
                let q = ((code >> 1) as i64) ^ -((code & 1) as i64);
                q as f32 * p.scale
            }
        }
    }
}

/// Write `v` as LEB128.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b
            .get(*at)
            .ok_or_else(|| Error::bad_length("kvq outlier positions are cut short"))?;
        *at += 1;
        v |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Error::bad_payload("kvq outlier gap is longer than 64 bits"))
}

/// Pack `codes` of `bits` each, LSB first.
pub(super) fn pack(codes: &[u32], bits: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity((codes.len() * bits as usize).div_ceil(8));
    let (mut acc, mut have) = (0u64, 0u32);
    for &c in codes {
        acc |= u64::from(c) << have;
        have += bits as u32;
        while have >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0 {
        out.push(acc as u8);
    }
    out
}

pub(super) fn unpack(b: &[u8], bits: u8, n: usize) -> Vec<u32> {
    let mask = (1u64 << bits) - 1;
    let mut out = Vec::with_capacity(n);
    let (mut acc, mut have, mut at) = (0u64, 0u32, 0usize);
    for _ in 0..n {
        while have < bits as u32 {
            acc |= u64::from(b[at]) << have;
            at += 1;
            have += 8;
        }
        out.push((acc & mask) as u32);
        acc >>= bits;
        have -= bits as u32;
    }
    out
}

fn widen(src: DType, bytes: &[u8]) -> Vec<f32> {
    match src {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

/// `x` rounded to `dst` (F32, F16 or BF16), as bytes appended to `out`.
fn narrow(dst: DType, x: f32, out: &mut [u8]) {
    match dst {
        DType::F32 => out.copy_from_slice(&x.to_le_bytes()),
        DType::F16 => out.copy_from_slice(&f16::from_f32(x).to_le_bytes()),
        _ => out.copy_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
    }
}

fn round_trip(dst: DType, x: f32) -> f32 {
    match dst {
        DType::F32 => x,
        DType::F16 => f16::from_f32(x).to_f32(),
        _ => half::bf16::from_f32(x).to_f32(),
    }
}

impl TensorCodec for KvqCodec {
    fn props(&self) -> Props {
        Props {
            decodes_to: None,
            sized: false,
            binds: if self.grouping == Grouping::Tensor || self.rel_eb > 0.0 {
                Binds::Amax
            } else {
                Binds::Shape
            },
            chunk_multiple: match self.grouping {
                Grouping::Channel => self.row.max(1).saturating_mul(self.group as u64),
                _ => self.row.max(1),
            },
            ..Props::lossy(KVQ_ID, "kvq")
        }
    }

    fn params(&self) -> Vec<u8> {
        let mut p = vec![self.grouping as u8, self.bits];
        p.extend_from_slice(&self.outliers_bp.to_le_bytes());
        p.extend_from_slice(&self.group.to_le_bytes());
        p.extend_from_slice(&self.row.to_le_bytes());
        p.extend_from_slice(&self.scale.to_le_bytes());
        p.extend_from_slice(&self.eb.to_le_bytes());
        p.extend_from_slice(&self.rot.to_le_bytes());
        p
    }

    fn spec(&self) -> String {
        let mut s = format!("kvq:group={}", NAMES[self.grouping as usize]);
        if self.grouping != Grouping::Step {
            s.push_str(&format!(",bits={}", self.bits));
        }
        if matches!(
            self.grouping,
            Grouping::Channel | Grouping::Token | Grouping::Block
        ) {
            s.push_str(&format!(",size={}", self.group));
        }
        if self.outliers_bp > 0 {
            s.push_str(&format!(",outliers={}", self.outliers_bp as f32 / 10000.0));
        }
        if self.rot != 0 {
            s.push_str(",rot=hadamard");
        }
        if self.rel_eb > 0.0 {
            s.push_str(&format!(",rel-eb={}", self.rel_eb));
        } else if self.eb > 0.0 {
            s.push_str(&format!(",eb={}", self.eb));
        }
        s
    }

    fn bind(&self, t: &TensorFacts<'_>) -> Option<Arc<dyn TensorCodec>> {
        let row = match t.dims {
            [] | [_] => 1,
            [_, rest @ ..] => rest.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?,
        }
        .max(1);
        let mut c = KvqCodec { row, ..*self };
        if self.rot != 0 {
            // Each head's vector: the largest power of two dividing the last dimension.
            let last = t.dims.last().copied().unwrap_or(1).max(1);
            let p2 = 1u64 << last.trailing_zeros().min(MAX_ROT.trailing_zeros());
            c.rot = if p2 >= 2 { p2 as u32 } else { 0 };
        }
        if let Some(amax) = t.amax {
            if self.rel_eb > 0.0 {
                c.eb = self.rel_eb * amax;
                if c.grouping == Grouping::Step {
                    c.scale = step_for(c.eb);
                }
                if c.eb == 0.0 && c.grouping == Grouping::Step {
                    // An all-zero tensor: any positive step reconstructs it.
                    c.scale = 1.0;
                }
            }
            if c.grouping == Grouping::Tensor {
                // The reference's scale, computed in f32.
                c.scale = amax / self.qmax();
            }
        }
        Some(Arc::new(c))
    }

    fn max_encoded_len(&self, src: DType, n: usize) -> usize {
        n.saturating_mul(src.size()).saturating_add(1)
    }

    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let raw = || super::stored_payload(RAW, bytes);
        if !matches!(src, DType::F32 | DType::F16 | DType::BF16) {
            return Ok(raw());
        }
        if self.row == 0 {
            return Err(Error::config(
                "kvq needs the tensor's shape (encode whole tensors)",
            ));
        }
        if self.grouping == Grouping::Tensor && self.scale == 0.0 {
            // An all-zero tensor (or one not bound to its amax): the reference keeps it as is.
            return Ok(raw());
        }
        let n = bytes.len() / src.size();
        let row = self.row as usize;
        if !n.is_multiple_of(row) {
            return Err(Error::internal(format!(
                "kvq chunk of {n} elements is not whole tokens of {row}"
            )));
        }
        if self.rot == u32::MAX {
            return Err(Error::config("kvq rot=hadamard needs the tensor's shape"));
        }
        let rot = self.rot as usize;
        let x = widen(src, bytes);
        // Outliers: every non-finite value (with a rotation, its whole block), then the largest
        // magnitudes.
        let mut exact = vec![false; n];
        let mut n_exact = 0usize;
        for (i, v) in x.iter().enumerate() {
            if !v.is_finite() {
                let (a, b) = match i.checked_div(rot) {
                    Some(q) => (q * rot, q * rot + rot),
                    None => (i, i + 1),
                };
                for e in &mut exact[a..b] {
                    if !*e {
                        *e = true;
                        n_exact += 1;
                    }
                }
            }
        }
        let k = n * self.outliers_bp as usize / 10000;
        if k > n_exact {
            let mut mags: Vec<(u32, u32)> = x
                .iter()
                .enumerate()
                .filter(|(i, _)| !exact[*i])
                .map(|(i, v)| (v.abs().to_bits(), i as u32))
                .collect();
            let take = (k - n_exact).min(mags.len());
            if take > 0 {
                // Largest magnitude first, then lowest index: deterministic under ties.
                mags.select_nth_unstable_by(take - 1, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                for &(_, i) in &mags[..take] {
                    exact[i as usize] = true;
                }
                n_exact += take;
            }
        }
        // What is quantized: x, or with a rotation, x with the exact elements zeroed, rotated.
        // Without a rotation the exact elements are left out of the group ranges; with one,
        // every rotated value counts (each one feeds the whole block back).
        let (y, in_range) = if rot > 0 {
            let mut y: Vec<f32> = x
                .iter()
                .zip(&exact)
                .map(|(v, e)| if *e { 0.0 } else { *v })
                .collect();
            rotate(&mut y, rot, true);
            (y, vec![false; n])
        } else {
            (x.clone(), exact.clone())
        };
        let skip = |i: usize| in_range[i];
        // Group parameters.
        let ng = self.groups(n);
        let mut params = vec![GroupParams::default(); ng];
        let mut stored = Vec::with_capacity(ng * self.param_bytes());
        let bits = match self.grouping {
            Grouping::Tensor => {
                params.push(GroupParams {
                    scale: self.scale,
                    zero: 0.0,
                });
                self.bits
            }
            Grouping::Step => {
                params.push(GroupParams {
                    scale: self.scale,
                    zero: 0.0,
                });
                let top = y
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !skip(*i))
                    .map(|(_, v)| (v / self.scale).round_ties_even().abs())
                    .fold(0f32, f32::max);
                if top >= (1u32 << 15) as f32 {
                    // Codes wider than 16 bits: not worth it, and the spec caps the width.
                    return Ok(raw());
                }
                let zz = 2 * top as u32 + 1;
                (32 - zz.leading_zeros()).max(1) as u8
            }
            Grouping::Channel | Grouping::Token | Grouping::Block => {
                let mut lo = vec![f32::INFINITY; ng];
                let mut hi = vec![f32::NEG_INFINITY; ng];
                for (i, v) in y.iter().enumerate() {
                    if !skip(i) {
                        let g = self.group_of(i);
                        lo[g] = lo[g].min(*v);
                        hi[g] = hi[g].max(*v);
                    }
                }
                let top = ((1u32 << self.bits) - 1) as f32;
                for g in 0..ng {
                    let (l, h) = if lo[g] <= hi[g] {
                        (lo[g], hi[g])
                    } else {
                        (0.0, 0.0)
                    };
                    let p = if self.grouping == Grouping::Block {
                        // Round the scale up so every normalized value stays within ±1.
                        let m = l.abs().max(h.abs());
                        let mut s = f16::from_f32(m);
                        if s.to_f32() < m {
                            s = f16::from_bits(s.to_bits() + 1);
                        }
                        stored.extend_from_slice(&s.to_le_bytes());
                        GroupParams {
                            scale: s.to_f32() / self.qmax(),
                            zero: 0.0,
                        }
                    } else {
                        let z = f16::from_f32(l);
                        let s = f16::from_f32((h - z.to_f32()) / top);
                        stored.extend_from_slice(&s.to_le_bytes());
                        stored.extend_from_slice(&z.to_le_bytes());
                        GroupParams {
                            scale: s.to_f32(),
                            zero: z.to_f32(),
                        }
                    };
                    if !p.scale.is_finite() || !p.zero.is_finite() {
                        // Out of f16's range (an f32 cache): this chunk is stored raw.
                        return Ok(raw());
                    }
                    params[g] = p;
                }
                self.bits
            }
        };
        let per_tensor = matches!(self.grouping, Grouping::Tensor | Grouping::Step);
        let mut codes = vec![0u32; n];
        let mut recon = vec![0f32; n];
        for i in 0..n {
            if skip(i) {
                continue;
            }
            let p = if per_tensor {
                params[0]
            } else {
                params[self.group_of(i)]
            };
            codes[i] = self.quantize(y[i], p, bits);
            recon[i] = self.dequantize(codes[i], p);
        }
        if rot > 0 {
            rotate(&mut recon, rot, false);
        }
        for i in 0..n {
            if exact[i] {
                if rot == 0 {
                    codes[i] = 0;
                }
                continue;
            }
            let back = round_trip(src, recon[i]);
            let err = (back - x[i]).abs();
            if !back.is_finite() || (self.eb > 0.0 && err > self.eb) {
                exact[i] = true;
                n_exact += 1;
                if rot == 0 {
                    codes[i] = 0;
                }
            }
        }
        let mut out = Vec::with_capacity(n * bits as usize / 8 + 64);
        out.push(CODES);
        out.push(bits);
        out.extend_from_slice(&(n_exact as u32).to_le_bytes());
        let mut prev: Option<usize> = None;
        for (i, _) in exact.iter().enumerate().filter(|(_, e)| **e) {
            put_varint(&mut out, (i - prev.map_or(0, |p| p + 1)) as u64);
            prev = Some(i);
        }
        let es = src.size();
        for (i, _) in exact.iter().enumerate().filter(|(_, e)| **e) {
            out.extend_from_slice(&bytes[i * es..(i + 1) * es]);
        }
        out.extend_from_slice(&stored);
        let packed = pack(&codes, bits);
        let z = zstd_encode(&packed, 3)?;
        if z.len() < packed.len() {
            out.push(ZSTD);
            out.extend_from_slice(&z);
        } else {
            out.push(PACKED);
            out.extend_from_slice(&packed);
        }
        if out.len() > bytes.len() + 1 {
            return Ok(raw());
        }
        Ok(out)
    }

    fn decode(&self, payload: &[u8], src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let Some((&mode, body)) = payload.split_first() else {
            return Err(Error::bad_length("kvq payload is empty"));
        };
        if mode == RAW {
            return super::stored_body("kvq", body, out);
        }
        if mode != CODES {
            return Err(Error::bad_payload(format!("kvq mode {mode} is unknown")));
        }
        if !matches!(src, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::bad_payload(format!("kvq codes for {src}")));
        }
        let row = self.row as usize;
        if !n.is_multiple_of(row) {
            return Err(Error::bad_length(format!(
                "kvq chunk of {n} elements is not whole tokens of {row}"
            )));
        }
        let short = || Error::bad_length("kvq payload is cut short");
        if body.len() < 5 {
            return Err(short());
        }
        let bits = body[0];
        let bits_ok = match self.grouping {
            Grouping::Step => (1..=16).contains(&bits),
            _ => bits == self.bits,
        };
        if !bits_ok {
            return Err(Error::bad_payload(format!("kvq code width {bits}")));
        }
        let n_exact = u32::from_le_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        if n_exact > n {
            return Err(Error::bad_payload(format!(
                "kvq: {n_exact} outliers in a chunk of {n} elements"
            )));
        }
        let mut at = 5usize;
        let mut positions = Vec::with_capacity(n_exact.min(body.len()));
        let mut next = 0u64;
        for _ in 0..n_exact {
            let p = next
                .checked_add(get_varint(body, &mut at)?)
                .filter(|&p| p < n as u64)
                .ok_or_else(|| Error::bad_payload("kvq outlier position past the chunk"))?;
            positions.push(p as usize);
            next = p + 1;
        }
        let es = src.size();
        let values_end = at
            .checked_add(n_exact * es)
            .filter(|&e| e <= body.len())
            .ok_or_else(short)?;
        let values = &body[at..values_end];
        at = values_end;
        let ng = self.groups(n);
        let pb = ng * self.param_bytes();
        let stored = body.get(at..at + pb).ok_or_else(short)?;
        at += pb;
        let mut params = match self.grouping {
            Grouping::Tensor | Grouping::Step => vec![GroupParams {
                scale: self.scale,
                zero: 0.0,
            }],
            _ => Vec::with_capacity(ng),
        };
        let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        match self.grouping {
            Grouping::Channel | Grouping::Token => {
                for p in stored.chunks_exact(4) {
                    params.push(GroupParams {
                        scale: h(&p[..2]),
                        zero: h(&p[2..]),
                    })
                }
            }
            Grouping::Block => {
                for p in stored.chunks_exact(2) {
                    params.push(GroupParams {
                        scale: h(p) / self.qmax(),
                        zero: 0.0,
                    })
                }
            }
            _ => {}
        }
        let (&packing, rest) = body[at..].split_first().ok_or_else(short)?;
        let want = (n * bits as usize).div_ceil(8);
        let packed = match packing {
            PACKED => std::borrow::Cow::Borrowed(rest),
            ZSTD => std::borrow::Cow::Owned(zstd_decode(rest, want)?),
            p => return Err(Error::bad_payload(format!("kvq code packing {p}"))),
        };
        if packed.len() != want {
            return Err(Error::bad_length(format!(
                "kvq codes are {} bytes, expected {want}",
                packed.len()
            )));
        }
        super::check_pad_bits(&packed, n as u64 * bits as u64, "kvq codes")?;
        let codes = unpack(&packed, bits, n);
        let per_tensor = params.len() == 1 && ng == 0;
        let mut recon: Vec<f32> = codes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = if per_tensor {
                    params[0]
                } else {
                    params[self.group_of(i)]
                };
                self.dequantize(*c, p)
            })
            .collect();
        if self.rot > 0 {
            if self.rot == u32::MAX {
                return Err(Error::bad_params("kvq rotation block not bound"));
            }
            rotate(&mut recon, self.rot as usize, false);
        }
        for (v, o) in recon.iter().zip(out.chunks_exact_mut(es)) {
            narrow(src, *v, o);
        }
        for (j, &p) in positions.iter().enumerate() {
            out[p * es..(p + 1) * es].copy_from_slice(&values[j * es..(j + 1) * es]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Pipeline;

    fn kv(t: usize, h: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut x = seed | 1;
        (0..t * h * d)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = (x % 20000) as f32 / 10000.0 - 1.0;
                if i % d == 5 {
                    v * 30.0 + 8.0 // an outlier channel with an offset, as keys have
                } else {
                    v
                }
            })
            .collect()
    }

    fn run(spec: &str, dt: DType, dims: &[u64], vals: &[f32]) -> (Vec<f32>, usize) {
        let mut b = Vec::new();
        crate::dtype::from_f32(dt, vals, &mut b).unwrap();
        let amax = vals
            .iter()
            .filter(|v| v.is_finite())
            .fold(0f32, |a, v| a.max(v.abs()));
        let p = Pipeline::parse(spec).unwrap().bind(&TensorFacts {
            dims,
            amax: Some(amax),
            values: None,
        });
        let enc = p.encode(dt, &b).unwrap();
        let back = Pipeline::from_stages(&p.stages()).unwrap();
        let dec = back.decode(&enc, dt, vals.len(), u64::MAX).unwrap();
        // Decoding is deterministic and encoding too.
        assert_eq!(p.encode(dt, &b).unwrap(), enc);
        (widen(dt, &dec), enc.len())
    }

    #[test]
    fn per_tensor_quant_is_the_references() {
        // Reference: scale = amax / qmax; q = round_half_even(x / scale); x^ = f16(q * scale).
        let vals = kv(16, 3, 64, 7);
        let x16: Vec<f32> = vals.iter().map(|v| f16::from_f32(*v).to_f32()).collect();
        let (dec, _) = run("kvq:group=tensor,bits=8", DType::F16, &[16, 3, 64], &x16);
        let amax = x16.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = amax / 127.0;
        for (a, b) in x16.iter().zip(&dec) {
            let q = (a / scale).round_ties_even().clamp(-127.0, 127.0);
            assert_eq!(*b, f16::from_f32(q * scale).to_f32());
        }
    }

    #[test]
    fn groupings_round_trip_within_their_step() {
        let (t, h, d) = (37usize, 3usize, 64usize);
        let vals = kv(t, h, d, 11);
        for dt in [DType::F16, DType::BF16, DType::F32] {
            let xs: Vec<f32> = widen(dt, &{
                let mut b = Vec::new();
                crate::dtype::from_f32(dt, &vals, &mut b).unwrap();
                b
            });
            for spec in [
                "kvq:group=channel,bits=4,size=32",
                "kvq:group=token,bits=4,size=64",
                "kvq:group=block,bits=8,size=64",
                "kvq:group=channel,bits=2,size=16,outliers=0.01",
                "kvq:group=token,bits=3,size=128,outliers=0.02",
                "kvq:group=token,bits=4,size=64,rot=hadamard",
                "kvq:group=channel,bits=4,size=32,rot=hadamard,outliers=0.01",
            ] {
                let (dec, len) = run(spec, dt, &[t as u64, h as u64, d as u64], &xs);
                let err = xs
                    .iter()
                    .zip(&dec)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                // The largest group range is the outlier channel's, ~60: half a step of it.
                let bits: u32 = spec.split("bits=").nth(1).unwrap()[..1].parse().unwrap();
                let bound = 62.0 / ((1u32 << bits) - 1) as f32 * 0.51 + 0.07;
                assert!(err <= bound, "{spec} {dt}: max error {err} > {bound}");
                assert!(len < xs.len() * dt.size(), "{spec} {dt}: {len} bytes");
            }
        }
    }

    #[test]
    fn bound_holds_in_the_output_dtype_and_odd_values_stay_exact() {
        let (t, h, d) = (9usize, 2usize, 16usize);
        let mut vals = kv(t, h, d, 3);
        vals[0] = -0.0;
        vals[1] = f32::from_bits(1); // an f32 subnormal
        vals[2] = f32::INFINITY;
        vals[3] = f32::NAN;
        vals[4] = 6e-8; // an f16 subnormal
        vals[7] = f32::NEG_INFINITY;
        for dt in [DType::F16, DType::BF16, DType::F32] {
            let mut b = Vec::new();
            crate::dtype::from_f32(dt, &vals, &mut b).unwrap();
            let xs = widen(dt, &b);
            for spec in [
                "kvq:group=step,eb=0.01",
                "kvq:group=step,rel-eb=0.001",
                "kvq:group=channel,bits=4,size=4,eb=0.05",
                "kvq:group=token,bits=2,size=16,eb=0.02",
                "kvq:group=tensor,bits=6,eb=0.1",
                "kvq:group=token,bits=3,size=16,eb=0.05,rot=hadamard",
                "kvq:group=step,eb=0.01,rot=hadamard",
            ] {
                for dims in [[t as u64, h as u64, d as u64], [1, h as u64, d as u64]] {
                    let m = dims.iter().product::<u64>() as usize;
                    let amax = xs[..m]
                        .iter()
                        .filter(|v| v.is_finite())
                        .fold(0f32, |a, v| a.max(v.abs()));
                    let eb = if spec.contains("rel-eb") {
                        0.001 * amax
                    } else {
                        spec.split("eb=")
                            .nth(1)
                            .unwrap()
                            .split(',')
                            .next()
                            .unwrap()
                            .parse()
                            .unwrap()
                    };
                    let (dec, _) = run(spec, dt, &dims, &xs[..m]);
                    for (i, (a, b)) in xs[..m].iter().zip(&dec).enumerate() {
                        if a.is_finite() {
                            assert!((a - b).abs() <= eb, "{spec} {dt} [{i}]: {a} -> {b}");
                        } else {
                            assert_eq!(a.to_bits(), b.to_bits(), "{spec} {dt}: non-finite kept");
                        }
                    }
                }
            }
        }
    }

    /// formats-spec/kvq.md's test vector.
    #[test]
    fn decodes_the_spec_vector() {
        let c = KvqCodec {
            row: 1,
            ..KvqCodec::new(Grouping::Channel, 2, 2, 0.0, 0.0)
        };
        let payload = [0x01, 0x02, 0, 0, 0, 0, 0x55, 0x39, 0x00, 0x3C, 0x00, 0x0C];
        let mut out = [0u8; 4];
        c.decode(&payload, DType::F16, 2, &mut out).unwrap();
        assert_eq!(widen(DType::F16, &out), [1.0, 3.0]);
        // The writer computes the same group and codes (and stores the tiny chunk raw).
        let mut b = Vec::new();
        crate::dtype::from_f32(DType::F16, &[1.0, 3.0], &mut b).unwrap();
        assert_eq!(c.encode(DType::F16, &b).unwrap()[0], RAW);
    }

    #[test]
    fn rotation_is_orthonormal_and_inverts() {
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let orig = x.clone();
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
        rotate(&mut x, 64, true);
        assert!((norm(&x) - norm(&orig)).abs() < 1e-4);
        rotate(&mut x, 64, false);
        for (a, b) in x.iter().zip(&orig) {
            assert!((a - b).abs() < 1e-5);
        }
        // Length 2: signs (+1, -1) then [[1, 1], [1, -1]] / sqrt(2).
        let mut two = [1.0f32, 1.0];
        rotate(&mut two, 2, true);
        assert_eq!((rot_sign(0), rot_sign(1)), (1.0, -1.0));
        assert!(two[0].abs() < 1e-7 && (two[1] - 2f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn packing_round_trips_every_width() {
        for bits in 1..=16u8 {
            let codes: Vec<u32> = (0..77u32)
                .map(|i| i.wrapping_mul(2654435761) & ((1 << bits) - 1))
                .collect();
            assert_eq!(unpack(&pack(&codes, bits), bits, codes.len()), codes);
        }
    }

    #[test]
    fn damaged_payloads_are_errors() {
        let vals = kv(8, 2, 16, 5);
        let mut b = Vec::new();
        crate::dtype::from_f32(DType::F16, &vals, &mut b).unwrap();
        let p = Pipeline::parse("kvq:group=channel,bits=4,size=8,outliers=0.05")
            .unwrap()
            .bind(&TensorFacts {
                dims: &[8, 2, 16],
                amax: None,
                values: None,
            });
        let enc = p.encode(DType::F16, &b).unwrap();
        assert_eq!(enc[0], CODES);
        for cut in 0..enc.len() {
            assert!(p.decode(&enc[..cut], DType::F16, 256, u64::MAX).is_err());
        }
        let mut bad = enc.clone();
        bad[1] = 9; // another code width
        assert!(p.decode(&bad, DType::F16, 256, u64::MAX).is_err());
    }
}
