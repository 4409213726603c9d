//! Uniform integer quantization: `int` (id 20) and `int4_residual` (id 21). Spec:
//! formats-spec/int.md.
//!
//! `int` cuts a chunk into groups of `g` consecutive elements (row-major; the last group of a
//! chunk may be shorter) and stores, per group, a scale (and for `zero=asym` an offset) as f16
//! or f32, then every element's `bits`-bit code, densely bit-packed (LSB first; 3-bit codes too).
//! Symmetric: `x ~ (c - 2^(b-1)) * s`, `s = amax / (2^(b-1) - 1)`. Asymmetric:
//! `x ~ m + c * s`, `m = min`, `s = (max - min) / (2^b - 1)`. Codes round half to even, with
//! the stored (rounded) scale and offset. `fit=als` (the `int4_opt` recipe) refines each
//! group's scale and offset by alternating least squares; the payload is the same.
//!
//! Options: `bits=2..8`, `zero=sym|asym`, `group=N|row|tensor` (`row`: one group per row of
//! the tensor's `[prod(leading), last]` view, i.e. per output channel of a Linear weight;
//! `tensor`: one group), `scale=f16|f32`, `fit=minmax|als`, `iters=N` (ALS steps).
//! Names: `int8`, `int4_g32`, `int4_row_asym`, `int2_tensor_f32`, `int4_opt` (= int:bits=4,
//! zero=asym,group=8,fit=als), `int4_residual` (INT4 + INT2 residual, groups of 16).
//!
//! `int4_residual`: an `int:bits=4,zero=asym,group=G` payload of the values, then an
//! `int:bits=2,zero=asym,group=G` payload of what is left (`x - decode(first)`); decoding adds
//! the two (the experiment log's `int4_residual_v1`, G = 16).

use super::{Binds, Codec, CodecEntry, Options, Props, TensorCodec, TensorFacts};
use crate::dtype::DType;
use crate::error::{Error, Result};
use half::f16;
use std::sync::Arc;

/// Registry id of `int`.
pub const INT_ID: u16 = 20;
/// Registry id of `int4_residual`.
pub const RESIDUAL_ID: u16 = 21;

/// How a group's scale and offset are chosen (the payload does not depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// From the group's extremes.
    MinMax,
    /// Alternating least squares from the min/max start, `iters` steps.
    Als(u8),
}

/// Grouping as asked; `row`, `tensor` and `axis` are fixed per tensor
/// (the bind step, [`TensorCodec::bind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `g` consecutive elements.
    Elems(u64),
    /// One row of the 2-D view.
    Row,
    /// The whole tensor.
    Tensor,
    /// One scale per index along axis `k` (per channel).
    Axis(u8),
    /// Per channel, fixed for a tensor: element `j` belongs to channel `(j / inner) % channels`;
    /// a chunk holds the whole tensor.
    Channels {
        /// Channels (the axis' length).
        channels: u64,
        /// Elements after the axis (product of the later dimensions).
        inner: u64,
    },
}

/// A uniform quantizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntCodec {
    /// Bits per code, 2 to 8.
    pub bits: u8,
    /// Asymmetric (offset per group) rather than symmetric.
    pub asym: bool,
    /// Scales stored as f32 rather than f16.
    pub f32_scale: bool,
    /// Grouping.
    pub group: Group,
    /// Encoder's fit.
    pub fit: Fit,
}

impl IntCodec {
    /// Scale (and offset) count for a chunk of `n` elements.
    fn param_count(&self, n: usize) -> Result<usize> {
        match self.group {
            Group::Elems(g) => {
                let g = usize::try_from(g)
                    .map_err(|_| Error::bad_params(format!("int group {g} is too large")))?;
                Ok(n.div_ceil(g.max(1)))
            }
            Group::Channels { channels, .. } => usize::try_from(channels)
                .map_err(|_| Error::bad_params(format!("int: {channels} channels"))),
            _ => Err(Error::config(
                "int: group=row, group=tensor and axis= need the tensor's shape (encode whole tensors)",
            )),
        }
    }

    /// Which scale element `j` of a chunk uses.
    #[inline]
    fn param_of(&self, j: usize) -> usize {
        match self.group {
            Group::Elems(g) => j / g as usize,
            Group::Channels { channels, inner } => (j / inner as usize) % channels as usize,
            _ => 0,
        }
    }

    fn param_bytes(&self) -> usize {
        if self.f32_scale {
            4
        } else {
            2
        }
    }

    /// Payload bytes of a chunk of `n` elements.
    pub fn payload_len(&self, n: usize) -> Result<usize> {
        let per = self.param_bytes() * (1 + self.asym as usize);
        self.param_count(n)?
            .checked_mul(per)
            .and_then(|p| p.checked_add(n.checked_mul(self.bits as usize)?.div_ceil(8)))
            .ok_or_else(|| Error::bad_params(format!("int: a chunk of {n} elements overflows")))
    }

    /// Round a scale or offset to its stored type.
    fn store(&self, v: f32) -> f32 {
        if self.f32_scale {
            v
        } else {
            f16::from_f32(v).to_f32()
        }
    }

    /// A group's scale and offset, as stored.
    fn fit_group(&self, x: &[f32]) -> Result<(f32, f32)> {
        let b = self.bits as u32;
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        if x.is_empty() {
            return Ok((0.0, 0.0));
        }
        let check = |v: f32, what: &str| -> Result<f32> {
            let s = self.store(v);
            if s.is_finite() {
                Ok(s)
            } else {
                Err(Error::input(format!(
                    "a group {what} of {v} overflows f16; use scale=f32"
                )))
            }
        };
        if !self.asym {
            let qmax = ((1u32 << (b - 1)) - 1) as f32;
            return Ok((check(lo.abs().max(hi.abs()) / qmax, "scale")?, 0.0));
        }
        let levels = ((1u32 << b) - 1) as f32;
        let (mut s, mut m) = ((hi - lo) / levels, lo);
        if let Fit::Als(iters) = self.fit {
            (s, m) = als(x, s, m, levels, iters);
        }
        Ok((check(s, "scale")?, check(m, "offset")?))
    }

    /// The code of `v` under a stored scale and offset.
    #[inline]
    fn code(&self, v: f32, s: f32, m: f32) -> u8 {
        let mut one = [0u8];
        self.codes_into(&[v], s, m, &mut one);
        one[0]
    }

    /// Codes of one group's values under its stored scale and offset (a loop the compiler
    /// vectorizes: no branches, rounding by the 1.5 * 2^23 trick, exact for |t| <= 2^22,
    /// which the clamp guarantees).
    #[inline]
    fn codes_into(&self, vals: &[f32], s: f32, m: f32, out: &mut [u8]) {
        const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
        let b = self.bits as u32;
        if s <= 0.0 {
            let z = if self.asym {
                0
            } else {
                (1u32 << (b - 1)) as u8
            };
            out.fill(z);
            return;
        }
        if self.asym {
            let levels = ((1u32 << b) - 1) as f32;
            for (o, &v) in out.iter_mut().zip(vals) {
                let t = ((v - m) / s).clamp(0.0, levels);
                *o = ((t + MAGIC) - MAGIC) as u8;
            }
        } else {
            let qmax = ((1u32 << (b - 1)) - 1) as f32;
            let bias = (1u32 << (b - 1)) as f32;
            for (o, &v) in out.iter_mut().zip(vals) {
                let t = (v / s).clamp(-qmax, qmax);
                *o = (((t + MAGIC) - MAGIC) + bias) as u8;
            }
        }
    }

    /// Encode f32 values.
    pub fn encode_f32(&self, vals: &[f32]) -> Result<Vec<u8>> {
        if let Some(bad) = vals.iter().find(|v| !v.is_finite()) {
            let k = vals.iter().filter(|v| !v.is_finite()).count();
            return Err(Error::input(format!(
                "{k} non-finite values (first {bad}); int quantization takes finite weights only"
            )));
        }
        let np = self.param_count(vals.len())?;
        let params: Vec<(f32, f32)> = match self.group {
            Group::Elems(g) => vals
                .chunks(g as usize)
                .map(|grp| self.fit_group(grp))
                .collect::<Result<_>>()?,
            _ => {
                // Per channel: gather each channel's values (strided), fit, in channel order.
                let mut by = vec![Vec::new(); np];
                for (j, &v) in vals.iter().enumerate() {
                    by[self.param_of(j)].push(v);
                }
                by.iter()
                    .map(|grp| self.fit_group(grp))
                    .collect::<Result<_>>()?
            }
        };
        let mut codes = vec![0u8; vals.len()];
        match self.group {
            Group::Elems(g) => {
                for ((grp, c), &(s, m)) in vals
                    .chunks(g as usize)
                    .zip(codes.chunks_mut(g as usize))
                    .zip(&params)
                {
                    self.codes_into(grp, s, m, c);
                }
            }
            _ => {
                for (j, (c, &v)) in codes.iter_mut().zip(vals).enumerate() {
                    let (s, m) = params[self.param_of(j)];
                    *c = self.code(v, s, m);
                }
            }
        }
        self.payload(&params, &codes)
    }

    /// The payload of a chunk: its groups' stored scales and offsets, then the codes.
    pub(super) fn payload(&self, params: &[(f32, f32)], codes: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.payload_len(codes.len())?);
        let put = |out: &mut Vec<u8>, v: f32| {
            if self.f32_scale {
                out.extend_from_slice(&v.to_le_bytes());
            } else {
                out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        };
        for &(s, _) in params {
            put(&mut out, s);
        }
        if self.asym {
            for &(_, m) in params {
                put(&mut out, m);
            }
        }
        pack(codes, self.bits as u32, &mut out);
        Ok(out)
    }

    /// The group size of `group=N` codecs.
    pub(super) fn group_elems(&self) -> Option<usize> {
        match self.group {
            Group::Elems(g) => usize::try_from(g).ok(),
            _ => None,
        }
    }

    /// A value's reconstruction under a group's stored scale and offset.
    #[inline]
    pub(super) fn dequant(&self, v: f32, s: f32, m: f32) -> f32 {
        let c = self.code(v, s, m) as f32;
        if self.asym {
            m + c * s
        } else {
            (c - (1u32 << (self.bits - 1)) as f32) * s
        }
    }

    /// Codes of values under a group's stored scale and offset.
    pub(super) fn codes_of(&self, vals: &[f32], s: f32, m: f32, out: &mut [u8]) {
        self.codes_into(vals, s, m, out);
    }

    /// A group's stored scale and offset minimising `sum w_i (x_i - x^_i)^2`: the min/max
    /// start shrunk by 16 factors (clipping the range), each refined by one weighted
    /// least-squares fit of scale and offset (asymmetric), the best kept.
    pub(super) fn fit_group_weighted(&self, x: &[f32], w: &[f32]) -> Result<(f32, f32)> {
        let base = self.fit_group(x)?;
        let sse = |s: f32, m: f32| -> f64 {
            x.iter()
                .zip(w)
                .map(|(&v, &wi)| {
                    let e = (v - self.dequant(v, s, m)) as f64;
                    wi as f64 * e * e
                })
                .sum()
        };
        let mut best = (sse(base.0, base.1), base);
        if base.0 <= 0.0 {
            return Ok(base);
        }
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let b = self.bits as u32;
        for k in 1..16 {
            let f = 1.0 - 0.025 * k as f32;
            let cand = if self.asym {
                let levels = ((1u32 << b) - 1) as f32;
                let mid = 0.5 * (lo + hi);
                let (l2, h2) = (mid + (lo - mid) * f, mid + (hi - mid) * f);
                let (s, m) = ((h2 - l2) / levels, l2);
                // One weighted least-squares refit of x ~ m + s q over these codes.
                let (mut sw, mut sq, mut sx, mut sqq, mut sqx) = (0f64, 0f64, 0f64, 0f64, 0f64);
                for (&v, &wi) in x.iter().zip(w) {
                    let q = ((v - m) / s).round_ties_even().clamp(0.0, levels) as f64;
                    let (wi, v) = (wi as f64, v as f64);
                    sw += wi;
                    sq += wi * q;
                    sx += wi * v;
                    sqq += wi * q * q;
                    sqx += wi * q * v;
                }
                let den = sw * sqq - sq * sq;
                let (s, m) = if den > 0.0 {
                    let ns = (sw * sqx - sq * sx) / den;
                    ((ns as f32), ((sx - ns * sq) / sw) as f32)
                } else {
                    (s, m)
                };
                if !(s > 0.0 && s.is_finite() && m.is_finite()) {
                    continue;
                }
                (self.store(s), self.store(m))
            } else {
                (self.store(base.0 * f), 0.0)
            };
            if !(cand.0.is_finite() && cand.1.is_finite()) {
                continue;
            }
            let e = sse(cand.0, cand.1);
            if e < best.0 {
                best = (e, cand);
            }
        }
        Ok(best.1)
    }

    /// Decode `n` values (the payload length must be exact).
    pub fn decode_f32(&self, payload: &[u8], n: usize, out: &mut Vec<f32>) -> Result<()> {
        let want = self.payload_len(n)?;
        if payload.len() != want {
            return Err(Error::bad_length(format!(
                "int payload is {} bytes, expected {want} for {n} elements",
                payload.len()
            )));
        }
        let np = self.param_count(n)?;
        let pb = self.param_bytes();
        let read = |i: usize| -> f32 {
            let b = &payload[i * pb..(i + 1) * pb];
            if self.f32_scale {
                f32::from_le_bytes(b.try_into().expect("4 bytes"))
            } else {
                f16::from_le_bytes([b[0], b[1]]).to_f32()
            }
        };
        let params: Vec<(f32, f32)> = (0..np)
            .map(|i| (read(i), if self.asym { read(np + i) } else { 0.0 }))
            .collect();
        let codes_at = np * pb * (1 + self.asym as usize);
        let bits = self.bits as u32;
        let bias = (1i32 << (bits - 1)) as f32;
        out.clear();
        super::check_pad_bits(&payload[codes_at..], n as u64 * bits as u64, "int codes")?;
        let codes = unpack(&payload[codes_at..], bits, n);
        out.resize(n, 0.0);
        match self.group {
            Group::Elems(g) => {
                for ((o, c), &(s, m)) in out
                    .chunks_mut(g as usize)
                    .zip(codes.chunks(g as usize))
                    .zip(&params)
                {
                    if self.asym {
                        for (o, &c) in o.iter_mut().zip(c) {
                            *o = m + c as f32 * s;
                        }
                    } else {
                        for (o, &c) in o.iter_mut().zip(c) {
                            *o = (c as f32 - bias) * s;
                        }
                    }
                }
            }
            _ => {
                for (j, (o, &c)) in out.iter_mut().zip(&codes).enumerate() {
                    let (s, m) = params[self.param_of(j)];
                    let c = c as f32;
                    *o = if self.asym { m + c * s } else { (c - bias) * s };
                }
            }
        }
        Ok(())
    }

    fn params_bytes(&self) -> Vec<u8> {
        let flags = self.asym as u8
            | (self.f32_scale as u8) << 1
            | (matches!(self.fit, Fit::Als(_)) as u8) << 2;
        match self.group {
            Group::Channels { channels, inner } => {
                let mut p = vec![self.bits, flags | 8];
                p.extend_from_slice(&channels.to_le_bytes());
                p.extend_from_slice(&inner.to_le_bytes());
                p
            }
            g => {
                // Row, tensor and axis are fixed for a tensor before anything is stored.
                let g = if let Group::Elems(g) = g { g } else { 0 };
                let mut p = vec![self.bits, flags];
                p.extend_from_slice(&g.to_le_bytes());
                p
            }
        }
    }

    /// The `int` codec behind a stored stage (`tenpakx`'s residual), if it is one.
    pub(super) fn from_stage(c: &dyn TensorCodec) -> Option<IntCodec> {
        (c.id() == INT_ENTRY.id)
            .then(|| IntCodec::from_params_bytes("int", &c.params()).ok())
            .flatten()
    }

    fn from_params_bytes(name: &str, p: &[u8]) -> Result<IntCodec> {
        let bad = |m: String| Error::bad_params(format!("{name} parameters: {m}"));
        if p.len() < 2 {
            return Err(bad(format!("{} bytes", p.len())));
        }
        let (bits, flags) = (p[0], p[1]);
        if !(2..=8).contains(&bits) {
            return Err(bad(format!("{bits} bits")));
        }
        if flags & !0b1111 != 0 {
            return Err(bad(format!("unknown flags {flags:#x}")));
        }
        let u = |r: &[u8]| u64::from_le_bytes(r.try_into().expect("8 bytes"));
        let group = if flags & 8 != 0 {
            if p.len() != 18 {
                return Err(bad(format!("{} bytes, expected 18", p.len())));
            }
            let (channels, inner) = (u(&p[2..10]), u(&p[10..18]));
            if channels == 0 || inner == 0 || channels.checked_mul(inner).is_none() {
                return Err(bad(format!("{channels} channels of {inner}")));
            }
            Group::Channels { channels, inner }
        } else {
            if p.len() != 10 {
                return Err(bad(format!("{} bytes, expected 10", p.len())));
            }
            match u(&p[2..10]) {
                0 => return Err(bad("group size 0".into())),
                g => Group::Elems(g),
            }
        };
        Ok(IntCodec {
            bits,
            asym: flags & 1 != 0,
            f32_scale: flags & 2 != 0,
            group,
            fit: if flags & 4 != 0 {
                Fit::Als(0)
            } else {
                Fit::MinMax
            },
        })
    }

    fn spec_string(&self) -> String {
        let mut s = format!("int:bits={}", self.bits);
        if self.asym {
            s.push_str(",zero=asym");
        }
        match self.group {
            Group::Elems(g) => s.push_str(&format!(",group={g}")),
            Group::Row => s.push_str(",group=row"),
            Group::Tensor => s.push_str(",group=tensor"),
            Group::Axis(k) => s.push_str(&format!(",axis={k}")),
            Group::Channels { channels, inner } => {
                s.push_str(&format!(",channels={channels}x{inner}"))
            }
        }
        if self.f32_scale {
            s.push_str(",scale=f32");
        }
        if let Fit::Als(i) = self.fit {
            s.push_str(",fit=als");
            if i > 0 && i != DEFAULT_ALS_ITERS {
                s.push_str(&format!(",iters={i}"));
            }
        }
        s
    }

    fn fixed_for(&self, dims: &[u64]) -> Option<IntCodec> {
        let n: u64 = dims.iter().product();
        let group = match self.group {
            Group::Elems(_) | Group::Channels { .. } => return None,
            Group::Row => Group::Elems(dims.last().copied().unwrap_or(1).max(1)),
            Group::Tensor => Group::Elems(n.max(1)),
            // An axis beyond the tensor's (a vector under axis=1) is its last.
            Group::Axis(k) => {
                let k = (k as usize).min(dims.len().saturating_sub(1));
                Group::Channels {
                    channels: dims.get(k).copied().unwrap_or(1).max(1),
                    inner: dims
                        .get(k + 1..)
                        .map_or(1, |d| d.iter().product::<u64>())
                        .max(1),
                }
            }
        };
        Some(IntCodec { group, ..*self })
    }
}

/// Default ALS steps of `fit=als`.
pub const DEFAULT_ALS_ITERS: u8 = 6;

/// Least-squares refinement of one group's asymmetric scale `s` and offset `m`: alternately
/// round the codes and refit `x ~ m + s q` over them; keeps the best pair seen (by squared
/// error, with codes as they round). Deterministic (fixed f64 operations).
fn als(x: &[f32], s0: f32, m0: f32, levels: f32, iters: u8) -> (f32, f32) {
    let sse = |s: f32, m: f32| -> f64 {
        x.iter()
            .map(|&v| {
                let q = if s > 0.0 {
                    ((v - m) / s).round_ties_even().clamp(0.0, levels)
                } else {
                    0.0
                };
                let e = (v - (m + q * s)) as f64;
                e * e
            })
            .sum()
    };
    let (mut s, mut m) = (s0, m0);
    let mut best = (sse(s, m), s, m);
    if s <= 0.0 {
        return (s, m);
    }
    for _ in 0..iters {
        let n = x.len() as f64;
        let (mut sq, mut sx, mut sqq, mut sqx) = (0f64, 0f64, 0f64, 0f64);
        for &v in x {
            let q = ((v - m) / s).round_ties_even().clamp(0.0, levels) as f64;
            sq += q;
            sx += v as f64;
            sqq += q * q;
            sqx += q * v as f64;
        }
        let den = n * sqq - sq * sq;
        if den <= 0.0 {
            break;
        }
        let ns = (n * sqx - sq * sx) / den;
        let nm = (sx - ns * sq) / n;
        if !(ns > 0.0 && ns.is_finite() && nm.is_finite()) {
            break;
        }
        (s, m) = (ns as f32, nm as f32);
        let e = sse(s, m);
        if e < best.0 {
            best = (e, s, m);
        }
    }
    (best.1, best.2)
}

/// Pack `bits`-bit codes densely, least significant bit first.
pub(super) fn pack(codes: &[u8], bits: u32, out: &mut Vec<u8>) {
    match bits {
        8 => out.extend_from_slice(codes),
        4 | 2 => {
            let per = (8 / bits) as usize;
            out.extend(codes.chunks(per).map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |a, (i, &v)| a | v << (i as u32 * bits))
            }));
        }
        _ => {
            let mut acc = 0u64;
            let mut have = 0u32;
            for &c in codes {
                acc |= (c as u64) << have;
                have += bits;
                while have >= 8 {
                    out.push(acc as u8);
                    acc >>= 8;
                    have -= 8;
                }
            }
            if have > 0 {
                out.push(acc as u8);
            }
        }
    }
}

/// `n` codes of `bits` bits from a stream written by [`pack`] (the caller has checked its
/// length).
pub(super) fn unpack(data: &[u8], bits: u32, n: usize) -> Vec<u8> {
    match bits {
        8 => data[..n].to_vec(),
        // Fixed-width unpacking into a sized buffer: a loop the compiler vectorizes.
        4 => {
            let mut out = vec![0u8; n.div_ceil(2) * 2];
            for (o, &b) in out.chunks_exact_mut(2).zip(&data[..n.div_ceil(2)]) {
                o[0] = b & 15;
                o[1] = b >> 4;
            }
            out.truncate(n);
            out
        }
        2 => {
            let mut out = vec![0u8; n.div_ceil(4) * 4];
            for (o, &b) in out.chunks_exact_mut(4).zip(&data[..n.div_ceil(4)]) {
                o[0] = b & 3;
                o[1] = b >> 2 & 3;
                o[2] = b >> 4 & 3;
                o[3] = b >> 6;
            }
            out.truncate(n);
            out
        }
        _ => {
            let mut u = Unpacker::new(data, bits);
            (0..n).map(|_| u.next() as u8).collect()
        }
    }
}

/// Reads `bits`-bit codes written by [`pack`] one at a time (widths that straddle bytes).
struct Unpacker<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    have: u32,
    bits: u32,
}

impl<'a> Unpacker<'a> {
    fn new(data: &'a [u8], bits: u32) -> Self {
        Unpacker {
            data,
            pos: 0,
            acc: 0,
            have: 0,
            bits,
        }
    }

    /// The next code (the caller has checked the payload holds enough bits).
    fn next(&mut self) -> u32 {
        while self.have < self.bits {
            self.acc |= (self.data[self.pos] as u64) << self.have;
            self.pos += 1;
            self.have += 8;
        }
        let c = (self.acc & ((1 << self.bits) - 1)) as u32;
        self.acc >>= self.bits;
        self.have -= self.bits;
        c
    }
}

fn f32_vals(codec: &str, src: DType, bytes: &[u8]) -> Result<Vec<f32>> {
    if !src.is_float() {
        return Err(Error::internal(format!(
            "{codec} encodes floats, got {src}"
        )));
    }
    let mut v = Vec::new();
    crate::dtype::to_f32(src, bytes, &mut v);
    Ok(v)
}

/// Write f32 values as little-endian bytes over `out`.
pub(super) fn put_f32(vals: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(4).zip(vals) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

fn int_options(o: &mut Options, bits_default: i64) -> Result<IntCodec> {
    let bits = o.int("bits", bits_default, 2, 8)? as u8;
    if !(2..=8).contains(&bits) {
        return Err(Error::config(format!(
            "codec int: bits={bits}: expected 2 to 8"
        )));
    }
    let asym = o.choice("zero", &["sym", "asym"])? == "asym";
    let f32_scale = o.choice("scale", &["f16", "f32"])? == "f32";
    let group = match o.take("group") {
        None => Group::Elems(32),
        Some(g) => match g.as_str() {
            "row" => Group::Row,
            "tensor" => Group::Tensor,
            v => match v.parse::<u64>() {
                Ok(n) if (1..=1 << 40).contains(&n) => Group::Elems(n),
                _ => {
                    return Err(Error::config(format!(
                        "codec int: group={v}: expected a positive integer, row or tensor"
                    )))
                }
            },
        },
    };
    let group = match o.take("axis") {
        None => group,
        Some(_) if !matches!(group, Group::Elems(32)) => {
            return Err(Error::config("codec int: give group= or axis=, not both"))
        }
        Some(k) => match k.parse::<u8>() {
            Ok(k) if k < 16 => Group::Axis(k),
            _ => {
                return Err(Error::config(format!(
                    "codec int: axis={k}: expected a dimension index (0-15)"
                )))
            }
        },
    };
    let als = o.choice("fit", &["minmax", "als"])? == "als";
    let iters = o.int("iters", DEFAULT_ALS_ITERS as i64, 1, 50)? as u8;
    if als && !asym {
        return Err(Error::config(
            "codec int: fit=als refines scale and offset: needs zero=asym",
        ));
    }
    Ok(IntCodec {
        bits,
        asym,
        f32_scale,
        group,
        fit: if als { Fit::Als(iters) } else { Fit::MinMax },
    })
}

pub(super) const INT_ENTRY: CodecEntry = CodecEntry {
    id: INT_ID,
    name: "int",
    version: 1,
    summary: "uniform integer quantization: bits=2..8, zero=sym|asym, group=N|row|tensor, scale=f16|f32 (int8, int4_g32, int4_opt, ...)",
    from_options: |o| Ok(Codec::Tensor(Arc::new(int_options(o, 8)?))),
    from_params: |p| Ok(Codec::Tensor(Arc::new(IntCodec::from_params_bytes("int", p)?))),
};

/// Lossy, floats in, f32 out, row-major, whole groups per chunk.
const fn int_props(id: u16, name: &'static str, chunk_multiple: u64, binds: Binds) -> Props {
    Props {
        chunk_multiple,
        binds,
        ..Props::lossy(id, name)
    }
}

impl TensorCodec for IntCodec {
    fn props(&self) -> Props {
        let (multiple, binds) = match self.group {
            Group::Elems(g) => (g, Binds::Nothing),
            // Per-channel scales cover the whole tensor: one chunk.
            Group::Channels { .. } => (u64::MAX, Binds::Nothing),
            Group::Row | Group::Tensor | Group::Axis(_) => (1, Binds::Shape),
        };
        int_props(INT_ID, "int", multiple, binds)
    }
    fn params(&self) -> Vec<u8> {
        self.params_bytes()
    }
    fn spec(&self) -> String {
        self.spec_string()
    }
    fn bind(&self, t: &TensorFacts<'_>) -> Option<Arc<dyn TensorCodec>> {
        self.fixed_for(t.dims)
            .map(|c| Arc::new(c) as Arc<dyn TensorCodec>)
    }
    fn max_encoded_len(&self, _: DType, n: usize) -> usize {
        self.payload_len(n).unwrap_or(usize::MAX)
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        self.encode_f32(&f32_vals("int", src, bytes)?)
    }
    fn decode(&self, payload: &[u8], _: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let mut v = Vec::new();
        self.decode_f32(payload, n, &mut v)?;
        put_f32(&v, out);
        Ok(())
    }
    fn ggml_block(&self) -> Option<&'static str> {
        // Groups of 32 with f16 scales: the codes and scales are llama.cpp's legacy blocks.
        if self.group != Group::Elems(32) || self.f32_scale {
            return None;
        }
        match (self.bits, self.asym) {
            (8, false) => Some("Q8_0"),
            (4, false) => Some("Q4_0"),
            (4, true) => Some("Q4_1"),
            (5, false) => Some("Q5_0"),
            (5, true) => Some("Q5_1"),
            _ => None,
        }
    }
}

/// INT4 + INT2 residual, groups of `g` (default 16), f16 scales and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidualCodec {
    /// Group size of both stages.
    pub group: u64,
}

impl ResidualCodec {
    fn stages(&self) -> (IntCodec, IntCodec) {
        let base = IntCodec {
            bits: 4,
            asym: true,
            f32_scale: false,
            group: Group::Elems(self.group),
            fit: Fit::MinMax,
        };
        (base, IntCodec { bits: 2, ..base })
    }
}

pub(super) const RESIDUAL_ENTRY: CodecEntry = CodecEntry {
    id: RESIDUAL_ID,
    name: "int4_residual",
    version: 1,
    summary: "INT4 groups (f16 scale and offset) plus an INT2 quantization of the remaining error, groups of 16",
    from_options: |o| {
        let g = o.int("group", 16, 1, 1 << 20)? as u64;
        Ok(Codec::Tensor(Arc::new(ResidualCodec { group: g })))
    },
    from_params: |p| {
        let g = <[u8; 8]>::try_from(p)
            .map(u64::from_le_bytes)
            .map_err(|_| Error::bad_params("int4_residual parameters: expected 8 bytes"))?;
        if g == 0 {
            return Err(Error::bad_params("int4_residual parameters: group size 0"));
        }
        Ok(Codec::Tensor(Arc::new(ResidualCodec { group: g })))
    },
};

impl TensorCodec for ResidualCodec {
    fn props(&self) -> Props {
        int_props(RESIDUAL_ID, "int4_residual", self.group, Binds::Nothing)
    }
    fn params(&self) -> Vec<u8> {
        self.group.to_le_bytes().to_vec()
    }
    fn spec(&self) -> String {
        if self.group == 16 {
            "int4_residual".into()
        } else {
            format!("int4_residual:group={}", self.group)
        }
    }
    fn max_encoded_len(&self, _: DType, n: usize) -> usize {
        let (a, b) = self.stages();
        match (a.payload_len(n), b.payload_len(n)) {
            (Ok(x), Ok(y)) => x + y,
            _ => usize::MAX,
        }
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let x = f32_vals("int4_residual", src, bytes)?;
        let (a, b) = self.stages();
        let mut out = a.encode_f32(&x)?;
        let mut first = Vec::new();
        a.decode_f32(&out, x.len(), &mut first)?;
        let rest: Vec<f32> = x.iter().zip(&first).map(|(v, f)| v - f).collect();
        out.extend(b.encode_f32(&rest)?);
        Ok(out)
    }
    fn decode(&self, payload: &[u8], _: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let (a, b) = self.stages();
        let la = a.payload_len(n)?;
        if payload.len() != la + b.payload_len(n)? {
            return Err(Error::bad_length(format!(
                "int4_residual payload is {} bytes, expected {} for {n} elements",
                payload.len(),
                la + b.payload_len(n)?
            )));
        }
        let (mut x, mut r) = (Vec::new(), Vec::new());
        a.decode_f32(&payload[..la], n, &mut x)?;
        b.decode_f32(&payload[la..], n, &mut r)?;
        for (v, e) in x.iter_mut().zip(&r) {
            *v += e;
        }
        put_f32(&x, out);
        Ok(())
    }
}

/// Expand the integer codecs' short names: `int8`, `int4_g32`, `int4_row`, `int4_g64_asym`,
/// `int2_tensor_f32`, `int4_opt[_gN]`. Returns the codec name and its options, or `None`.
pub fn expand_alias(name: &str) -> Option<(&'static str, String)> {
    if let Some(rest) = name.strip_prefix("int4_opt") {
        let mut opts = "bits=4,zero=asym,fit=als".to_string();
        match rest {
            "" => opts.push_str(",group=8"),
            r => {
                let g = r.strip_prefix("_g")?.parse::<u64>().ok()?;
                opts.push_str(&format!(",group={g}"));
            }
        }
        return Some(("int", opts));
    }
    let rest = name.strip_prefix("int")?;
    let mut parts = rest.split('_');
    let bits: u8 = parts.next()?.parse().ok()?;
    if !(2..=8).contains(&bits) {
        return None;
    }
    let mut opts = format!("bits={bits}");
    for p in parts {
        match p {
            "asym" => opts.push_str(",zero=asym"),
            "sym" => {}
            "f32" => opts.push_str(",scale=f32"),
            "row" => opts.push_str(",group=row"),
            "tensor" => opts.push_str(",group=tensor"),
            a if a.starts_with("axis") => {
                let k = a.strip_prefix("axis")?.parse::<u8>().ok()?;
                opts.push_str(&format!(",axis={k}"));
            }
            g => {
                let n = g.strip_prefix('g')?.parse::<u64>().ok()?;
                opts.push_str(&format!(",group={n}"));
            }
        }
    }
    Some(("int", opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
                if i % 97 == 0 {
                    u * 8.0
                } else {
                    u * 0.1
                }
            })
            .collect()
    }

    fn codec(bits: u8, asym: bool, g: u64) -> IntCodec {
        IntCodec {
            bits,
            asym,
            f32_scale: false,
            group: Group::Elems(g),
            fit: Fit::MinMax,
        }
    }

    #[test]
    fn packing_roundtrips_every_width() {
        for bits in 2u32..=8 {
            let codes: Vec<u8> = (0..1001u32).map(|i| (i * 7 % (1 << bits)) as u8).collect();
            let mut out = Vec::new();
            pack(&codes, bits, &mut out);
            assert_eq!(out.len(), (codes.len() * bits as usize).div_ceil(8));
            let mut u = Unpacker::new(&out, bits);
            let back: Vec<u8> = (0..codes.len()).map(|_| u.next() as u8).collect();
            assert_eq!(back, codes);
        }
        // 3-bit codes straddle bytes: 0b101, 0b011, 0b110 -> 0b10_011_101, 0b1.
        let mut out = Vec::new();
        pack(&[5, 3, 6], 3, &mut out);
        assert_eq!(out, vec![0b1001_1101, 0b1]);
    }

    #[test]
    fn error_is_within_half_a_step_and_reencoding_is_stable() {
        let x = vals(1000, 3);
        for bits in [2u8, 3, 4, 8] {
            for asym in [false, true] {
                for g in [8u64, 32, 1000] {
                    let c = codec(bits, asym, g);
                    let p = c.encode_f32(&x).unwrap();
                    assert_eq!(p.len(), c.payload_len(x.len()).unwrap());
                    let mut y = Vec::new();
                    c.decode_f32(&p, x.len(), &mut y).unwrap();
                    for (grp_x, grp_y) in x.chunks(g as usize).zip(y.chunks(g as usize)) {
                        let (lo, hi) = grp_x
                            .iter()
                            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                        let step = if asym {
                            (hi - lo) / ((1 << bits) - 1) as f32
                        } else {
                            lo.abs().max(hi.abs()) / ((1 << (bits - 1)) - 1) as f32
                        };
                        for (a, b) in grp_x.iter().zip(grp_y) {
                            // Half a step, plus what f16 rounding of the scale moves the ends.
                            assert!(
                                (a - b).abs()
                                    <= 0.5 * step * 1.01 + 1e-3 * step * (1 << bits) as f32,
                                "b{bits} asym={asym} g{g}: {a} -> {b} (step {step})"
                            );
                        }
                    }
                    // Decoded values encode to the same codes (idempotence) for symmetric groups.
                    if !asym {
                        let p2 = c.encode_f32(&y).unwrap();
                        let mut y2 = Vec::new();
                        c.decode_f32(&p2, y.len(), &mut y2).unwrap();
                        assert_eq!(y2, y, "b{bits} g{g}");
                    }
                }
            }
        }
    }

    #[test]
    fn als_never_does_worse_than_minmax() {
        let x = vals(4096, 11);
        let sse = |c: &IntCodec| {
            let p = c.encode_f32(&x).unwrap();
            let mut y = Vec::new();
            c.decode_f32(&p, x.len(), &mut y).unwrap();
            x.iter()
                .zip(&y)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        let plain = codec(4, true, 8);
        let opt = IntCodec {
            fit: Fit::Als(DEFAULT_ALS_ITERS),
            ..plain
        };
        let (a, b) = (sse(&plain), sse(&opt));
        assert!(b < a, "{b} >= {a}");
    }

    #[test]
    fn residual_beats_its_first_stage() {
        let x = vals(4096, 5);
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let r = ResidualCodec { group: 16 };
        let p = r.encode(DType::F32, &bytes).unwrap();
        // 4 + 2 bits and two f16 pairs per 16 elements: 10 bits a weight.
        assert_eq!(p.len() * 8, x.len() * 10);
        let mut out = vec![0u8; bytes.len()];
        r.decode(&p, DType::F32, x.len(), &mut out).unwrap();
        let y: Vec<f32> = out
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let first = codec(4, true, 16);
        let mut z = Vec::new();
        first
            .decode_f32(&first.encode_f32(&x).unwrap(), x.len(), &mut z)
            .unwrap();
        let e = |v: &[f32]| {
            x.iter()
                .zip(v)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        assert!(e(&y) < e(&z) / 4.0, "{} vs {}", e(&y), e(&z));
    }

    #[test]
    fn per_channel_along_any_axis() {
        // A [3, 4, 5] tensor: channels of axis 1 are strided runs of 5.
        let x = vals(60, 21);
        let base = IntCodec {
            group: Group::Axis(1),
            ..codec(4, true, 32)
        };
        let c = base.fixed_for(&[3, 4, 5]).unwrap();
        assert_eq!(
            c.group,
            Group::Channels {
                channels: 4,
                inner: 5
            }
        );
        let p = c.encode_f32(&x).unwrap();
        assert_eq!(p.len(), 4 * 2 * 2 + 30);
        let mut y = Vec::new();
        c.decode_f32(&p, 60, &mut y).unwrap();
        for ch in 0..4 {
            let idx: Vec<usize> = (0..60).filter(|j| (j / 5) % 4 == ch).collect();
            let (lo, hi) = idx.iter().fold((f32::MAX, f32::MIN), |(l, h), &j| {
                (l.min(x[j]), h.max(x[j]))
            });
            let step = (hi - lo) / 15.0;
            for &j in &idx {
                assert!((x[j] - y[j]).abs() <= 0.51 * step + 1e-3 * (hi - lo), "{j}");
            }
        }
        let back = IntCodec::from_params_bytes("int", &c.params_bytes()).unwrap();
        assert_eq!(back.group, c.group);
        // axis 0 of a matrix: one scale per row, like group=row.
        let r = IntCodec {
            group: Group::Axis(0),
            ..codec(8, false, 32)
        }
        .fixed_for(&[6, 10])
        .unwrap();
        assert_eq!(
            r.group,
            Group::Channels {
                channels: 6,
                inner: 10
            }
        );
    }

    #[test]
    fn aliases_expand() {
        assert_eq!(expand_alias("int8"), Some(("int", "bits=8".to_string())));
        assert_eq!(
            expand_alias("int4_g64_asym"),
            Some(("int", "bits=4,group=64,zero=asym".to_string()))
        );
        assert_eq!(
            expand_alias("int4_opt"),
            Some(("int", "bits=4,zero=asym,fit=als,group=8".to_string()))
        );
        assert_eq!(expand_alias("int9"), None);
        assert_eq!(expand_alias("int4_gx"), None);
        assert_eq!(expand_alias("int4_residual"), None);
    }

    #[test]
    fn bad_payloads_and_params_are_errors() {
        let c = codec(3, true, 16);
        let x = vals(100, 1);
        let p = c.encode_f32(&x).unwrap();
        let mut y = Vec::new();
        assert!(c.decode_f32(&p[..p.len() - 1], x.len(), &mut y).is_err());
        assert!(c.decode_f32(&p, x.len() + 50, &mut y).is_err());
        for bad in [
            &[][..],
            &[9, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            &[4, 8, 1, 0, 0, 0, 0, 0, 0, 0],
            &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(IntCodec::from_params_bytes("int", bad).is_err(), "{bad:?}");
        }
        assert!(c.encode_f32(&[1.0, f32::NAN]).is_err());
        let big = IntCodec {
            asym: false,
            ..codec(8, false, 4)
        };
        assert!(
            big.encode_f32(&[1e9, 0.0, 0.0, 0.0]).is_err(),
            "f16 scale overflow"
        );
    }
}
