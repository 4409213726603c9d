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
//! Config: `--codec gear`, `gear:delta=token`, `gear:level=19`.

use super::zstd::{zstd_decode, zstd_encode};
use super::{Codec, CodecEntry, Props, TensorCodec, TensorFacts};
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::sync::Arc;

/// Registry id of `gear`.
pub const GEAR_ID: u16 = 24;

const RAW: u8 = 0;
const PLANES: u8 = 1;

/// The byte-plane split, with or without the token-axis delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GearCodec {
    level: i8,
    /// Token-axis delta on the high plane.
    delta: bool,
    /// Elements per token (`H * D`), fixed by the bind step; 0 until then.
    row: u64,
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: GEAR_ID,
    name: "gear",
    version: 1,
    summary: "KV byte-plane split (high/low planes, zstd each; lossless), options delta=none|token, level=-7..22",
    from_options: |o| {
        let delta = o.choice("delta", &["none", "token"])? == "token";
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
        if !(-7..=22).contains(&(*level as i8)) || *delta > 1 || (*delta == 1 && row == 0) {
            return Err(bad("level, delta flag or row length out of range"));
        }
        Ok(Codec::Tensor(Arc::new(GearCodec {
            level: *level as i8,
            delta: *delta == 1,
            row,
        })))
    },
};

impl GearCodec {
    /// Wrapping token-axis delta (`forward`) or its prefix sum, on a plane of `w`-byte words.
    fn token_delta(&self, plane: &mut [u8], w: usize, forward: bool) {
        let stride = self.row as usize * w;
        if !self.delta || stride == 0 || plane.len() <= stride {
            return;
        }
        let word = |b: &[u8]| -> u16 {
            if w == 1 {
                b[0] as u16
            } else {
                u16::from_le_bytes([b[0], b[1]])
            }
        };
        let put = |b: &mut [u8], v: u16| {
            if w == 1 {
                b[0] = v as u8
            } else {
                b.copy_from_slice(&v.to_le_bytes())
            }
        };
        let mask = if w == 1 { 0xFF } else { 0xFFFF };
        if forward {
            // Back to front, so every difference uses the original previous token.
            for i in (stride..plane.len()).step_by(w).rev() {
                let d = word(&plane[i..]).wrapping_sub(word(&plane[i - stride..])) & mask;
                put(&mut plane[i..i + w], d);
            }
        } else {
            for i in (stride..plane.len()).step_by(w) {
                let v = word(&plane[i..]).wrapping_add(word(&plane[i - stride..])) & mask;
                put(&mut plane[i..i + w], v);
            }
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
            binds: if self.delta {
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
        if self.delta {
            opts.push("delta=token".to_string());
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
        if !self.delta || t.dims.is_empty() {
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
        let Some(w) = word(src.size()) else {
            return Ok(raw());
        };
        if self.delta && self.row == 0 {
            return Err(Error::config(
                "gear delta=token needs the tensor's shape (encode whole tensors)",
            ));
        }
        let n = bytes.len() / src.size();
        let (mut hi, mut lo) = (Vec::with_capacity(n * w), Vec::with_capacity(n * w));
        for e in bytes.chunks_exact(2 * w) {
            lo.extend_from_slice(&e[..w]);
            hi.extend_from_slice(&e[w..]);
        }
        self.token_delta(&mut hi, w, true);
        let (zh, zl) = (
            zstd_encode(&hi, self.level as i32)?,
            zstd_encode(&lo, self.level as i32)?,
        );
        if 5 + zh.len() + zl.len() > bytes.len() {
            return Ok(raw());
        }
        let mut out = Vec::with_capacity(5 + zh.len() + zl.len());
        out.push(PLANES);
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
            PLANES => {
                let w = word(src.size()).ok_or_else(|| {
                    Error::bad_payload(format!("gear planes for {src}, which is not split"))
                })?;
                let plane = n * w;
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
                let lo = zstd_decode(&rest[hl..], plane)?;
                if hi.len() != plane || lo.len() != plane {
                    return Err(Error::bad_length(format!(
                        "gear planes decode to {} and {} bytes, expected {plane} each",
                        hi.len(),
                        lo.len()
                    )));
                }
                self.token_delta(&mut hi, w, false);
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
            for spec in ["gear", "gear:delta=token", "gear:delta=token,level=19"] {
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
            delta: true,
            row: 2,
        };
        let mut plane = vec![10u8, 200, 12, 5, 11, 250];
        g.token_delta(&mut plane, 1, true);
        assert_eq!(plane, [10, 200, 2, 61, 255, 245]);
        g.token_delta(&mut plane, 1, false);
        assert_eq!(plane, [10, 200, 12, 5, 11, 250]);
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
