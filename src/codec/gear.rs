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
    /// token-axis delta, or the xor with the word one token (`row` words) earlier. Token rows
    /// are processed whole (last to first forward, first to last back), so each row's loop is
    /// independent of itself and vectorizes.
    fn transform(&self, plane: &mut [u8], w: usize, tag: u8, forward: bool) {
        let stride = self.row as usize * w;
        if tag == T_RAW || stride == 0 || plane.len() <= stride {
            return;
        }
        // A last, partial token row (not written by tenpak, allowed by the spec) is included.
        let rows = plane.len().div_ceil(stride);
        let step = |prev: &[u8], cur: &mut [u8]| match (w, tag, forward) {
            (_, T_XOR, _) => cur.iter_mut().zip(prev).for_each(|(c, p)| *c ^= *p),
            (1, _, true) => cur
                .iter_mut()
                .zip(prev)
                .for_each(|(c, p)| *c = c.wrapping_sub(*p)),
            (1, _, false) => cur
                .iter_mut()
                .zip(prev)
                .for_each(|(c, p)| *c = c.wrapping_add(*p)),
            (_, _, fwd) => cur
                .chunks_exact_mut(2)
                .zip(prev.chunks_exact(2))
                .for_each(|(c, p)| {
                    let (a, b) = (
                        u16::from_le_bytes([c[0], c[1]]),
                        u16::from_le_bytes([p[0], p[1]]),
                    );
                    let v = if fwd {
                        a.wrapping_sub(b)
                    } else {
                        a.wrapping_add(b)
                    };
                    c.copy_from_slice(&v.to_le_bytes());
                }),
        };
        let order: Box<dyn Iterator<Item = usize>> = if forward {
            Box::new((1..rows).rev())
        } else {
            Box::new(1..rows)
        };
        for r in order {
            let (head, tail) = plane.split_at_mut(r * stride);
            let len = tail.len().min(stride);
            step(&head[(r - 1) * stride..], &mut tail[..len]);
        }
    }

    /// `gear-auto`'s choice for one plane, transformed in place: the transform whose output
    /// has the smallest order-0 byte entropy (raw unless another is clearly smaller), measured
    /// on up to [`SAMPLE_ROWS`] evenly spaced token rows and the row before each (one pass over
    /// a sample instead of three over the plane), and whether the transformed plane is worth a
    /// zstd frame (`STORED` when its estimated entropy is above 7.97 bits per byte, as the low
    /// mantissa bits often are: zstd would spend its time to save well under 1 %).
    fn choose(&self, plane: &mut [u8], w: usize) -> u8 {
        let stride = self.row as usize * w;
        let rows = plane.len().checked_div(stride).unwrap_or(0);
        let mut hist = [[0u64; 256]; 3];
        let mut count = 0u64;
        if rows >= 2 {
            let take = (rows - 1).min(SAMPLE_ROWS);
            for i in 0..take {
                let r = 1 + i * (rows - 1) / take;
                let (prev, cur) = (
                    &plane[(r - 1) * stride..r * stride],
                    &plane[r * stride..(r + 1) * stride],
                );
                if w == 1 {
                    for (c, p) in cur.iter().zip(prev) {
                        hist[0][*c as usize] += 1;
                        hist[1][c.wrapping_sub(*p) as usize] += 1;
                        hist[2][(c ^ p) as usize] += 1;
                    }
                } else {
                    for (c, p) in cur.chunks_exact(2).zip(prev.chunks_exact(2)) {
                        let (a, b) = (
                            u16::from_le_bytes([c[0], c[1]]),
                            u16::from_le_bytes([p[0], p[1]]),
                        );
                        for (k, v) in [a, a.wrapping_sub(b), a ^ b].into_iter().enumerate() {
                            hist[k][(v & 0xFF) as usize] += 1;
                            hist[k][(v >> 8) as usize] += 1;
                        }
                    }
                }
                count += stride as u64;
            }
        } else {
            for c in plane.iter() {
                hist[0][*c as usize] += 1;
            }
            count = plane.len() as u64;
        }
        let e: Vec<f64> = hist.iter().map(|h| entropy_of(h, count)).collect();
        let mut tag = T_RAW;
        if rows >= 2 {
            for t in [T_DELTA, T_XOR] {
                if e[t as usize] < e[0] * 0.995 && e[t as usize] < e[tag as usize] {
                    tag = t;
                }
            }
        }
        self.transform(plane, w, tag, true);
        let bits_per_byte = if count == 0 {
            0.0
        } else {
            e[tag as usize] / count as f64
        };
        if bits_per_byte > 7.97 {
            tag | STORED
        } else {
            tag
        }
    }
}

/// Token rows `gear-auto` samples per plane.
const SAMPLE_ROWS: usize = 64;

/// Tag bit: the plane follows as is, not as a zstd frame.
const STORED: u8 = 0x80;

/// Order-0 entropy, in bits, of `n` bytes with histogram `h`.
fn entropy_of(h: &[u64; 256], n: u64) -> f64 {
    let n = n as f64;
    h.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let c = c as f64;
            -c * (c / n).log2()
        })
        .sum()
}

/// The low and high planes of elements of `2 * w` bytes. Fixed-width loops (one per word
/// size) so the compiler vectorizes them; a copy per word would cost a call each.
fn split_planes(bytes: &[u8], w: usize) -> (Vec<u8>, Vec<u8>) {
    let n = bytes.len() / (2 * w);
    let (mut hi, mut lo) = (vec![0u8; n * w], vec![0u8; n * w]);
    if w == 1 {
        for ((e, h), l) in bytes.chunks_exact(2).zip(&mut hi).zip(&mut lo) {
            *l = e[0];
            *h = e[1];
        }
    } else {
        for ((e, h), l) in bytes
            .chunks_exact(4)
            .zip(hi.chunks_exact_mut(2))
            .zip(lo.chunks_exact_mut(2))
        {
            l[0] = e[0];
            l[1] = e[1];
            h[0] = e[2];
            h[1] = e[3];
        }
    }
    (hi, lo)
}

/// Interleave the planes back into elements of `2 * w` bytes.
fn join_planes(hi: &[u8], lo: &[u8], w: usize, out: &mut [u8]) {
    if w == 1 {
        for ((o, h), l) in out.chunks_exact_mut(2).zip(hi).zip(lo) {
            o[0] = *l;
            o[1] = *h;
        }
    } else {
        for ((o, h), l) in out
            .chunks_exact_mut(4)
            .zip(hi.chunks_exact(2))
            .zip(lo.chunks_exact(2))
        {
            o[0] = l[0];
            o[1] = l[1];
            o[2] = h[0];
            o[3] = h[1];
        }
    }
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
        let raw = || super::stored_payload(RAW, bytes);
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
        let (mut hi, mut lo) = split_planes(bytes, w);
        let tags = match self.delta {
            Delta::None | Delta::Whole => None,
            Delta::Token => {
                self.transform(&mut hi, w, T_DELTA, true);
                None
            }
            Delta::Auto => {
                let th = self.choose(&mut hi, w);
                let tl = self.choose(&mut lo, w);
                Some([th, tl])
            }
        };
        let frame = |p: Vec<u8>, tag: Option<u8>| -> Result<Vec<u8>> {
            if tag.is_some_and(|t| t & STORED != 0) {
                Ok(p)
            } else {
                zstd_encode(&p, self.level as i32)
            }
        };
        let (zh, zl) = (
            frame(hi, tags.map(|t| t[0]))?,
            frame(lo, tags.map(|t| t[1]))?,
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
            RAW => super::stored_body("gear", body, out),
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
                    if *th & !STORED > T_XOR || *tl & !STORED > T_XOR {
                        return Err(Error::bad_payload(format!(
                            "gear plane tags {th} and {tl} (0 raw, 1 delta, 2 xor, +128 stored)"
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
                let unframe = |b: &[u8], tag: u8| -> Result<Vec<u8>> {
                    if tag & STORED != 0 {
                        Ok(b.to_vec())
                    } else {
                        zstd_decode(b, plane)
                    }
                };
                let mut hi = unframe(&rest[..hl], tags[0])?;
                let mut lo = unframe(&rest[hl..], tags[1])?;
                if hi.len() != plane || lo.len() != plane {
                    return Err(Error::bad_length(format!(
                        "gear planes decode to {} and {} bytes, expected {plane} each",
                        hi.len(),
                        lo.len()
                    )));
                }
                self.transform(&mut hi, w, tags[0] & !STORED, false);
                self.transform(&mut lo, w, tags[1] & !STORED, false);
                join_planes(&hi, &lo, w, out);
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
        let p = Pipeline::parse(spec).unwrap().bind(&TensorFacts {
            dims,
            amax: None,
            values: None,
        });
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
        // A partial last row is transformed too (d[j] = p[j] - p[j - row] for every j >= row).
        let mut odd = vec![10u8, 200, 12, 5, 11];
        g.transform(&mut odd, 1, T_DELTA, true);
        assert_eq!(odd, [10, 200, 2, 61, 255]);
        g.transform(&mut odd, 1, T_DELTA, false);
        assert_eq!(odd, [10, 200, 12, 5, 11]);
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
