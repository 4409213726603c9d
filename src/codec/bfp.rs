//! Tenstorrent block floats `bfp8` (id 10), `bfp4` (id 11), `bfp2` (id 12) — TTNN's
//! `bfloat8_b` / `bfloat4_b` / `bfloat2_b` tiles — and `fp0` (id 13), a tile with no payload.
//!
//! Spec: formats-spec/blockfloat.md. Tile codecs see their chunk as whole 32x32 tiles of the
//! tensor's padded 2-D view (the container's `tiles32` element order), 1024 f32 values each in
//! row-major order inside the tile. A `bfpN` tile is 64 shared-exponent bytes (group
//! `p = 16 * face + row`, faces TL, TR, BL, BR) followed by the 64 groups' codes, `sign << W | m`
//! with `W` = 7, 3, 1 magnitude bits: 1088, 576 and 320 bytes. Encoding follows TTNN's host
//! packer bit for bit: shared exponent = largest exponent field, a truncating alignment shift,
//! round-to-nearest-even on what is left (no sticky bit), saturation, zero/denormal flush.
//! Config: `--codec bfp8` (no options), `bfp4`, `bfp2`, `fp0`.

use super::tile::{tile_codec, tile_props, TileKernel, TILE, TILE_ELEMS};
use super::{no_params, Codec, CodecEntry, Props, TensorCodec};
use crate::dtype::DType;
use crate::error::Result;
use std::sync::Arc;

/// Block-float width: magnitude bits per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bfp {
    /// 7 magnitude bits, 1088 bytes a tile.
    B8,
    /// 3 magnitude bits, 576 bytes a tile.
    B4,
    /// 1 magnitude bit, 320 bytes a tile.
    B2,
}

impl Bfp {
    /// Magnitude bits `W`.
    pub const fn width(self) -> u32 {
        match self {
            Bfp::B8 => 7,
            Bfp::B4 => 3,
            Bfp::B2 => 1,
        }
    }

    /// Bytes of one packed tile: 64 exponents plus 1024 codes of `W + 1` bits.
    pub const fn tile_bytes(self) -> usize {
        64 + TILE_ELEMS * (self.width() as usize + 1) / 8
    }

    /// Codec name.
    pub const fn name(self) -> &'static str {
        match self {
            Bfp::B8 => "bfp8",
            Bfp::B4 => "bfp4",
            Bfp::B2 => "bfp2",
        }
    }
}

/// Shared exponent and codes of one group of 16 f32 bit patterns (formats-spec/blockfloat.md §1).
pub fn encode_group(w: &[u32; 16], kind: Bfp) -> (u8, [u8; 16]) {
    match kind {
        Bfp::B8 => encode_group_w::<7>(w),
        Bfp::B4 => encode_group_w::<3>(w),
        Bfp::B2 => encode_group_w::<1>(w),
    }
}

/// [`encode_group`] for `W` magnitude bits; a constant `W` and no branches let the compiler
/// unroll and vectorize the 16 elements. `recon` receives what the codes decode to (the same
/// bits as [`decode_tile`] gives), for the compressor's measurements without a decode pass.
#[inline(always)]
fn encode_group_w<const W: u32>(w: &[u32; 16]) -> (u8, [u8; 16]) {
    let mut recon = [0f32; 16];
    encode_group_recon_w::<W, false>(w, &mut recon)
}

#[inline(always)]
fn encode_group_recon_w<const W: u32, const R: bool>(
    w: &[u32; 16],
    recon: &mut [f32; 16],
) -> (u8, [u8; 16]) {
    let shift = 24 - W;
    let exp = w.iter().map(|&x| (x >> 23) & 0xFF).fold(0, u32::max);
    let max_m = (1u32 << W) - 1;
    let unit = unit_w::<W>(exp as u8);
    let mut codes = [0u8; 16];
    for ((c, r), &x) in codes.iter_mut().zip(recon.iter_mut()).zip(w) {
        let e = (x >> 23) & 0xFF;
        // Alignment drops the shifted-out bits (no sticky bit); 32 or more shifts all out.
        let m = ((x & 0x7F_FFFF) | 0x80_0000)
            .checked_shr(exp - e)
            .unwrap_or(0);
        let m = ((m + (1 << (shift - 1)) - 1 + ((m >> shift) & 1)) >> shift).min(max_m);
        // Zero and denormals flush; a zero magnitude drops the sign.
        let m = if e == 0 { 0 } else { m };
        let sign = if m == 0 { 0 } else { x >> 31 };
        *c = (sign << W | m) as u8;
        if R {
            *r = f32::from_bits((m as f32 * unit).to_bits() | sign << 31);
        }
    }
    (exp as u8, codes)
}

/// Value of magnitude 1 under shared exponent `exp`: `2^(exp - 127 - (W - 1))`. `m * unit` is
/// exact in f32: m has at most 7 bits and the exponent, at least -133, keeps m's lowest bit
/// above f32's smallest denormal (2^-149).
#[inline(always)]
fn unit_w<const W: u32>(exp: u8) -> f32 {
    pow2(exp as i32 - 127 - (W as i32 - 1)) as f32
}

/// Value of one code under shared exponent `exp`: `(-1)^s * m * 2^(exp - 127 - (W - 1))`, +0
/// for m = 0. Exact in f32 (m has at most 7 bits and the scale is at least 2^-133).
pub fn decode_value(exp: u8, code: u8, kind: Bfp) -> f32 {
    let width = kind.width();
    let m = (code as u32) & ((1 << width) - 1);
    if m == 0 {
        return 0.0;
    }
    let v = m as f64 * pow2(exp as i32 - 127 - (width as i32 - 1));
    (if code >> width & 1 == 1 { -v } else { v }) as f32
}

/// 2^k as f64 for -1100 < k < 1000 (exact).
pub(crate) fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// Tile row and column of element `j` of group `p` (face `p / 16`, face row `p % 16`).
#[inline]
fn group_origin(p: usize) -> (usize, usize) {
    let (f, r) = (p / 16, p % 16);
    (16 * (f / 2) + r, 16 * (f % 2))
}

/// Pack one 32x32 tile (row-major f32) into `out` (`kind.tile_bytes()` bytes).
#[inline]
pub fn encode_tile(tile: &[f32], kind: Bfp, out: &mut [u8]) {
    match kind {
        Bfp::B8 => encode_tile_w::<7, false>(tile, out, &mut []),
        Bfp::B4 => encode_tile_w::<3, false>(tile, out, &mut []),
        Bfp::B2 => encode_tile_w::<1, false>(tile, out, &mut []),
    }
}

/// [`encode_tile`] that also writes into `recon` (1024 values) what the tile decodes to.
#[inline]
pub fn encode_tile_recon(tile: &[f32], kind: Bfp, out: &mut [u8], recon: &mut [f32]) {
    match kind {
        Bfp::B8 => encode_tile_w::<7, true>(tile, out, recon),
        Bfp::B4 => encode_tile_w::<3, true>(tile, out, recon),
        Bfp::B2 => encode_tile_w::<1, true>(tile, out, recon),
    }
}

fn encode_tile_w<const W: u32, const R: bool>(tile: &[f32], out: &mut [u8], recon: &mut [f32]) {
    // The branch-free group encoder vectorizes: with AVX2 per-lane variable shifts (`vpsrlvd`,
    // which gives 0 for counts of 32 or more, as the format wants) and unsigned min; with
    // AVX-512 one 16-lane register holds a whole group (a fifth faster again).
    #[cfg(target_arch = "x86_64")]
    {
        if isa::has_avx512() {
            // SAFETY: the CPU has these features, checked just above.
            return unsafe { isa::avx512::<W, R>(tile, out, recon) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { isa::avx2::<W, R>(tile, out, recon) };
        }
    }
    encode_tile_core::<W, R>(tile, out, recon)
}

/// The encoder compiled for wider vector units; the same code, so the same bytes.
#[cfg(target_arch = "x86_64")]
mod isa {
    use super::encode_tile_core;

    pub fn has_avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
    pub fn avx512<const W: u32, const R: bool>(tile: &[f32], out: &mut [u8], recon: &mut [f32]) {
        encode_tile_core::<W, R>(tile, out, recon)
    }

    #[target_feature(enable = "avx2")]
    pub fn avx2<const W: u32, const R: bool>(tile: &[f32], out: &mut [u8], recon: &mut [f32]) {
        encode_tile_core::<W, R>(tile, out, recon)
    }
}

#[inline(always)]
fn encode_tile_core<const W: u32, const R: bool>(tile: &[f32], out: &mut [u8], recon: &mut [f32]) {
    debug_assert_eq!(tile.len(), TILE_ELEMS);
    debug_assert!(!R || recon.len() == TILE_ELEMS);
    let group_bytes = 2 * (W as usize + 1); // 16 codes of W + 1 bits
    let mut vals = [0f32; 16];
    for p in 0..64 {
        let (row, col) = group_origin(p);
        let at = row * TILE + col;
        let src = &tile[at..at + 16];
        let w: [u32; 16] = std::array::from_fn(|j| src[j].to_bits());
        let (exp, codes) = encode_group_recon_w::<W, R>(&w, &mut vals);
        if R {
            recon[at..at + 16].copy_from_slice(&vals);
        }
        out[p] = exp;
        let dst = &mut out[64 + p * group_bytes..64 + (p + 1) * group_bytes];
        match W {
            7 => dst.copy_from_slice(&codes),
            3 => {
                for (k, b) in dst.iter_mut().enumerate() {
                    *b = codes[2 * k] | codes[2 * k + 1] << 4;
                }
            }
            _ => {
                for (k, b) in dst.iter_mut().enumerate() {
                    *b = codes[4 * k]
                        | codes[4 * k + 1] << 2
                        | codes[4 * k + 2] << 4
                        | codes[4 * k + 3] << 6;
                }
            }
        }
    }
}

/// Unpack one tile written by [`encode_tile`] into 1024 row-major f32 values. Every byte pattern
/// decodes (there is no invalid tile).
#[inline]
pub fn decode_tile(data: &[u8], kind: Bfp, out: &mut [f32]) {
    match kind {
        Bfp::B8 => decode_tile_w::<7>(data, out),
        Bfp::B4 => decode_tile_w::<3>(data, out),
        Bfp::B2 => decode_tile_w::<1>(data, out),
    }
}

fn decode_tile_w<const W: u32>(data: &[u8], out: &mut [f32]) {
    // As for encoding: the branch-free element loop vectorizes better with AVX2.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn avx2<const W: u32>(data: &[u8], out: &mut [f32]) {
            decode_tile_core::<W>(data, out)
        }
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { avx2::<W>(data, out) };
    }
    decode_tile_core::<W>(data, out)
}

#[inline(always)]
fn decode_tile_core<const W: u32>(data: &[u8], out: &mut [f32]) {
    let bits = W as usize + 1;
    let group_bytes = 2 * bits;
    let mask = (1u32 << bits) - 1;
    for p in 0..64 {
        let (row, col) = group_origin(p);
        let src = &data[64 + p * group_bytes..64 + (p + 1) * group_bytes];
        let dst = &mut out[row * TILE + col..row * TILE + col + 16];
        let unit = unit_w::<W>(data[p]);
        for (j, d) in dst.iter_mut().enumerate() {
            let bit = j * bits;
            let code = (src[bit / 8] as u32 >> (bit % 8)) & mask;
            let m = code & (mask >> 1);
            let sign = if m == 0 { 0 } else { code >> W };
            *d = f32::from_bits((m as f32 * unit).to_bits() | sign << 31);
        }
    }
}

/// `bfp8` / `bfp4` / `bfp2` tile codec.
#[derive(Debug, Clone, Copy)]
pub struct BfpCodec(pub Bfp);

/// `fp0`: every tile dropped; decodes to zeros.
#[derive(Debug, Clone, Copy)]
pub struct Fp0Codec;

macro_rules! bfp_entry {
    ($id:expr, $kind:expr, $summary:expr) => {
        CodecEntry {
            id: $id,
            name: $kind.name(),
            version: 1,
            summary: $summary,
            from_options: |_| Ok(Codec::Tensor(Arc::new(BfpCodec($kind)))),
            from_params: |p| {
                no_params($kind.name(), p)?;
                Ok(Codec::Tensor(Arc::new(BfpCodec($kind))))
            },
        }
    };
}

pub(super) const BFP8_ENTRY: CodecEntry = bfp_entry!(
    10,
    Bfp::B8,
    "Tenstorrent bfloat8_b tiles: 16-element shared exponent, 7-bit magnitudes (1088 B/tile)"
);
pub(super) const BFP4_ENTRY: CodecEntry = bfp_entry!(
    11,
    Bfp::B4,
    "Tenstorrent bfloat4_b tiles: 16-element shared exponent, 3-bit magnitudes (576 B/tile)"
);
pub(super) const BFP2_ENTRY: CodecEntry = bfp_entry!(
    12,
    Bfp::B2,
    "Tenstorrent bfloat2_b tiles: 16-element shared exponent, 1-bit magnitudes (320 B/tile)"
);
pub(super) const FP0_ENTRY: CodecEntry = CodecEntry {
    id: 13,
    name: "fp0",
    version: 1,
    summary: "tiles dropped: no payload, decodes to zeros",
    from_options: |_| Ok(Codec::Tensor(Arc::new(Fp0Codec))),
    from_params: |p| {
        no_params("fp0", p)?;
        Ok(Codec::Tensor(Arc::new(Fp0Codec)))
    },
};

impl TileKernel for BfpCodec {
    fn kernel_name(&self) -> &'static str {
        self.0.name()
    }
    #[inline]
    fn tile_bytes(&self) -> usize {
        self.0.tile_bytes()
    }
    #[inline]
    fn pack(&self, tile: &[f32], out: &mut [u8]) {
        encode_tile(tile, self.0, out)
    }
    #[inline]
    fn unpack(&self, data: &[u8], out: &mut [f32]) {
        decode_tile(data, self.0, out)
    }
    #[inline]
    fn pack_recon(&self, tile: &[f32], out: &mut [u8], recon: &mut [f32]) {
        encode_tile_recon(tile, self.0, out, recon)
    }
    #[inline]
    fn packed_finite(&self, packed: &[u8]) -> Option<bool> {
        // A group's exponent is the largest exponent field in it: 255 only for Inf or NaN.
        Some(!packed[..64].contains(&0xFF))
    }
}

impl TensorCodec for BfpCodec {
    fn props(&self) -> Props {
        const B8: Props = tile_props(BFP8_ENTRY.id, BFP8_ENTRY.name);
        const B4: Props = tile_props(BFP4_ENTRY.id, BFP4_ENTRY.name);
        const B2: Props = tile_props(BFP2_ENTRY.id, BFP2_ENTRY.name);
        match self.0 {
            Bfp::B8 => B8,
            Bfp::B4 => B4,
            Bfp::B2 => B2,
        }
    }
    tile_codec!();
}

impl TileKernel for Fp0Codec {
    fn kernel_name(&self) -> &'static str {
        FP0_ENTRY.name
    }
    #[inline]
    fn tile_bytes(&self) -> usize {
        0
    }
    #[inline]
    fn pack(&self, _: &[f32], _: &mut [u8]) {}
    #[inline]
    fn unpack(&self, _: &[u8], out: &mut [f32]) {
        out.fill(0.0);
    }
}

impl TensorCodec for Fp0Codec {
    fn props(&self) -> Props {
        const P: Props = tile_props(FP0_ENTRY.id, FP0_ENTRY.name);
        P
    }
    tile_codec!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every build of the tile encoder (portable, AVX2, AVX-512, as the CPU allows) writes the
    /// same bytes and reconstruction, on values that exercise every branch of the format.
    #[test]
    fn encoder_builds_agree() {
        fn check<const W: u32>(tile: &[f32]) {
            let n = 64 + TILE_ELEMS * (W as usize + 1) / 8;
            let (mut o0, mut r0) = (vec![0u8; n], vec![0f32; TILE_ELEMS]);
            encode_tile_core::<W, true>(tile, &mut o0, &mut r0);
            let r0: Vec<u32> = r0.iter().map(|v| v.to_bits()).collect();
            #[cfg(target_arch = "x86_64")]
            {
                type Build = fn(&[f32], &mut [u8], &mut [f32]);
                let mut builds: Vec<Build> = Vec::new();
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    builds.push(|t, o, r| unsafe { isa::avx2::<W, true>(t, o, r) });
                }
                if isa::has_avx512() {
                    // SAFETY: the CPU has these features.
                    builds.push(|t, o, r| unsafe { isa::avx512::<W, true>(t, o, r) });
                }
                for b in builds {
                    let (mut o, mut r) = (vec![0u8; n], vec![0f32; TILE_ELEMS]);
                    b(tile, &mut o, &mut r);
                    assert_eq!(o, o0);
                    assert_eq!(r.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), r0);
                }
            }
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..40 {
            let tile: Vec<f32> = (0..TILE_ELEMS)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match (round + i) % 11 {
                        0 => 0.0,
                        1 => -0.0,
                        2 => f32::from_bits((x as u32) & 0x807F_FFFF), // denormals
                        3 => f32::MAX * if x & 1 == 0 { 1.0 } else { -1.0 },
                        // Exponents spread over the whole range.
                        _ => f32::from_bits(
                            (x as u32) & 0x807F_FFFF | ((x >> 40) as u32 % 254) << 23,
                        ),
                    }
                })
                .collect();
            check::<7>(&tile);
            check::<3>(&tile);
            check::<1>(&tile);
        }
    }

    fn row(bits: &[u32]) -> [u32; 16] {
        bits.try_into().unwrap()
    }

    /// formats-spec/blockfloat.md §8.1-8.3 (from ../shared/formats.md §8), byte for byte.
    #[test]
    fn spec_row_vectors() {
        let r8 = row(&[
            0x407FEF9E, 0xBF800000, 0x00000000, 0x80000000, 0x40030000, 0x40010000, 0x3DCCCCCD,
            0xBC800000, 0x3F820001, 0xC0400000, 0x3727C5AC, 0x000116C2, 0xC03FFE5D, 0x3F000000,
            0x3D000000, 0xBD400000,
        ]);
        let (e, c) = encode_group(&r8, Bfp::B8);
        assert_eq!(e, 0x80);
        assert_eq!(
            c,
            [
                0x7F, 0xA0, 0x00, 0x00, 0x42, 0x40, 0x03, 0x00, 0x20, 0xE0, 0x00, 0x00, 0xE0, 0x10,
                0x01, 0x82
            ]
        );
        let dec: Vec<f32> = c.iter().map(|&k| decode_value(e, k, Bfp::B8)).collect();
        assert_eq!(&dec[..4], &[3.96875, -1.0, 0.0, 0.0]);
        assert_eq!(dec[8], 1.0); // the missing sticky bit: exact RNE would give 1.03125
        assert_eq!(dec[15], -0.0625);

        let r4 = row(&[
            0x3FF33333, 0xBF800000, 0x00000000, 0x3EC00000, 0x3F200000, 0x3E000000, 0xBE051EB8,
            0x3FC00000, 0xBFE00000, 0x3F200001, 0x3FA00000, 0xBF000000, 0x3F400000, 0x0DA24260,
            0x3F8FDF3B, 0xBF9020C5,
        ]);
        let (e, c) = encode_group(&r4, Bfp::B4);
        assert_eq!(e, 0x7F);
        assert_eq!(
            c,
            [0x7, 0xC, 0x0, 0x2, 0x2, 0x0, 0x9, 0x6, 0xF, 0x2, 0x5, 0xA, 0x3, 0x0, 0x4, 0xD]
        );
        assert_eq!(decode_value(e, 0xD, Bfp::B4), -1.25);

        let r2 = row(&[
            0x3FF33333, 0xBF800000, 0x00000000, 0x3F000000, 0x3F000001, 0x3F400000, 0xBF19999A,
            0xBECCCCCD, 0x3FC00000, 0x3E800000, 0xBFFEB852, 0x3A83126F, 0x3F028F5C, 0x80000000,
            0x3F800000, 0xBF000000,
        ]);
        let (e, c) = encode_group(&r2, Bfp::B2);
        assert_eq!(e, 0x7F);
        assert_eq!(
            c,
            [0x1, 0x3, 0x0, 0x0, 0x0, 0x1, 0x3, 0x0, 0x1, 0x0, 0x3, 0x0, 0x1, 0x0, 0x1, 0x0]
        );

        // §8.4: the rows placed at tile[0][0:16], tile[0][16:32] and tile[16][0:16].
        for (kind, r, packed, exp_byte, offsets) in [
            (
                Bfp::B8,
                r8,
                &[
                    0x7F, 0xA0, 0x00, 0x00, 0x42, 0x40, 0x03, 0x00, 0x20, 0xE0, 0x00, 0x00, 0xE0,
                    0x10, 0x01, 0x82,
                ][..],
                0x80,
                [64, 320, 576],
            ),
            (
                Bfp::B4,
                r4,
                &[0xC7, 0x20, 0x02, 0x69, 0x2F, 0xA5, 0x03, 0xD4][..],
                0x7F,
                [64, 192, 320],
            ),
            (
                Bfp::B2,
                r2,
                &[0x0D, 0x34, 0x31, 0x11][..],
                0x7F,
                [64, 128, 192],
            ),
        ] {
            let mut tile = vec![0f32; TILE_ELEMS];
            for (j, &b) in r.iter().enumerate() {
                let v = f32::from_bits(b);
                tile[j] = v;
                tile[16 + j] = v;
                tile[16 * TILE + j] = v;
            }
            let mut out = vec![0u8; kind.tile_bytes()];
            encode_tile(&tile, kind, &mut out);
            assert_eq!(out.len(), [1088, 576, 320][kind as usize]);
            for (p, &b) in out[..64].iter().enumerate() {
                let want = if [0, 16, 32].contains(&p) {
                    exp_byte
                } else {
                    0
                };
                assert_eq!(b, want, "{} exponent byte {p}", kind.name());
            }
            for off in offsets {
                assert_eq!(&out[off..off + packed.len()], packed, "{}", kind.name());
            }
        }
    }

    /// The upstream rounding vectors (formats-spec §2.4): bfp8 with E = the element's exponent.
    #[test]
    fn upstream_rounding_vectors() {
        for (x, code, dec) in [
            (64.75f32, 0x41u8, 65.0f32),
            (65.25, 0x41, 65.0),
            (64.5, 0x40, 64.0),
            (65.5, 0x42, 66.0),
        ] {
            for s in [1.0f32, -1.0] {
                let mut w = [0u32; 16];
                w[0] = (s * x).to_bits();
                let (e, c) = encode_group(&w, Bfp::B8);
                let want = if s < 0.0 { code | 0x80 } else { code };
                assert_eq!(c[0], want, "{x}");
                assert_eq!(decode_value(e, c[0], Bfp::B8), s * dec);
            }
        }
    }

    #[test]
    fn tile_roundtrip_is_idempotent_and_bounded() {
        let mut x = 0x2545_F491u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for kind in [Bfp::B8, Bfp::B4, Bfp::B2] {
            for scale in [1e-30f32, 1e-3, 1.0, 1e20] {
                let tile: Vec<f32> = (0..TILE_ELEMS).map(|_| rnd() * scale).collect();
                let mut a = vec![0u8; kind.tile_bytes()];
                encode_tile(&tile, kind, &mut a);
                let mut dec = vec![0f32; TILE_ELEMS];
                decode_tile(&a, kind, &mut dec);
                let mut b = vec![0u8; kind.tile_bytes()];
                encode_tile(&dec, kind, &mut b);
                assert_eq!(a, b, "{} at scale {scale}", kind.name());
                // Error bound: one unit of the group's scale (half from rounding, up to one
                // where the top element saturates).
                for (p, &exp) in a[..64].iter().enumerate() {
                    let (r, c) = group_origin(p);
                    let unit = pow2(exp as i32 - 127 - (kind.width() as i32 - 1)) as f32;
                    for j in 0..16 {
                        let i = (r * TILE) + c + j;
                        assert!(
                            (tile[i] - dec[i]).abs() <= unit,
                            "{} p={p} j={j}: {} vs {}",
                            kind.name(),
                            tile[i],
                            dec[i]
                        );
                    }
                }
            }
        }
    }
}
