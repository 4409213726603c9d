//! `byteplane` (id 5): lossless, bit-exact; each float's exponent gets a byte plane of its own.
//!
//! Spec: formats-spec/codecs.md §byteplane. The elements of a chunk are split into planes
//! (bf16: exponent | sign+mantissa; f32: exponent | sign+mantissa high | mantissa mid | mantissa
//! low; f16: sign+exponent | mantissa low | mantissa high 2 bits; other dtypes: one plane per byte),
//! and every plane is stored with whichever of order-0 rANS, zstd, constant or raw is
//! smallest. Exponents of trained weights are concentrated on a few values (about 2.7 bits of
//! order-0 entropy in bf16 MiniLM), which is where the gain comes from; the mantissa planes are
//! close to random and usually stay raw.
//!
//! Config: `--codec byteplane` or `--codec byteplane:zstd=auto|always|never` (whether to also
//! try zstd on a plane: `auto` tries it only on planes dominated by repeated bytes).

use super::rans::{self, histogram};
use super::zstd::{zstd_decode, zstd_encode};
use super::{Codec, CodecEntry, TensorCodec};
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::borrow::Cow;
use std::sync::Arc;

const METHOD_RAW: u8 = 0;
const METHOD_RANS: u8 = 1;
const METHOD_ZSTD: u8 = 2;
const METHOD_CONST: u8 = 3;
const ZSTD_LEVEL: i32 = 3;

/// When to try zstd on a plane besides Huffman and raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZstdMode {
    /// Only on planes where more than half the bytes repeat their predecessor.
    Auto = 0,
    /// On every plane.
    Always = 1,
    /// Never.
    Never = 2,
}

/// The byte-plane entropy codec.
#[derive(Debug, Clone, Copy)]
pub struct ByteplaneCodec {
    /// zstd fallback policy (an encoder choice; decoding does not depend on it).
    pub zstd: ZstdMode,
}

impl Default for ByteplaneCodec {
    fn default() -> Self {
        ByteplaneCodec {
            zstd: ZstdMode::Auto,
        }
    }
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: 5,
    name: "byteplane",
    version: 1,
    summary:
        "lossless: exponent byte plane + per-plane rANS/zstd/raw (option zstd=auto|always|never)",
    from_options: |o| {
        let zstd = match o.choice("zstd", &["auto", "always", "never"])? {
            "always" => ZstdMode::Always,
            "never" => ZstdMode::Never,
            _ => ZstdMode::Auto,
        };
        Ok(Codec::Tensor(Arc::new(ByteplaneCodec { zstd })))
    },
    from_params: |p| {
        let zstd = match p {
            [0] => ZstdMode::Auto,
            [1] => ZstdMode::Always,
            [2] => ZstdMode::Never,
            _ => {
                return Err(Error::malformed(format!(
                    "byteplane params {p:?} are invalid"
                )))
            }
        };
        Ok(Codec::Tensor(Arc::new(ByteplaneCodec { zstd })))
    },
};

/// How elements are cut into planes; stored as the payload's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Bytes = 0,
    Bf16 = 1,
    F16 = 2,
    F32 = 3,
}

fn layout_for(src: DType) -> Layout {
    match src {
        DType::BF16 => Layout::Bf16,
        DType::F16 => Layout::F16,
        DType::F32 => Layout::F32,
        _ => Layout::Bytes,
    }
}

fn n_planes(layout: Layout, src: DType) -> usize {
    match layout {
        Layout::Bf16 => 2,
        Layout::F16 => 3,
        Layout::F32 => 4,
        Layout::Bytes => src.size(),
    }
}

fn split(layout: Layout, bytes: &[u8], planes: &mut [Vec<u8>]) {
    // Index loops over pre-sized planes: the compiler vectorizes these.
    match layout {
        Layout::Bf16 => {
            let [e, m] = planes else { unreachable!() };
            for ((c, e), m) in bytes.chunks_exact(2).zip(e.iter_mut()).zip(m.iter_mut()) {
                let v = u16::from_le_bytes([c[0], c[1]]);
                *e = (v >> 7) as u8;
                *m = ((v >> 8) as u8 & 0x80) | (v as u8 & 0x7F);
            }
        }
        Layout::F16 => {
            let [e, lo, hi] = planes else { unreachable!() };
            let it = bytes.chunks_exact(2).zip(e.iter_mut()).zip(lo.iter_mut()).zip(hi.iter_mut());
            for (((c, e), lo), hi) in it {
                let v = u16::from_le_bytes([c[0], c[1]]);
                *e = (v >> 10) as u8;
                *lo = v as u8;
                *hi = (v >> 8) as u8 & 0x3;
            }
        }
        Layout::F32 => {
            let [e, m2, m1, m0] = planes else { unreachable!() };
            let it = bytes
                .chunks_exact(4)
                .zip(e.iter_mut())
                .zip(m2.iter_mut())
                .zip(m1.iter_mut())
                .zip(m0.iter_mut());
            for ((((c, e), m2), m1), m0) in it {
                let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                *e = (v >> 23) as u8;
                *m2 = ((v >> 24) as u8 & 0x80) | ((v >> 16) as u8 & 0x7F);
                *m1 = (v >> 8) as u8;
                *m0 = v as u8;
            }
        }
        Layout::Bytes => {
            let s = planes.len();
            for (i, c) in bytes.chunks_exact(s).enumerate() {
                for (p, &b) in planes.iter_mut().zip(c) {
                    p[i] = b;
                }
            }
        }
    }
}

fn merge(layout: Layout, planes: &[Cow<'_, [u8]>], out: &mut [u8]) {
    match layout {
        Layout::Bf16 => {
            for ((o, &e), &m) in out.chunks_exact_mut(2).zip(planes[0].iter()).zip(planes[1].iter()) {
                let v = ((m as u16 & 0x80) << 8) | ((e as u16) << 7) | (m as u16 & 0x7F);
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        Layout::F16 => {
            let it = out
                .chunks_exact_mut(2)
                .zip(planes[0].iter())
                .zip(planes[1].iter())
                .zip(planes[2].iter());
            for (((o, &e), &lo), &hi) in it {
                let v = ((e as u16 & 0x3F) << 10) | ((hi as u16 & 0x3) << 8) | lo as u16;
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        Layout::F32 => {
            let it = out
                .chunks_exact_mut(4)
                .zip(planes[0].iter())
                .zip(planes[1].iter())
                .zip(planes[2].iter())
                .zip(planes[3].iter());
            for ((((o, &e), &m2), &m1), &m0) in it {
                let v = ((m2 as u32 & 0x80) << 24)
                    | ((e as u32) << 23)
                    | ((m2 as u32 & 0x7F) << 16)
                    | ((m1 as u32) << 8)
                    | m0 as u32;
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        Layout::Bytes => {
            let s = planes.len();
            for (i, o) in out.chunks_exact_mut(s).enumerate() {
                for (b, p) in o.iter_mut().zip(planes) {
                    *b = p[i];
                }
            }
        }
    }
}

/// Bits each plane may use, so a decoder rejects values the splitter cannot produce.
fn plane_mask(layout: Layout, plane: usize) -> u8 {
    match (layout, plane) {
        (Layout::F16, 0) => 0x3F,
        (Layout::F16, 2) => 0x03,
        _ => 0xFF,
    }
}

impl ByteplaneCodec {
    fn encode_plane(&self, plane: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let n = plane.len();
        let hist = histogram(plane);
        let used = hist.iter().filter(|&&c| c > 0).count();
        if used == 1 {
            out.push(METHOD_CONST);
            out.extend_from_slice(&1u32.to_le_bytes());
            out.push(plane[0]);
            return Ok(());
        }
        let mut best = (METHOD_RAW, n, None::<Vec<u8>>);
        let freqs = (used > 1).then(|| rans::normalize(&hist));
        let mut table = Vec::new();
        if let Some(f) = &freqs {
            rans::write_table(f, &mut table);
            // The estimate decides whether rANS is worth running at all; the real size decides.
            if table.len() + rans::estimate_len(&hist, f) < n {
                rans::encode(plane, f, &mut table);
                if table.len() < best.1 {
                    best = (METHOD_RANS, table.len(), Some(std::mem::take(&mut table)));
                }
            }
        }
        let try_zstd = match self.zstd {
            ZstdMode::Always => true,
            ZstdMode::Never => false,
            ZstdMode::Auto => {
                let repeats = plane.windows(2).filter(|w| w[0] == w[1]).count();
                repeats * 2 > n
            }
        };
        if try_zstd && n > 0 {
            let z = zstd_encode(plane, ZSTD_LEVEL)?;
            if z.len() < best.1 {
                best = (METHOD_ZSTD, z.len(), Some(z));
            }
        }
        out.push(best.0);
        out.extend_from_slice(&(best.1 as u32).to_le_bytes());
        match best.2 {
            Some(bytes) => out.extend_from_slice(&bytes),
            None => out.extend_from_slice(plane),
        }
        Ok(())
    }
}

/// One plane of `n` bytes; raw planes are borrowed from the payload, not copied.
fn decode_plane(method: u8, data: &[u8], n: usize, mask: u8) -> Result<Cow<'_, [u8]>> {
    let plane = match method {
        METHOD_RAW => {
            if data.len() != n {
                return Err(Error::malformed(format!(
                    "raw plane is {} bytes, expected {n}",
                    data.len()
                )));
            }
            Cow::Borrowed(data)
        }
        METHOD_CONST => {
            let [b] = data else {
                return Err(Error::malformed("constant plane must be one byte"));
            };
            Cow::Owned(vec![*b; n])
        }
        METHOD_RANS => {
            let (freqs, used) = rans::read_table(data)?;
            let mut out = vec![0u8; n];
            rans::Decoder::new(&freqs).decode(&data[used..], &mut out)?;
            Cow::Owned(out)
        }
        METHOD_ZSTD => {
            let out = zstd_decode(data, n)?;
            if out.len() != n {
                return Err(Error::malformed(format!(
                    "zstd plane decodes to {} bytes, expected {n}",
                    out.len()
                )));
            }
            Cow::Owned(out)
        }
        m => return Err(Error::malformed(format!("unknown plane method {m}"))),
    };
    if mask != 0xFF && plane.iter().any(|&b| b & !mask != 0) {
        return Err(Error::malformed("plane holds bits outside its field"));
    }
    Ok(plane)
}

impl TensorCodec for ByteplaneCodec {
    fn id(&self) -> u16 {
        ENTRY.id
    }
    fn name(&self) -> &'static str {
        ENTRY.name
    }
    fn params(&self) -> Vec<u8> {
        vec![self.zstd as u8]
    }
    fn lossless(&self) -> bool {
        true
    }
    fn accepts(&self, _: DType) -> bool {
        true
    }
    fn decoded_dtype(&self, src: DType) -> DType {
        src
    }
    fn max_encoded_len(&self, src: DType, n: usize) -> usize {
        // Every plane is at most raw-sized plus its 5-byte header; zstd/Huffman are only kept
        // when smaller than raw.
        let planes = n_planes(layout_for(src), src);
        2 + planes * 5 + n.saturating_mul(planes)
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let layout = layout_for(src);
        let n = bytes.len() / src.size();
        let mut planes: Vec<Vec<u8>> = (0..n_planes(layout, src)).map(|_| vec![0u8; n]).collect();
        split(layout, bytes, &mut planes);
        let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
        out.push(layout as u8);
        out.push(planes.len() as u8);
        for p in &planes {
            self.encode_plane(p, &mut out)?;
        }
        Ok(out)
    }
    fn decode(&self, payload: &[u8], src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let layout = layout_for(src);
        let want_planes = n_planes(layout, src);
        if payload.len() < 2 || payload[0] != layout as u8 || payload[1] as usize != want_planes {
            return Err(Error::malformed(format!(
                "byteplane header does not match a {src} tensor (layout {}, {want_planes} planes)",
                layout as u8
            )));
        }
        let mut pos = 2usize;
        let mut planes = Vec::with_capacity(want_planes);
        for i in 0..want_planes {
            if payload.len() < pos + 5 {
                return Err(Error::malformed(format!(
                    "byteplane plane {i} header is truncated"
                )));
            }
            let method = payload[pos];
            let len = u32::from_le_bytes(payload[pos + 1..pos + 5].try_into().unwrap()) as usize;
            pos += 5;
            let data = payload
                .get(pos..pos.saturating_add(len))
                .ok_or_else(|| Error::malformed(format!("byteplane plane {i} is truncated")))?;
            pos += len;
            planes.push(decode_plane(method, data, n, plane_mask(layout, i))?);
        }
        if pos != payload.len() {
            return Err(Error::malformed(format!(
                "{} trailing bytes after the byteplane planes",
                payload.len() - pos
            )));
        }
        merge(layout, &planes, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(src: DType, bytes: &[u8], mode: ZstdMode) {
        let c = ByteplaneCodec { zstd: mode };
        let n = bytes.len() / src.size();
        let enc = c.encode(src, bytes).unwrap();
        assert!(enc.len() <= c.max_encoded_len(src, n));
        let mut out = vec![0u8; bytes.len()];
        c.decode(&enc, src, n, &mut out).unwrap();
        assert_eq!(out, bytes, "{src}");
    }

    #[test]
    fn special_values_roundtrip() {
        let f: Vec<u8> = [0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-45, -3.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .chain(0xFFC0_1234u32.to_le_bytes())
            .collect();
        for mode in [ZstdMode::Auto, ZstdMode::Always, ZstdMode::Never] {
            rt(DType::F32, &f, mode);
            rt(DType::BF16, &f, mode);
            rt(DType::F16, &f, mode);
            rt(DType::I64, &f[..24], mode);
            rt(DType::F32, &[], mode);
            rt(DType::F32, &f[..4], mode);
        }
    }
}
