//! `byteplane` (id 5): lossless, bit-exact; each float's exponent gets a plane of its own.
//!
//! Spec: formats-spec/codecs.md §byteplane. The elements of a chunk are regrouped into planes
//! and every plane is stored with whichever of Huffman, zstd, constant or raw is smallest.
//!
//! - bf16 and f32: the exponent, together with the two mantissa bits just below it, forms the
//!   *symbol plane* (one byte per element: the exponent's rank in the chunk's sorted exponent
//!   dictionary, times four, plus those two bits). The sign and the next five mantissa bits are
//!   packed six bits per element; f32's remaining 16 mantissa bits are two byte planes.
//!   Why the two mantissa bits: within a binade trained weights are not uniform (their density
//!   falls away from zero), so the top mantissa bits depend on the exponent. Coding them with
//!   it saves ~0.05 bit per element on bf16 MiniLM, more than Huffman loses against the
//!   entropy. A chunk with more than 64 distinct exponents falls back to plain byte planes.
//! - f16: symbol plane = exponent and top two mantissa bits (7 bits); low mantissa byte plane;
//!   sign bits packed eight per byte.
//! - other dtypes: one plane per byte of the element.
//!
//! Config: `--codec byteplane` or `--codec byteplane:zstd=auto|always|never` (whether to also
//! try zstd on a plane: `auto` tries it only on planes dominated by repeated bytes).

use super::huffman::{self, histogram};
use super::zstd::{zstd_decode, zstd_encode};
use super::{Codec, CodecEntry, Props, TensorCodec};
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::borrow::Cow;
use std::sync::Arc;

const METHOD_RAW: u8 = 0;
const METHOD_HUFFMAN: u8 = 1;
const METHOD_ZSTD: u8 = 2;
const METHOD_CONST: u8 = 3;
const ZSTD_LEVEL: i32 = 3;
/// Symbol = rank * 4 + 2 bits must fit a byte.
const MAX_EXPONENTS: usize = 64;

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
        "lossless: exponent plane + per-plane Huffman/zstd/raw (option zstd=auto|always|never)",
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
                return Err(Error::bad_params(format!(
                    "byteplane params {p:?} are invalid"
                )))
            }
        };
        Ok(Codec::Tensor(Arc::new(ByteplaneCodec { zstd })))
    },
};

/// How elements are cut into planes; the payload's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Bytes = 0,
    Bf16 = 1,
    F16 = 2,
    F32 = 3,
}

/// Decoded length of each plane for `n` elements.
fn plane_lens(layout: Layout, src: DType, n: usize) -> Vec<usize> {
    let packed6 = (6 * n).div_ceil(8);
    match layout {
        Layout::Bf16 => vec![n, packed6],
        Layout::F32 => vec![n, packed6, n, n],
        Layout::F16 => vec![n, n, n.div_ceil(8)],
        Layout::Bytes => vec![n; src.size()],
    }
}

/// 6-bit fields, LSB-first: field `i` occupies bits `6i..6i+6` of the little-endian stream.
fn pack6(f: &[u8], out: &mut [u8]) {
    let q = f.chunks_exact(4);
    let rest = q.remainder();
    let full = f.len() / 4;
    for (c, d) in q.zip(out.chunks_exact_mut(3)) {
        let u = c[0] as u32 | (c[1] as u32) << 6 | (c[2] as u32) << 12 | (c[3] as u32) << 18;
        d.copy_from_slice(&u.to_le_bytes()[..3]);
    }
    if !rest.is_empty() {
        let u = rest
            .iter()
            .enumerate()
            .fold(0u32, |a, (j, &v)| a | (v as u32) << (6 * j));
        let tail = &mut out[3 * full..];
        let len = tail.len();
        tail.copy_from_slice(&u.to_le_bytes()[..len]);
    }
}

/// Field `i` of a packed-6 plane.
#[inline(always)]
fn field6(p: &[u8], i: usize) -> u32 {
    let bit = 6 * i;
    let b = bit / 8;
    let lo = p[b] as u32 | (p.get(b + 1).copied().unwrap_or(0) as u32) << 8;
    (lo >> (bit % 8)) & 0x3F
}

/// A split chunk: layout, exponent dictionary, planes, and the symbol plane's histogram when the
/// split already knows it.
struct Split {
    layout: Layout,
    dict: Vec<u8>,
    planes: Vec<Vec<u8>>,
    sym_hist: Option<[u32; 256]>,
}

/// From a histogram of `exponent << 2 | top two mantissa bits`: the ascending exponent
/// dictionary, the rank of each exponent and the symbol plane's histogram; `None` with more
/// than 64 distinct exponents.
fn dictionary(h: &[u32; 1024]) -> Option<(Vec<u8>, [u8; 256], [u32; 256])> {
    let dict: Vec<u8> = (0..256usize)
        .filter(|&e| h[4 * e..4 * e + 4].iter().any(|&c| c > 0))
        .map(|e| e as u8)
        .collect();
    if dict.len() > MAX_EXPONENTS {
        return None;
    }
    let mut rank = [0u8; 256];
    let mut sym_hist = [0u32; 256];
    for (r, &e) in dict.iter().enumerate() {
        rank[e as usize] = r as u8;
        sym_hist[4 * r..4 * r + 4].copy_from_slice(&h[4 * e as usize..4 * e as usize + 4]);
    }
    Some((dict, rank, sym_hist))
}

/// Histogram of the 10 bits under the sign of every bf16 element (exponent and the top two
/// mantissa bits), four elements per 64-bit load into four sub-histograms.
fn histogram_bf16(bytes: &[u8]) -> [u32; 1024] {
    let mut h = vec![[0u32; 1024]; 4];
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    for w in words {
        let w = u64::from_le_bytes(w.try_into().unwrap());
        h[0][((w >> 5) & 0x3FF) as usize] += 1;
        h[1][((w >> 21) & 0x3FF) as usize] += 1;
        h[2][((w >> 37) & 0x3FF) as usize] += 1;
        h[3][((w >> 53) & 0x3FF) as usize] += 1;
    }
    for c in tail.chunks_exact(2) {
        h[0][((u16::from_le_bytes([c[0], c[1]]) >> 5) & 0x3FF) as usize] += 1;
    }
    let mut out = [0u32; 1024];
    for (i, o) in out.iter_mut().enumerate() {
        *o = h[0][i] + h[1][i] + h[2][i] + h[3][i];
    }
    out
}

/// Histogram of 10-bit keys (four sub-histograms against store-to-load stalls).
fn histogram1024(keys: impl Iterator<Item = usize>) -> [u32; 1024] {
    let mut h = vec![[0u32; 4]; 1024];
    for (i, k) in keys.enumerate() {
        h[k & 1023][i & 3] += 1;
    }
    let mut out = [0u32; 1024];
    for (o, c) in out.iter_mut().zip(&h) {
        *o = c.iter().sum();
    }
    out
}

/// The four 6-bit fields (sign, low five mantissa bits) of four bf16 values in a 64-bit word,
/// packed into 24 bits with word-wide masks instead of per-element shifts.
#[inline(always)]
fn gather6(w: u64) -> u32 {
    let g = (w & 0x001F_001F_001F_001F) | ((w >> 10) & 0x0020_0020_0020_0020);
    (g & 0x3F | (g >> 10) & 0xFC0 | (g >> 20) & 0x3_F000 | (g >> 30) & 0xFC_0000) as u32
}

/// Inverse of [`gather6`]: four packed 6-bit fields spread to their places in four bf16 values.
#[inline(always)]
fn spread6(u: u64) -> u64 {
    let g = u & 0x3F | (u & 0xFC0) << 10 | (u & 0x3_F000) << 20 | (u & 0xFC_0000) << 30;
    (g & 0x001F_001F_001F_001F) | (g & 0x0020_0020_0020_0020) << 10
}

/// [`gather6`] for 16 elements a step with AVX2, writing the packed plane's first bytes; returns
/// how many elements it packed (a multiple of 16). A multiply-add joins field pairs into 12 bits,
/// a 64-bit shift joins those pairs into 24, and a byte shuffle drops the gaps.
///
/// # Safety
///
/// The CPU must have AVX2 (callers check `is_x86_feature_detected!("avx2")`). Nothing else is
/// required of the caller: the slices may have any lengths, and every access stays within them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack6_bf16_avx2(bytes: &[u8], p6: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    // Each step reads 32 bytes of `bytes` and writes 8 bytes at 12i and at 12i + 6 (2 spare).
    let steps = (bytes.len() / 32).min(p6.len().saturating_sub(2) / 12);
    let low = _mm256_set1_epi16(0x1F);
    let sign = _mm256_set1_epi16(0x20);
    let pair = _mm256_setr_epi16(1, 64, 1, 64, 1, 64, 1, 64, 1, 64, 1, 64, 1, 64, 1, 64);
    let take = _mm256_setr_epi8(
        0, 1, 2, 8, 9, 10, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
        0, 1, 2, 8, 9, 10, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    );
    for i in 0..steps {
        // SAFETY: step i reads bytes[32i..32i + 32] and writes p6[12i..12i + 14], in bounds by
        // `steps`; the stores are unaligned, and the second overwrites the first's spare bytes.
        unsafe {
            let v = _mm256_loadu_si256(bytes.as_ptr().add(32 * i) as *const __m256i);
            let f = _mm256_or_si256(
                _mm256_and_si256(v, low),
                _mm256_and_si256(_mm256_srli_epi16(v, 10), sign),
            );
            let x = _mm256_madd_epi16(f, pair);
            let x = _mm256_or_si256(x, _mm256_srli_epi64(x, 20));
            let y = _mm256_shuffle_epi8(x, take);
            let dst = p6.as_mut_ptr().add(12 * i);
            _mm_storel_epi64(dst as *mut __m128i, _mm256_castsi256_si128(y));
            _mm_storel_epi64(dst.add(6) as *mut __m128i, _mm256_extracti128_si256(y, 1));
        }
    }
    16 * steps
}

/// Symbol of each 10-bit key `exponent << 2 | top two mantissa bits`.
fn symbol_table(rank: &[u8; 256]) -> [u8; 1024] {
    std::array::from_fn(|k| rank[k >> 2] << 2 | (k & 3) as u8)
}

/// Split a chunk into its layout, dictionary and planes.
fn split(src: DType, bytes: &[u8]) -> Split {
    let n = bytes.len() / src.size();
    match src {
        _ if n == 0 => {}
        DType::BF16 => {
            let h = histogram_bf16(bytes);
            if let Some((dict, rank, sym_hist)) = dictionary(&h) {
                let symtab = symbol_table(&rank);
                let mut sym = vec![0u8; n];
                let mut p6 = vec![0u8; (6 * n).div_ceil(8)];
                // Where the CPU allows, the packed plane's head is written by SIMD code first.
                #[cfg(target_arch = "x86_64")]
                let packed = if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2, checked just above.
                    unsafe { pack6_bf16_avx2(bytes, &mut p6) }
                } else {
                    0
                };
                #[cfg(not(target_arch = "x86_64"))]
                let packed = 0;
                // Four elements per 64-bit load; 4 symbol bytes and 3 packed bytes out.
                let quad_symbols = |w: u64| {
                    let mut sv = 0u32;
                    for j in 0..4 {
                        sv |= (symtab[((w >> (16 * j + 5)) & 0x3FF) as usize] as u32) << (8 * j);
                    }
                    sv.to_le_bytes()
                };
                let (head, rest) = bytes.split_at(2 * packed);
                let (sym_head, sym_rest) = sym.split_at_mut(packed);
                for (c, s) in head.chunks_exact(8).zip(sym_head.chunks_exact_mut(4)) {
                    s.copy_from_slice(&quad_symbols(u64::from_le_bytes(c.try_into().unwrap())));
                }
                let quads = rest
                    .chunks_exact(8)
                    .zip(sym_rest.chunks_exact_mut(4))
                    .zip(p6[3 * packed / 4..].chunks_exact_mut(3));
                for ((c, s), p) in quads {
                    let w = u64::from_le_bytes(c.try_into().unwrap());
                    s.copy_from_slice(&quad_symbols(w));
                    p.copy_from_slice(&gather6(w).to_le_bytes()[..3]);
                }
                let full = n / 4 * 4;
                let mut u = 0u32;
                for (j, c) in bytes[2 * full..].chunks_exact(2).enumerate() {
                    let v = u16::from_le_bytes([c[0], c[1]]) as u32;
                    sym[full + j] = symtab[((v >> 5) & 0x3FF) as usize];
                    u |= ((v >> 10) & 0x20 | v & 0x1F) << (6 * j);
                }
                let tail = &mut p6[3 * (full / 4)..];
                let len = tail.len();
                tail.copy_from_slice(&u.to_le_bytes()[..len]);
                return Split {
                    layout: Layout::Bf16,
                    dict,
                    planes: vec![sym, p6],
                    sym_hist: Some(sym_hist),
                };
            }
        }
        DType::F32 => {
            let v = |c: &[u8]| u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let h = histogram1024(bytes.chunks_exact(4).map(|c| (v(c) >> 21) as usize));
            if let Some((dict, rank, sym_hist)) = dictionary(&h) {
                let (mut sym, mut f, mut m1, mut m0) =
                    (vec![0u8; n], vec![0u8; n], vec![0u8; n], vec![0u8; n]);
                let it = bytes
                    .chunks_exact(4)
                    .zip(sym.iter_mut())
                    .zip(f.iter_mut())
                    .zip(m1.iter_mut())
                    .zip(m0.iter_mut());
                for ((((c, s), f), m1), m0) in it {
                    let v = v(c);
                    *s = rank[(v >> 23) as u8 as usize] << 2 | ((v >> 21) & 3) as u8;
                    *f = ((v >> 26) & 0x20) as u8 | ((v >> 16) & 0x1F) as u8;
                    *m1 = (v >> 8) as u8;
                    *m0 = v as u8;
                }
                let mut p6 = vec![0u8; (6 * n).div_ceil(8)];
                pack6(&f, &mut p6);
                return Split {
                    layout: Layout::F32,
                    dict,
                    planes: vec![sym, p6, m1, m0],
                    sym_hist: Some(sym_hist),
                };
            }
        }
        DType::F16 => {
            let (mut sym, mut lo) = (vec![0u8; n], vec![0u8; n]);
            let mut signs = vec![0u8; n.div_ceil(8)];
            for (i, c) in bytes.chunks_exact(2).enumerate() {
                let v = u16::from_le_bytes([c[0], c[1]]);
                sym[i] = ((v >> 8) & 0x7F) as u8;
                lo[i] = v as u8;
                signs[i / 8] |= ((v >> 15) as u8) << (i % 8);
            }
            return Split {
                layout: Layout::F16,
                dict: Vec::new(),
                planes: vec![sym, lo, signs],
                sym_hist: None,
            };
        }
        _ => {}
    }
    let s = src.size();
    let mut planes = vec![vec![0u8; n]; s];
    for (i, c) in bytes.chunks_exact(s).enumerate() {
        for (p, &b) in planes.iter_mut().zip(c) {
            p[i] = b;
        }
    }
    Split {
        layout: Layout::Bytes,
        dict: Vec::new(),
        planes,
        sym_hist: None,
    }
}

/// Reassemble elements from decoded planes. Symbols outside the exponent dictionary are
/// caught here (a flag bit in the lookup table) rather than in a separate pass.
fn merge(layout: Layout, dict: &[u8], planes: &[Cow<'_, [u8]>], out: &mut [u8]) -> Result<()> {
    const INVALID: u32 = 1 << 31;
    let mut bad = 0u32;
    match layout {
        Layout::Bf16 => unreachable!("bf16 chunks are assembled by decode_bf16"),
        Layout::F32 => {
            let (sym, p6, m1, m0) = (&planes[0], &planes[1], &planes[2], &planes[3]);
            // f32 uses every bit of a u32, so no flag bit: one vectorized max over the symbols.
            if sym.iter().copied().max().unwrap_or(0) as usize >= 4 * dict.len() {
                bad = INVALID;
            }
            let mut hi = [0u32; 256];
            for (s, h) in hi.iter_mut().enumerate().take(4 * dict.len()) {
                *h = (dict[s >> 2] as u32) << 23 | ((s & 3) as u32) << 21;
            }
            let quads = out
                .chunks_exact_mut(16)
                .zip(sym.chunks_exact(4))
                .zip(p6.chunks_exact(3));
            for (i, ((o, s), p)) in quads.enumerate() {
                let u = u32::from_le_bytes([p[0], p[1], p[2], 0]);
                for j in 0..4 {
                    let f = (u >> (6 * j)) & 0x3F;
                    let k = 4 * i + j;
                    let v = hi[s[j] as usize]
                        | (f & 0x20) << 26
                        | (f & 0x1F) << 16
                        | (m1[k] as u32) << 8
                        | m0[k] as u32;
                    o[4 * j..4 * j + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            let full = sym.len() / 4 * 4;
            for (j, o) in out[4 * full..].chunks_exact_mut(4).enumerate() {
                let k = full + j;
                let f = field6(p6, k);
                let v = hi[sym[k] as usize]
                    | (f & 0x20) << 26
                    | (f & 0x1F) << 16
                    | (m1[k] as u32) << 8
                    | m0[k] as u32;
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        Layout::F16 => {
            let (sym, lo, signs) = (&planes[0], &planes[1], &planes[2]);
            for (i, o) in out.chunks_exact_mut(2).enumerate() {
                let sign = ((signs[i / 8] >> (i % 8)) & 1) as u16;
                bad |= (sym[i] & 0x80) as u32;
                let v = sign << 15 | (sym[i] as u16) << 8 | lo[i] as u16;
                o.copy_from_slice(&v.to_le_bytes());
            }
            bad = if bad != 0 { INVALID } else { 0 };
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
    if bad & INVALID != 0 {
        return Err(Error::bad_payload(
            "byteplane: symbol outside the exponent dictionary",
        ));
    }
    Ok(())
}

/// OR each element's sign and low five mantissa bits (packed 6-bit fields) into a bf16 output
/// whose upper bits are already decoded. Eight elements per step (one 64-bit read of the
/// fields, two of the output), then groups of four, then the last few one by one.
fn or_low_bits_bf16(p6: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    let (p6, out) = if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        let done = unsafe { or_low_bits_bf16_avx2(p6, out) };
        (&p6[6 * done / 8..], &mut out[2 * done..])
    } else {
        (p6, out)
    };
    or_low_bits_bf16_scalar(p6, out);
}

fn or_low_bits_bf16_scalar(p6: &[u8], out: &mut [u8]) {
    let groups8 = (out.len() / 16).min(p6.len().saturating_sub(2) / 6);
    for (g, p) in out
        .chunks_exact_mut(16)
        .zip(p6.windows(8).step_by(6))
        .take(groups8)
    {
        let u = u64::from_le_bytes(p.try_into().unwrap());
        let a = u64::from_le_bytes(g[..8].try_into().unwrap()) | spread6(u);
        let b = u64::from_le_bytes(g[8..].try_into().unwrap()) | spread6(u >> 24);
        g[..8].copy_from_slice(&a.to_le_bytes());
        g[8..].copy_from_slice(&b.to_le_bytes());
    }
    let done = 8 * groups8;
    let quads = out[2 * done..]
        .chunks_exact_mut(8)
        .zip(p6[3 * done / 4..].chunks_exact(3));
    for (g, p) in quads {
        let u = u32::from_le_bytes([p[0], p[1], p[2], 0]) as u64;
        let a = u64::from_le_bytes(g.try_into().unwrap()) | spread6(u);
        g.copy_from_slice(&a.to_le_bytes());
    }
    let full = out.len() / 8 * 4;
    for (j, o) in out[2 * full..].chunks_exact_mut(2).enumerate() {
        let f = field6(p6, full + j);
        let v = u16::from_le_bytes([o[0], o[1]]) | ((f & 0x20) << 10 | (f & 0x1F)) as u16;
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// [`or_low_bits_bf16`] for 16 elements a step with AVX2; returns how many elements it did (a
/// multiple of 16, so the rest starts on a byte boundary of `p6`). Each 16-bit lane gathers the
/// two bytes holding its 6-bit field, a multiply shifts the field to bits 6..11 (lanes need
/// different shifts and AVX2 has no per-lane 16-bit shift), and two shift-and-masks place the
/// low bits and the sign.
///
/// # Safety
///
/// The CPU must have AVX2 (callers check `is_x86_feature_detected!("avx2")`). Nothing else is
/// required of the caller: the slices may have any lengths, and every access stays within them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn or_low_bits_bf16_avx2(p6: &[u8], out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    // Each step reads 16 bytes of `p6` (12 used) and 32 of `out`.
    let steps = (out.len() / 32).min(p6.len().saturating_sub(4) / 12);
    // Lane j of each 128-bit half takes bytes (6j/8, 6j/8 + 1) of its 6-byte group; the upper
    // half's group starts 6 bytes later.
    let shuf = _mm256_setr_epi8(
        0, 1, 0, 1, 1, 2, 2, 3, 3, 4, 3, 4, 4, 5, 5, 6, //
        6, 7, 6, 7, 7, 8, 8, 9, 9, 10, 9, 10, 10, 11, 11, 12,
    );
    // Field j starts at bit 6j mod 8 = 0, 6, 4, 2: multiply by 2^(6 - that).
    let mul = _mm256_setr_epi16(64, 1, 4, 16, 64, 1, 4, 16, 64, 1, 4, 16, 64, 1, 4, 16);
    let low = _mm256_set1_epi16(0x1F);
    let sign = _mm256_set1_epi16(0x8000u16 as i16);
    for i in 0..steps {
        // SAFETY: step i reads p6[12i..12i + 16] and out[32i..32i + 32], in bounds by `steps`;
        // unaligned loads and stores are used throughout.
        unsafe {
            let src = _mm_loadu_si128(p6.as_ptr().add(12 * i) as *const __m128i);
            let x = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(src), shuf);
            let x = _mm256_mullo_epi16(x, mul);
            let bits = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(x, 6), low),
                _mm256_and_si256(_mm256_slli_epi16(x, 4), sign),
            );
            let dst = out.as_mut_ptr().add(32 * i) as *mut __m256i;
            _mm256_storeu_si256(dst, _mm256_or_si256(_mm256_loadu_si256(dst), bits));
        }
    }
    16 * steps
}

/// Assemble a bf16 chunk: each element's exponent and top mantissa bits go straight into the
/// output (the Huffman decoder writes them mapped; other symbol planes go through the same
/// map), then the packed sign and low bits are ORed in.
fn decode_bf16(dict: &[u8], heads: &[(u8, &[u8])], lens: &[usize], out: &mut [u8]) -> Result<()> {
    let n = out.len() / 2;
    let p6 = decode_plane(heads[1].0, heads[1].1, lens[1])?;
    check_padding(
        Layout::Bf16,
        &[Cow::Borrowed(&[][..]), Cow::Borrowed(&p6[..])],
        n,
    )?;
    let mut map = [0x1_0000u32; 256];
    for (s, m) in map.iter_mut().enumerate().take(4 * dict.len()) {
        *m = (dict[s >> 2] as u32) << 7 | ((s & 3) as u32) << 5;
    }
    if heads[0].0 == METHOD_HUFFMAN {
        huffman::decode_mapped_u16(heads[0].1, &map, out)?;
    } else {
        let sym = decode_plane(heads[0].0, heads[0].1, lens[0])?;
        let mut bad = 0u32;
        for (o, &s) in out.chunks_exact_mut(2).zip(sym.iter()) {
            let v = map[s as usize];
            bad |= v;
            o.copy_from_slice(&(v as u16).to_le_bytes());
        }
        if bad > 0xFFFF {
            return Err(Error::bad_payload(
                "byteplane: symbol outside the exponent dictionary",
            ));
        }
    }
    or_low_bits_bf16(&p6, out);
    Ok(())
}

/// Padding bits after the last packed field must be zero, so every payload decodes to one value.
fn check_padding(layout: Layout, planes: &[Cow<'_, [u8]>], n: usize) -> Result<()> {
    let (plane, used_bits) = match layout {
        Layout::Bf16 | Layout::F32 => (&planes[1], 6 * n),
        Layout::F16 => (&planes[2], n),
        Layout::Bytes => return Ok(()),
    };
    if used_bits % 8 != 0 {
        if let Some(&last) = plane.last() {
            if last >> (used_bits % 8) != 0 {
                return Err(Error::bad_payload(
                    "byteplane: non-zero padding bits in a packed plane",
                ));
            }
        }
    }
    Ok(())
}

impl ByteplaneCodec {
    fn encode_plane(
        &self,
        plane: &[u8],
        known: Option<&[u32; 256]>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let n = plane.len();
        // Probe a fixed sample first: planes of near-random bits (signs, low mantissa bits) are
        // the common case and are stored raw without a full histogram.
        let worth_huffman = known.is_some() || n < 4096 || {
            let sample: Vec<u8> = plane.iter().step_by(16).copied().collect();
            let h = histogram(&sample);
            let used = h.iter().filter(|&&c| c > 0).count();
            used < 2
                || huffman::encoded_len(&h, &huffman::code_lengths(&h)) * 100 < sample.len() * 98
        };
        let hist = match (known, worth_huffman) {
            (Some(h), _) => *h,
            (None, true) => histogram(plane),
            (None, false) => [0; 256],
        };
        let used = hist.iter().filter(|&&c| c > 0).count();
        if worth_huffman && used == 1 {
            out.push(METHOD_CONST);
            out.extend_from_slice(&1u32.to_le_bytes());
            out.push(plane[0]);
            return Ok(());
        }
        let mut best = (METHOD_RAW, n, None::<Vec<u8>>);
        if worth_huffman && used > 1 {
            let lens = huffman::code_lengths(&hist);
            if huffman::encoded_len(&hist, &lens) < n {
                let mut h = Vec::with_capacity(n);
                huffman::encode(plane, &lens, &mut h);
                if h.len() < best.1 {
                    best = (METHOD_HUFFMAN, h.len(), Some(h));
                }
            }
        }
        let try_zstd = match self.zstd {
            ZstdMode::Always => true,
            ZstdMode::Never => false,
            // Sampled like the Huffman probe: pairs at a fixed stride.
            ZstdMode::Auto => {
                let pairs = plane.chunks_exact(2).step_by(8);
                let total = pairs.len();
                total > 0
                    && plane
                        .chunks_exact(2)
                        .step_by(8)
                        .filter(|p| p[0] == p[1])
                        .count()
                        * 2
                        > total
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
fn decode_plane(method: u8, data: &[u8], n: usize) -> Result<Cow<'_, [u8]>> {
    Ok(match method {
        METHOD_RAW => {
            if data.len() != n {
                return Err(Error::bad_length(format!(
                    "raw plane is {} bytes, expected {n}",
                    data.len()
                )));
            }
            Cow::Borrowed(data)
        }
        METHOD_CONST => {
            let [b] = data else {
                return Err(Error::bad_length("constant plane must be one byte"));
            };
            Cow::Owned(vec![*b; n])
        }
        METHOD_HUFFMAN => {
            let mut out = vec![0u8; n];
            huffman::decode(data, &mut out)?;
            Cow::Owned(out)
        }
        METHOD_ZSTD => {
            let out = zstd_decode(data, n)?;
            if out.len() != n {
                return Err(Error::bad_length(format!(
                    "zstd plane decodes to {} bytes, expected {n}",
                    out.len()
                )));
            }
            Cow::Owned(out)
        }
        m => return Err(Error::bad_payload(format!("unknown plane method {m}"))),
    })
}

const PROPS: Props = Props::lossless(ENTRY.id, ENTRY.name);

impl TensorCodec for ByteplaneCodec {
    fn props(&self) -> Props {
        PROPS
    }
    fn params(&self) -> Vec<u8> {
        vec![self.zstd as u8]
    }
    fn spec(&self) -> String {
        match self.zstd {
            ZstdMode::Auto => "byteplane".into(),
            ZstdMode::Always => "byteplane:zstd=always".into(),
            ZstdMode::Never => "byteplane:zstd=never".into(),
        }
    }
    fn max_encoded_len(&self, src: DType, n: usize) -> usize {
        // Header and dictionary, then every plane at most raw-sized plus its 5-byte header.
        let planes = src.size().max(4);
        3 + MAX_EXPONENTS + planes * 5 + n.saturating_mul(src.size()).saturating_add(planes)
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let sp = split(src, bytes);
        let mut out = Vec::with_capacity(bytes.len() + 64);
        out.push(sp.layout as u8);
        if matches!(sp.layout, Layout::Bf16 | Layout::F32) {
            out.push(sp.dict.len() as u8);
            out.extend_from_slice(&sp.dict);
        }
        out.push(sp.planes.len() as u8);
        for (i, p) in sp.planes.iter().enumerate() {
            let known = if i == 0 { sp.sym_hist.as_ref() } else { None };
            self.encode_plane(p, known, &mut out)?;
        }
        Ok(out)
    }
    fn decode(&self, payload: &[u8], src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let bad = |m: String| Error::bad_payload(format!("byteplane: {m}"));
        let layout = match (payload.first(), src) {
            (Some(0), _) => Layout::Bytes,
            (Some(1), DType::BF16) => Layout::Bf16,
            (Some(2), DType::F16) => Layout::F16,
            (Some(3), DType::F32) => Layout::F32,
            (l, _) => return Err(bad(format!("layout {l:?} is not valid for a {src} tensor"))),
        };
        let mut pos = 1;
        let mut dict: &[u8] = &[];
        if matches!(layout, Layout::Bf16 | Layout::F32) {
            let k = *payload
                .get(1)
                .ok_or_else(|| bad("truncated dictionary".into()))? as usize;
            dict = payload
                .get(2..2 + k)
                .ok_or_else(|| bad("truncated dictionary".into()))?;
            if k == 0 || k > MAX_EXPONENTS || dict.windows(2).any(|w| w[0] >= w[1]) {
                return Err(bad(format!(
                    "exponent dictionary of {k} entries is invalid"
                )));
            }
            pos = 2 + k;
        }
        let lens = plane_lens(layout, src, n);
        if payload.get(pos).map(|&p| p as usize) != Some(lens.len()) {
            return Err(bad(format!("expected {} planes", lens.len())));
        }
        pos += 1;
        let mut heads = Vec::with_capacity(lens.len());
        for i in 0..lens.len() {
            let head = payload
                .get(pos..pos + 5)
                .ok_or_else(|| bad(format!("plane {i} header is truncated")))?;
            let dlen = u32::from_le_bytes(head[1..5].try_into().unwrap()) as usize;
            let data = payload
                .get(pos + 5..(pos + 5).saturating_add(dlen))
                .ok_or_else(|| bad(format!("plane {i} is truncated")))?;
            heads.push((head[0], data));
            pos += 5 + dlen;
        }
        if pos != payload.len() {
            return Err(bad(format!(
                "{} trailing bytes after the planes",
                payload.len() - pos
            )));
        }
        if layout == Layout::Bf16 {
            return decode_bf16(dict, &heads, &lens, out);
        }
        let planes = heads
            .iter()
            .zip(&lens)
            .map(|(&(method, data), &len)| decode_plane(method, data, len))
            .collect::<Result<Vec<_>>>()?;
        check_padding(layout, &planes, n)?;
        merge(layout, dict, &planes, out)
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

    /// The SIMD path of the low-bits pass must agree with the portable one at every length
    /// (vector body, 8- and 4-element groups, single tail elements).
    #[test]
    fn low_bits_pass_matches_portable_code() {
        let mut x = 0x9E37_79B9u32;
        for n in (0usize..70).chain([255, 256, 257, 1000]) {
            let p6: Vec<u8> = (0..(6 * n).div_ceil(8))
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 24) as u8
                })
                .collect();
            // Exponent and top mantissa bits only, as the symbol plane leaves them.
            let base: Vec<u8> = (0..n)
                .flat_map(|i| ((((i * 37) & 0x3FF) as u16) << 5).to_le_bytes())
                .collect();
            let mut a = base.clone();
            let mut b = base.clone();
            or_low_bits_bf16(&p6, &mut a);
            or_low_bits_bf16_scalar(&p6, &mut b);
            assert_eq!(a, b, "n = {n}");
            for i in 0..n {
                let f = field6(&p6, i);
                let v = u16::from_le_bytes([a[2 * i], a[2 * i + 1]]);
                assert_eq!(
                    v & 0x801F,
                    ((f & 0x20) << 10 | (f & 0x1F)) as u16,
                    "n = {n}, i = {i}"
                );
            }
        }
    }

    #[test]
    fn special_values_roundtrip() {
        let f: Vec<u8> = [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-45,
            -3.5,
            7.25,
            1e30,
            -1e-30,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain(0xFFC0_1234u32.to_le_bytes())
        .collect();
        for mode in [ZstdMode::Auto, ZstdMode::Always, ZstdMode::Never] {
            for len in 0..=f.len() {
                let b = &f[..len];
                rt(DType::F32, &b[..len / 4 * 4], mode);
                rt(DType::BF16, &b[..len / 2 * 2], mode);
                rt(DType::F16, &b[..len / 2 * 2], mode);
                rt(DType::I64, &b[..len / 8 * 8], mode);
                rt(DType::U8, b, mode);
            }
        }
    }

    /// bf16 symbol planes stored constant or as zstd go through the same assembly as Huffman.
    #[test]
    fn bf16_symbol_plane_methods() {
        // One exponent and top bits, varying low bits: the symbol plane is constant.
        let same: Vec<u8> = (0..5000u16)
            .flat_map(|i| (0x3F80 | (i & 0x1F)).to_le_bytes())
            .collect();
        let enc = ByteplaneCodec::default()
            .encode(DType::BF16, &same)
            .unwrap();
        assert_eq!(
            enc[2 + 1 + 1],
            METHOD_CONST,
            "layout, 1-exponent dictionary, plane count, method"
        );
        rt(DType::BF16, &same, ZstdMode::Auto);
        // Long runs of two symbols: zstd wins over Huffman.
        let runs: Vec<u8> = (0..20000u16)
            .flat_map(|i| {
                (if (i / 500) % 2 == 0 {
                    0x3F80u16
                } else {
                    0x4000
                })
                .to_le_bytes()
            })
            .collect();
        let enc = ByteplaneCodec {
            zstd: ZstdMode::Always,
        }
        .encode(DType::BF16, &runs)
        .unwrap();
        assert_eq!(
            enc[2 + 2 + 1],
            METHOD_ZSTD,
            "layout, 2-exponent dictionary, plane count, method"
        );
        rt(DType::BF16, &runs, ZstdMode::Always);
    }

    #[test]
    fn many_exponents_fall_back_to_byte_planes() {
        let vals: Vec<u8> = (0..300u32)
            .flat_map(|i| f32::from_bits(i << 23 | 0x1234).to_le_bytes())
            .collect();
        let enc = ByteplaneCodec::default().encode(DType::F32, &vals).unwrap();
        assert_eq!(enc[0], Layout::Bytes as u8);
        rt(DType::F32, &vals, ZstdMode::Auto);
        let b16: Vec<u8> = (0..300u16)
            .flat_map(|i| (i << 7 | 5).to_le_bytes())
            .collect();
        rt(DType::BF16, &b16, ZstdMode::Auto);
    }

    #[test]
    fn gather_spread_inverse() {
        for w in [0u64, u64::MAX, 0x8000_7FFF_1234_ABCD, 0x0123_4567_89AB_CDEF] {
            // Sign and low five mantissa bits of each of the four bf16 lanes survive.
            assert_eq!(
                spread6(gather6(w) as u64),
                w & 0x801F_801F_801F_801F,
                "{w:#x}"
            );
            let fields: Vec<u32> = (0..4)
                .map(|j| ((w >> (16 * j + 10)) & 0x20 | (w >> (16 * j)) & 0x1F) as u32)
                .collect();
            let packed = fields
                .iter()
                .enumerate()
                .fold(0u32, |a, (j, f)| a | f << (6 * j));
            assert_eq!(gather6(w), packed);
        }
    }

    #[test]
    fn pack6_fields() {
        let f: Vec<u8> = (0..11u8).map(|i| (i * 23) & 0x3F).collect();
        let mut p = vec![0u8; (6 * f.len()).div_ceil(8)];
        pack6(&f, &mut p);
        for (i, &v) in f.iter().enumerate() {
            assert_eq!(field6(&p, i), v as u32);
        }
    }
}
