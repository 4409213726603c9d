//! `gear` (id 24): the KV reference's lossless byte-plane split, optionally with a token-axis
//! delta on the high plane (`gear-delta`). Spec: formats-spec/gear.md; semantics of
//! `../shared/kv.md` §3.2-3.3 (MNN `exp/gear_fp16`, `exp/n_lossless`).
//!
//! Two-byte floats (F16, BF16) split into a high byte plane (sign, exponent, top mantissa bits)
//! and a low byte plane; F32 into high and low 16-bit planes. Each plane is one zstd frame. With
//! `delta=token` the high plane, viewed as `[T, row]` where `row` is the product of every
//! dimension after the first (`H * D` for a `[T, H, D]` KV dump), stores
//! `d[i] = hi[i] - hi[i - row]` (wrapping) for `i >= row`. The row length is fixed per tensor by
//! the bind step and stored in the params. A chunk that would not shrink, or of another element
//! size, is stored raw (never expands by more than its one mode byte).
//! `delta=auto` (`gear-auto`) picks, per plane and chunk, the smallest of {raw, token delta,
//! xor with the previous token} and tags the choice in the payload; the choice is the writer's
//! (an order-0 entropy estimate of each candidate, which costs one pass and no trial
//! compression), the reader just follows the tags.
//! Config: `--codec gear`, `gear:delta=token`, `gear:delta=auto`, `gear:level=19`.

use super::zstd::{zstd_decode, zstd_encode};
use super::{Codec, CodecEntry, Props, TensorCodec, TensorFacts};
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::sync::Arc;

/// Registry id of `gear`.
pub const GEAR_ID: u16 = 24;

const RAW: u8 = 0;
const PLANES: u8 = 1;
const TAGGED: u8 = 2;
const WHOLE: u8 = 3;

/// Per-plane transforms of `gear-auto` (the tag values of the payload).
const T_RAW: u8 = 0;
const T_DELTA: u8 = 1;
const T_XOR: u8 = 2;

/// The `delta` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delta {
    None = 0,
    Token = 1,
    Auto = 2,
    /// No split: one zstd frame of the element bytes (the reference's `zstd` mode, raw when it
    /// would not shrink).
    Whole = 3,
}

/// The byte-plane split, with or without the token-axis delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GearCodec {
    level: i8,
    /// Token-axis delta on the high plane, or the per-plane choice.
    delta: Delta,
    /// Elements per token (`H * D`), fixed by the bind step; 0 until then.
    row: u64,
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: GEAR_ID,
    name: "gear",
    version: 1,
    summary: "KV byte-plane split (high/low planes, zstd each; lossless), options delta=none|token|auto, split=planes|none, level=-7..22",
    from_options: |o| {
        let delta = match o.choice("delta", &["none", "token", "auto"])? {
            "token" => Delta::Token,
            "auto" => Delta::Auto,
            _ => Delta::None,
        };
        let delta = match (o.choice("split", &["planes", "none"])?, delta) {
            ("planes", d) => d,
            (_, Delta::None) => Delta::Whole,
            _ => return Err(Error::config("codec gear: split=none takes no delta")),
        };
        let level = o.int("level", 3, -7, 22)? as i8;
        Ok(Codec::Tensor(Arc::new(GearCodec {
            level,
            delta,
            row: 0,
        })))
    },
    from_params: |p| {
        let bad = |m: &str| Error::bad_params(format!("gear parameters: {m}"));
        let [level, delta, rest @ ..] = p else {
            return Err(bad("cut short"));
        };
        let row = <[u8; 8]>::try_from(rest)
            .map(u64::from_le_bytes)
            .map_err(|_| bad("expected 10 bytes"))?;
        let delta = match delta {
            0 => Delta::None,
            1 => Delta::Token,
            2 => Delta::Auto,
            3 => Delta::Whole,
            _ => return Err(bad("delta flag out of range")),
        };
        let needs_row = matches!(delta, Delta::Token | Delta::Auto);
        if !(-7..=22).contains(&(*level as i8)) || (needs_row && row == 0) {
            return Err(bad("level or row length out of range"));
        }
        Ok(Codec::Tensor(Arc::new(GearCodec {
            level: *level as i8,
            delta,
            row,
        })))
    },
};

impl GearCodec {
    /// Apply (`forward`) or undo transform `tag` on a plane of `w`-byte words: the wrapping
    /// token-axis delta, or the xor with the word one token (`row` words) earlier.
    fn transform(&self, plane: &mut [u8], w: usize, tag: u8, forward: bool) {
        let stride = self.row as usize * w;
        if tag == T_RAW || stride == 0 || plane.len() <= stride {
            return;
        }
        if w == 1 {
            let op = |a: u8, b: u8| match (tag, forward) {
                (T_XOR, _) => a ^ b,
                (_, true) => a.wrapping_sub(b),
                (_, false) => a.wrapping_add(b),
            };
            if forward {
                // Back to front, so every difference uses the original previous token.
                for i in (stride..plane.len()).rev() {
                    plane[i] = op(plane[i], plane[i - stride]);
                }
            } else {
                for i in stride..plane.len() {
                    plane[i] = op(plane[i], plane[i - stride]);
                }
            }
            return;
        }
        let get = |p: &[u8], i: usize| u16::from_le_bytes([p[i], p[i + 1]]);
        let op = |a: u16, b: u16| match (tag, forward) {
            (T_XOR, _) => a ^ b,
            (_, true) => a.wrapping_sub(b),
            (_, false) => a.wrapping_add(b),
        };
        if forward {
            for i in (stride..plane.len()).step_by(2).rev() {
                let v = op(get(plane, i), get(plane, i - stride));
                plane[i..i + 2].copy_from_slice(&v.to_le_bytes());
            }
        } else {
            for i in (stride..plane.len()).step_by(2) {
                let v = op(get(plane, i), get(plane, i - stride));
                plane[i..i + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// `gear-auto`'s choice for one plane: the transform whose output has the smallest order-0
    /// byte entropy (raw unless another is clearly smaller), and the plane transformed by it.
    fn choose(&self, plane: Vec<u8>, w: usize) -> (u8, Vec<u8>) {
        let stride = self.row as usize * w;
        if stride == 0 || plane.len() <= stride {
            return (T_RAW, plane);
        }
        let mut best = (entropy_bits(&plane), T_RAW, plane.clone());
        for tag in [T_DELTA, T_XOR] {
            let mut p = plane.clone();
            self.transform(&mut p, w, tag, true);
            let e = entropy_bits(&p);
            if e < best.0 * 0.995 {
                best = (e, tag, p);
            }
        }
        (best.1, best.2)
    }
}

/// Order-0 entropy of a byte stream, in bits.
fn entropy_bits(b: &[u8]) -> f64 {
    let mut h = [0u64; 256];
    for &x in b {
        h[x as usize] += 1;
    }
    let n = b.len() as f64;
    h.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let c = c as f64;
            -c * (c / n).log2()
        })
        .sum()
}

/// Bytes per plane word of elements of `size` bytes (`None`: not split).
fn word(size: usize) -> Option<usize> {
    match size {
        2 => Some(1),
        4 => Some(2),
        _ => None,
    }
}

impl TensorCodec for GearCodec {
    fn props(&self) -> Props {
        Props {
            chunk_multiple: self.row.max(1),
            binds: if matches!(self.delta, Delta::Token | Delta::Auto) {
                super::Binds::Shape
            } else {
                super::Binds::Nothing
            },
            ..Props::lossless(GEAR_ID, "gear")
        }
    }
    fn params(&self) -> Vec<u8> {
        let mut p = vec![self.level as u8, self.delta as u8];
        p.extend_from_slice(&self.row.to_le_bytes());
        p
    }
    fn spec(&self) -> String {
        let mut s = String::from("gear");
        let mut opts = Vec::new();
        match self.delta {
            Delta::None => {}
            Delta::Whole => opts.push("split=none".to_string()),
            Delta::Token => opts.push("delta=token".to_string()),
            Delta::Auto => opts.push("delta=auto".to_string()),
        }
        if self.level != 3 {
            opts.push(format!("level={}", self.level));
        }
        if !opts.is_empty() {
            s.push(':');
            s.push_str(&opts.join(","));
        }
        s
    }
    fn bind(&self, t: &TensorFacts<'_>) -> Option<Arc<dyn TensorCodec>> {
        if !matches!(self.delta, Delta::Token | Delta::Auto) || t.dims.is_empty() {
            return None;
        }
        let row = t.dims[1..]
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))?;
        Some(Arc::new(GearCodec {
            row: row.max(1),
            ..*self
        }))
    }
    fn max_encoded_len(&self, src: DType, n: usize) -> usize {
        n.saturating_mul(src.size()).saturating_add(1)
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let raw = || {
            let mut out = Vec::with_capacity(bytes.len() + 1);
            out.push(RAW);
            out.extend_from_slice(bytes);
            out
        };
        if self.delta == Delta::Whole {
            let z = zstd_encode(bytes, self.level as i32)?;
            if z.len() >= bytes.len() {
                return Ok(raw());
            }
            let mut out = Vec::with_capacity(z.len() + 1);
            out.push(WHOLE);
            out.extend_from_slice(&z);
            return Ok(out);
        }
        let Some(w) = word(src.size()) else {
            return Ok(raw());
        };
        if self.delta != Delta::None && self.row == 0 {
            return Err(Error::config(
                "gear delta=token|auto needs the tensor's shape (encode whole tensors)",
            ));
        }
        let n = bytes.len() / src.size();
        let (mut hi, mut lo) = (Vec::with_capacity(n * w), Vec::with_capacity(n * w));
        for e in bytes.chunks_exact(2 * w) {
            lo.extend_from_slice(&e[..w]);
            hi.extend_from_slice(&e[w..]);
        }
        let tags = match self.delta {
            Delta::None | Delta::Whole => None,
            Delta::Token => {
                self.transform(&mut hi, w, T_DELTA, true);
                None
            }
            Delta::Auto => {
                let (th, h) = self.choose(hi, w);
                let (tl, l) = self.choose(lo, w);
                (hi, lo) = (h, l);
                Some([th, tl])
            }
        };
        let (zh, zl) = (
            zstd_encode(&hi, self.level as i32)?,
            zstd_encode(&lo, self.level as i32)?,
        );
        let head = if tags.is_some() { 7 } else { 5 };
        if head + zh.len() + zl.len() > bytes.len() {
            return Ok(raw());
        }
        let mut out = Vec::with_capacity(head + zh.len() + zl.len());
        match tags {
            Some(t) => {
                out.push(TAGGED);
                out.extend_from_slice(&t);
            }
            None => out.push(PLANES),
        }
        out.extend_from_slice(&(zh.len() as u32).to_le_bytes());
        out.extend_from_slice(&zh);
        out.extend_from_slice(&zl);
        Ok(out)
    }
    fn decode(&self, payload: &[u8], src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let Some((&mode, body)) = payload.split_first() else {
            return Err(Error::bad_length("gear payload is empty"));
        };
        match mode {
            RAW => {
                if body.len() != out.len() {
                    return Err(Error::bad_length(format!(
                        "gear raw payload is {} bytes, expected {}",
                        body.len(),
                        out.len()
                    )));
                }
                out.copy_from_slice(body);
                Ok(())
            }
            WHOLE => {
                let b = zstd_decode(body, out.len())?;
                if b.len() != out.len() {
                    return Err(Error::bad_length(format!(
                        "gear frame decodes to {} bytes, expected {}",
                        b.len(),
                        out.len()
                    )));
                }
                out.copy_from_slice(&b);
                Ok(())
            }
            PLANES | TAGGED => {
                let w = word(src.size()).ok_or_else(|| {
                    Error::bad_payload(format!("gear planes for {src}, which is not split"))
                })?;
                let plane = n * w;
                let (tags, body) = if mode == TAGGED {
                    let [th, tl, rest @ ..] = body else {
                        return Err(Error::bad_length("gear payload is cut short"));
                    };
                    if *th > T_XOR || *tl > T_XOR {
                        return Err(Error::bad_payload(format!(
                            "gear plane transforms {th} and {tl} (0 raw, 1 delta, 2 xor)"
                        )));
                    }
                    if self.row == 0 {
                        return Err(Error::bad_params(
                            "gear tagged planes need a token row length",
                        ));
                    }
                    ([*th, *tl], rest)
                } else {
                    (
                        [
                            if self.delta == Delta::Token {
                                T_DELTA
                            } else {
                                T_RAW
                            },
                            T_RAW,
                        ],
                        body,
                    )
                };
                if body.len() < 4 {
                    return Err(Error::bad_length("gear payload is cut short"));
                }
                let hl = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
                let rest = &body[4..];
                if hl > rest.len() {
                    return Err(Error::bad_length(format!(
                        "gear high plane of {hl} bytes in a payload of {}",
                        rest.len()
                    )));
                }
                let mut hi = zstd_decode(&rest[..hl], plane)?;
                let mut lo = zstd_decode(&rest[hl..], plane)?;
                if hi.len() != plane || lo.len() != plane {
                    return Err(Error::bad_length(format!(
                        "gear planes decode to {} and {} bytes, expected {plane} each",
                        hi.len(),
                        lo.len()
                    )));
                }
                self.transform(&mut hi, w, tags[0], false);
                self.transform(&mut lo, w, tags[1], false);
                for ((o, h), l) in out
                    .chunks_exact_mut(2 * w)
                    .zip(hi.chunks_exact(w))
                    .zip(lo.chunks_exact(w))
                {
                    o[..w].copy_from_slice(l);
                    o[w..].copy_from_slice(h);
                }
                Ok(())
            }
            m => Err(Error::bad_payload(format!("gear mode {m} is unknown"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Pipeline;

    fn roundtrip(spec: &str, dtype: DType, dims: &[u64], bytes: &[u8]) -> Vec<u8> {
        let p = Pipeline::parse(spec)
            .unwrap()
            .bind(&TensorFacts { dims, amax: None });
        let n = bytes.len() / dtype.size();
        let enc = p.encode(dtype, bytes).unwrap();
        let back = Pipeline::from_stages(&p.stages()).unwrap();
        assert_eq!(
            back.decode(&enc, dtype, n, u64::MAX).unwrap(),
            bytes,
            "{spec}"
        );
        enc
    }

    /// Bit-exact on KV-like data: outlier channels, ±0, subnormals, inf and NaN payloads, T = 1.
    #[test]
    fn lossless_on_every_kind_of_value() {
        let (t, h, d) = (9u64, 2u64, 16u64);
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut vals: Vec<f32> = (0..t * h * d)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = (x % 2000) as f32 / 1000.0 - 1.0;
                if i % d == 3 {
                    v * 40.0 // an outlier channel, as keys have
                } else {
                    v
                }
            })
            .collect();
        vals[0] = -0.0;
        vals[1] = f32::from_bits(1);
        vals[2] = f32::INFINITY;
        vals[5] = f32::from_bits(0x7FC0_1234);
        for dt in [DType::F16, DType::BF16, DType::F32] {
            let mut b = Vec::new();
            crate::dtype::from_f32(dt, &vals, &mut b).unwrap();
            for spec in [
                "gear",
                "gear:delta=token",
                "gear:delta=token,level=19",
                "gear:delta=auto",
                "gear:split=none",
            ] {
                roundtrip(spec, dt, &[t, h, d], &b);
                roundtrip(spec, dt, &[1, h, d], &b[..(h * d) as usize * dt.size()]);
            }
        }
        // Other element sizes are stored raw, one mode byte more.
        let i8s: Vec<u8> = (0..100u8).collect();
        assert_eq!(roundtrip("gear", DType::I8, &[100], &i8s).len(), 101);
    }

    /// The high plane's token delta is the reference's `d[t] = hi[t] - hi[t-1] mod 256` at fixed
    /// (head, dim), checked on a hand-made plane.
    #[test]
    fn token_delta_is_the_references() {
        let g = GearCodec {
            level: 3,
            delta: Delta::Token,
            row: 2,
        };
        let mut plane = vec![10u8, 200, 12, 5, 11, 250];
        g.transform(&mut plane, 1, T_DELTA, true);
        assert_eq!(plane, [10, 200, 2, 61, 255, 245]);
        g.transform(&mut plane, 1, T_DELTA, false);
        assert_eq!(plane, [10, 200, 12, 5, 11, 250]);
        g.transform(&mut plane, 1, T_XOR, true);
        assert_eq!(plane, [10, 200, 6, 205, 7, 255]);
        g.transform(&mut plane, 1, T_XOR, false);
        assert_eq!(plane, [10, 200, 12, 5, 11, 250]);
        // 16-bit words (f32 high halves): LE words [0x0102, 0xFFFF] then [0x0001, 0x0000].
        let mut p16 = vec![0x02u8, 0x01, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00];
        g.transform(&mut p16, 2, T_DELTA, true);
        assert_eq!(p16, [0x02, 0x01, 0xFF, 0xFF, 0xFF, 0xFE, 0x01, 0x00]);
        g.transform(&mut p16, 2, T_DELTA, false);
        assert_eq!(p16, [0x02, 0x01, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00]);
    }

    /// The fuzz seeds were written outside tenpak from formats-spec/gear.md alone (Python for
    /// the planes and the token delta, the zstd command line for the frames): the delta and
    /// plane payloads decode to the raw one's elements.
    #[test]
    fn decodes_an_independent_writers_payloads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/decode_gear");
        let parse = |name: &str| {
            let b = std::fs::read(dir.join(name)).unwrap();
            let n = u16::from_le_bytes([b[1], b[2]]) as usize;
            let plen = b[3] as usize;
            let (params, payload) = b[4..].split_at(plen);
            let Codec::Tensor(c) = (ENTRY.from_params)(params).unwrap() else {
                panic!("a tensor codec")
            };
            let mut out = vec![0u8; 2 * n];
            c.decode(payload, DType::F16, n, &mut out).unwrap();
            out
        };
        let raw = parse("f16_raw.bin");
        assert_eq!(parse("f16_delta.bin"), raw);
        assert_eq!(parse("f16_planes.bin"), raw);
    }
}
