//! Microscaling FP4: OCP `mxfp4` (id 14) and NVIDIA `nvfp4` (id 15), in tenpak 32x32 tiles.
//!
//! Spec: formats-spec/blockfloat.md §mxfp4, §nvfp4. Both store FP4 E2M1 elements, two per byte,
//! the even element in the low nibble. Blocks run along the last dimension as stored.
//! - `mxfp4` tile (544 bytes): 32 E8M0 scale bytes (one per tile row: the 32-element block),
//!   then 32 rows of 16 code bytes. Scale = `floor(log2(amax)) - 2` (OCP "FLOOR"), elements
//!   rounded to nearest even and saturated to ±6.
//! - `nvfp4` tile (576 bytes): 64 E4M3 block scales (block `2 * row + half`), then the codes.
//!   The per-tensor f32 decode scale `g = max(amax / 2688, 2^-126)` is the parameter (4 bytes,
//!   little-endian), computed from the whole tensor by the bind step ([`TensorCodec::bind`]).
//!
//! Config: `--codec mxfp4`, `--codec nvfp4` (no options).

use super::bfp::pow2;
use super::no_params;
use super::tile::{
    decode_tiles, encode_f32_tiles, encode_tiles, tile_codec, tile_props, TileCodec, TileKernel,
    TileVisitor, TILE, TILE_ELEMS,
};
use super::{Binds, Codec, CodecEntry, Props, TensorCodec, TensorFacts};
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::sync::Arc;

/// E2M1 magnitudes by code (the sign is bit 3).
pub const E2M1: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// FP4 E2M1 code of `y`: round to nearest, ties to even code, saturate to ±6; a negative input
/// (-0.0 included) keeps its sign bit even when it rounds to zero.
pub fn e2m1(y: f32) -> u8 {
    let a = y.abs();
    // The code is the number of rounding thresholds |y| passes: strict where the tie goes to
    // the even code below, inclusive where it goes above.
    let m = (a > 0.25) as u8
        + (a >= 0.75) as u8
        + (a > 1.25) as u8
        + (a >= 1.75) as u8
        + (a > 2.5) as u8
        + (a >= 3.5) as u8
        + (a > 5.0) as u8;
    m | ((y.is_sign_negative() as u8) << 3)
}

/// Value of an E2M1 code.
pub fn e2m1_value(code: u8) -> f32 {
    let v = E2M1[(code & 7) as usize];
    if code & 8 != 0 {
        -v
    } else {
        v
    }
}

/// FP8 E4M3 (e4m3fn) code of a positive finite `x`: round to nearest even, values from 464 up
/// saturate to 448 (0x7E).
pub fn e4m3(x: f32) -> u8 {
    if x >= 464.0 {
        return 0x7E;
    }
    let b = x.to_bits();
    let e = ((b >> 23) & 0xFF) as i32 - 127;
    if e >= -6 {
        // Rebias the exponent from 127 to 7, then round the mantissa from 23 bits to 3; a carry
        // moves into the exponent as it should.
        let v = b - (120 << 23);
        let code = (v + 0x7_FFFF + ((v >> 20) & 1)) >> 20;
        code.min(0x7E) as u8
    } else {
        // Subnormal: m * 2^-9, m = 0..7; 8 rounds up to the smallest normal, code 0x08.
        (x * 512.0).round_ties_even() as u8
    }
}

/// Value of an E4M3 code (0x7F and 0xFF are NaN).
pub fn e4m3_value(code: u8) -> f32 {
    let (s, e, m) = (
        (code >> 7) as i32,
        ((code >> 3) & 0xF) as i32,
        (code & 7) as f64,
    );
    if code & 0x7F == 0x7F {
        return f32::NAN;
    }
    let v = if e == 0 {
        m * pow2(-9)
    } else {
        (8.0 + m) * pow2(e - 10)
    };
    (if s == 1 { -v } else { v }) as f32
}

/// `floor(log2(a))` of a positive finite f32 (denormals included).
fn floor_log2(a: f32) -> i32 {
    let b = a.to_bits();
    let e = ((b >> 23) & 0xFF) as i32;
    if e == 0 {
        -149 + (31 - (b & 0x7F_FFFF).leading_zeros() as i32)
    } else {
        e - 127
    }
}

/// E8M0 scale byte and codes of one 32-element mxfp4 block (all values finite).
pub fn mxfp4_block(v: &[f32], codes: &mut [u8]) -> u8 {
    let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let s = if amax == 0.0 {
        -127
    } else {
        (floor_log2(amax) - 2).clamp(-127, 127)
    };
    // 2^-s is a normal f32 (-127 <= s <= 125 for finite data) and the scaled values stay below
    // 8, so the product is exact wherever it can reach a rounding threshold.
    let inv = pow2(-s) as f32;
    for (c, &x) in codes.iter_mut().zip(v) {
        *c = e2m1(x * inv);
    }
    (s + 127) as u8
}

/// Pack `codes` two per byte, the even element in the low nibble.
fn pack_nibbles(codes: &[u8], out: &mut [u8]) {
    for (o, pair) in out.iter_mut().zip(codes.chunks_exact(2)) {
        *o = pair[0] | pair[1] << 4;
    }
}

/// mxfp4 tile: bytes per tile.
pub const MXFP4_TILE_BYTES: usize = 32 + TILE_ELEMS / 2;
/// nvfp4 tile: bytes per tile.
pub const NVFP4_TILE_BYTES: usize = 64 + TILE_ELEMS / 2;

/// Pack one row-major 32x32 tile as mxfp4.
#[inline]
pub fn mxfp4_encode_tile(tile: &[f32], out: &mut [u8]) {
    let mut codes = [0u8; TILE];
    for r in 0..TILE {
        out[r] = mxfp4_block(&tile[r * TILE..(r + 1) * TILE], &mut codes);
        pack_nibbles(&codes, &mut out[32 + 16 * r..32 + 16 * (r + 1)]);
    }
}

/// E2M1 values of all 16 codes, sign included (8 is -0.0).
const E2M1_SIGNED: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Unpack one mxfp4 tile; a scale byte 0xFF (NaN in OCP) decodes its block to NaN.
#[inline]
pub fn mxfp4_decode_tile(data: &[u8], out: &mut [f32]) {
    for r in 0..TILE {
        let scale = data[r];
        // E2M1 values have two significant bits, so the product with a power of two (an f32
        // subnormal for small scales) is exact.
        let x = if scale == 0xFF {
            f32::NAN
        } else {
            pow2(scale as i32 - 127) as f32
        };
        let codes = &data[32 + 16 * r..32 + 16 * (r + 1)];
        for (o, &b) in out[r * TILE..(r + 1) * TILE].chunks_exact_mut(2).zip(codes) {
            o[0] = E2M1_SIGNED[(b & 0xF) as usize] * x;
            o[1] = E2M1_SIGNED[(b >> 4) as usize] * x;
        }
    }
}

/// nvfp4 per-tensor decode scale `g` for a tensor whose largest magnitude is `amax`: `amax /
/// 2688`, at least the smallest normal f32 (a tensor of subnormal weights would otherwise get
/// `g = 0`, which no reader accepts), 1 for an all-zero tensor.
pub fn nvfp4_global(amax: f32) -> f32 {
    if amax == 0.0 {
        1.0
    } else {
        (amax / 2688.0).max(f32::MIN_POSITIVE)
    }
}

/// E4M3 scale and codes of one 16-element nvfp4 block (ModelOpt's arithmetic, all in f32).
pub fn nvfp4_block(v: &[f32], g: f32, codes: &mut [u8]) -> u8 {
    let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let mut sb = amax / (6.0 * g);
    if sb == 0.0 {
        sb = 1.0;
    }
    let sb = sb.max(pow2(-9) as f32);
    let s = e4m3(sb);
    let den = e4m3_value(s) * g;
    for (c, &x) in codes.iter_mut().zip(v) {
        *c = e2m1(x / den);
    }
    s
}

/// [`nvfp4_block`] whose E4M3 scale minimises `sum w_i (v_i - v^_i)^2`: the absmax scale and
/// 12 shrunk ones (factors `1 - 0.025k`), each rounded to E4M3; ties keep the larger.
pub fn nvfp4_block_weighted(v: &[f32], w: &[f32], g: f32, codes: &mut [u8]) -> u8 {
    let base = nvfp4_block(v, g, codes);
    let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if amax == 0.0 {
        return base;
    }
    let err = |s: u8, out: &mut [u8]| -> f64 {
        let den = e4m3_value(s) * g;
        let mut e = 0f64;
        for ((c, &x), &wi) in out.iter_mut().zip(v).zip(w) {
            *c = e2m1(x / den);
            let d = (x - E2M1_SIGNED[*c as usize] * den) as f64;
            e += wi as f64 * d * d;
        }
        e
    };
    let mut trial = [0u8; 16];
    let mut best = (err(base, &mut trial), base);
    for k in 1..13 {
        let sb = (amax / (6.0 * g) * (1.0 - 0.025 * k as f32)).max(pow2(-9) as f32);
        let s = e4m3(sb);
        if s == best.1 {
            continue;
        }
        let e = err(s, &mut trial);
        if e < best.0 {
            best = (e, s);
        }
    }
    err(best.1, &mut codes[..v.len()]);
    best.1
}

/// Pack one row-major 32x32 tile as nvfp4 with global decode scale `g`, each 16-element block's
/// scale chosen by [`nvfp4_block_weighted`] under the tile's column weights `w` (32 of them).
pub fn nvfp4_encode_tile_weighted(tile: &[f32], w: &[f32], g: f32, out: &mut [u8]) {
    let mut codes = [0u8; 16];
    for b in 0..64 {
        let half = &w[16 * (b % 2)..16 * (b % 2) + 16];
        out[b] = nvfp4_block_weighted(&tile[16 * b..16 * (b + 1)], half, g, &mut codes);
        pack_nibbles(&codes, &mut out[64 + 8 * b..64 + 8 * (b + 1)]);
    }
}

/// The global decode scale of a bound nvfp4 stage (its parameters).
pub(super) fn nvfp4_global_of(c: &dyn TensorCodec) -> Option<f32> {
    (c.id() == NVFP4_ENTRY.id)
        .then(|| {
            <[u8; 4]>::try_from(c.params().as_slice())
                .ok()
                .map(f32::from_le_bytes)
        })
        .flatten()
}

/// Pack one row-major 32x32 tile as nvfp4 with global decode scale `g`.
#[inline]
pub fn nvfp4_encode_tile(tile: &[f32], g: f32, out: &mut [u8]) {
    let mut codes = [0u8; 16];
    for b in 0..64 {
        out[b] = nvfp4_block(&tile[16 * b..16 * (b + 1)], g, &mut codes);
        pack_nibbles(&codes, &mut out[64 + 8 * b..64 + 8 * (b + 1)]);
    }
}

/// Unpack one nvfp4 tile: `E2M1[code] * f32(E4M3[scale] * g)` in f32, the encoder's divisor
/// (the spec's worked vector decodes this way).
#[inline]
pub fn nvfp4_decode_tile(data: &[u8], g: f32, out: &mut [f32]) {
    for b in 0..64 {
        let den = e4m3_value(data[b]) * g;
        let codes = &data[64 + 8 * b..64 + 8 * (b + 1)];
        for (o, &c) in out[16 * b..16 * (b + 1)].chunks_exact_mut(2).zip(codes) {
            o[0] = E2M1_SIGNED[(c & 0xF) as usize] * den;
            o[1] = E2M1_SIGNED[(c >> 4) as usize] * den;
        }
    }
}

/// OCP mxfp4 tile codec.
#[derive(Debug, Clone, Copy)]
pub struct Mxfp4Codec;

/// NVIDIA nvfp4 tile codec; `g` is the per-tensor decode scale (`None` until the bind step,
/// [`TensorCodec::bind`], fixes it from the tensor's amax).
#[derive(Debug, Clone, Copy)]
pub struct Nvfp4Codec {
    g: Option<f32>,
}

pub(super) const MXFP4_ENTRY: CodecEntry = CodecEntry {
    id: 14,
    name: "mxfp4",
    version: 1,
    summary: "OCP MX FP4: E2M1 elements, one E8M0 scale per 32 (544 B/tile)",
    from_options: |_| Ok(Codec::Tensor(Arc::new(Mxfp4Codec))),
    from_params: |p| {
        no_params("mxfp4", p)?;
        Ok(Codec::Tensor(Arc::new(Mxfp4Codec)))
    },
};

pub(super) const NVFP4_ENTRY: CodecEntry = CodecEntry {
    id: 15,
    name: "nvfp4",
    version: 1,
    summary: "NVIDIA FP4: E2M1 elements, one E4M3 scale per 16, f32 scale per tensor (576 B/tile)",
    from_options: |_| Ok(Codec::Tensor(Arc::new(Nvfp4Codec { g: None }))),
    from_params: |p| {
        let g = <[u8; 4]>::try_from(p)
            .map(f32::from_le_bytes)
            .map_err(|_| {
                Error::bad_params(format!(
                    "nvfp4 parameters are {} bytes, expected 4 (the f32 global scale)",
                    p.len()
                ))
            })?;
        if !(g.is_finite() && g > 0.0) {
            return Err(Error::bad_params(format!(
                "nvfp4 global scale {g} is not a positive finite number"
            )));
        }
        Ok(Codec::Tensor(Arc::new(Nvfp4Codec { g: Some(g) })))
    },
};

impl TileKernel for Mxfp4Codec {
    fn kernel_name(&self) -> &'static str {
        MXFP4_ENTRY.name
    }
    #[inline]
    fn tile_bytes(&self) -> usize {
        MXFP4_TILE_BYTES
    }
    #[inline]
    fn pack(&self, tile: &[f32], out: &mut [u8]) {
        mxfp4_encode_tile(tile, out)
    }
    #[inline]
    fn unpack(&self, data: &[u8], out: &mut [f32]) {
        mxfp4_decode_tile(data, out)
    }
}

impl TensorCodec for Mxfp4Codec {
    fn props(&self) -> Props {
        const P: Props = tile_props(MXFP4_ENTRY.id, MXFP4_ENTRY.name);
        P
    }
    tile_codec!();
}

/// nvfp4 with its global scale fixed: the kernel the codec runs once the scale is known.
pub(crate) struct Nvfp4Kernel(pub(crate) f32);

impl TileKernel for Nvfp4Kernel {
    fn kernel_name(&self) -> &'static str {
        NVFP4_ENTRY.name
    }
    #[inline]
    fn tile_bytes(&self) -> usize {
        NVFP4_TILE_BYTES
    }
    #[inline]
    fn pack(&self, tile: &[f32], out: &mut [u8]) {
        nvfp4_encode_tile(tile, self.0, out)
    }
    #[inline]
    fn unpack(&self, data: &[u8], out: &mut [f32]) {
        nvfp4_decode_tile(data, self.0, out)
    }
}

impl Nvfp4Codec {
    fn tile_bytes(&self) -> usize {
        NVFP4_TILE_BYTES
    }

    fn scale(&self) -> Result<f32> {
        self.g.ok_or_else(|| {
            Error::config("nvfp4 needs its per-tensor scale: encode whole tensors (bind)")
        })
    }
}

impl TensorCodec for Nvfp4Codec {
    fn props(&self) -> Props {
        const P: Props = Props {
            binds: Binds::Amax,
            ..tile_props(NVFP4_ENTRY.id, NVFP4_ENTRY.name)
        };
        P
    }
    fn params(&self) -> Vec<u8> {
        self.g.map(|g| g.to_le_bytes().to_vec()).unwrap_or_default()
    }
    fn bind(&self, t: &TensorFacts<'_>) -> Option<Arc<dyn TensorCodec>> {
        let amax = t.amax?;
        Some(Arc::new(Nvfp4Codec {
            g: Some(nvfp4_global(amax)),
        }))
    }
    fn as_tile(&self) -> Option<&dyn TileCodec> {
        Some(self)
    }
    tile_codec!(no_coding);
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        encode_tiles(&Nvfp4Kernel(self.scale()?), src, bytes)
    }
    fn decode(&self, payload: &[u8], _: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let g = self.g.ok_or_else(|| {
            Error::bad_params("nvfp4 tensor has no global scale in its parameters")
        })?;
        decode_tiles(&Nvfp4Kernel(g), payload, n, out)
    }
}

impl TileCodec for Nvfp4Codec {
    fn encode_f32_tiles_at(
        &self,
        _first_tile: usize,
        tiles: &[f32],
        visit: &mut TileVisitor<'_>,
    ) -> Result<Vec<u8>> {
        self.scale()
            .and_then(|g| encode_f32_tiles(&Nvfp4Kernel(g), tiles, Some(visit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// formats-spec/blockfloat.md §8.5 (../shared/formats.md §8.5), byte for byte.
    #[test]
    fn mxfp4_spec_vector() {
        let v: [f32; 32] = [
            0.9375, -0.75, 0.625, 0.4375, 0.3125, 0.21875, 0.15625, 0.09375, 0.03125, -0.03125,
            0.0, -0.0, 0.037_5, -0.362_5, 0.612_5, 0.637_5, 0.012_5, -0.2, 0.275, 0.412_5, -0.55,
            0.137_5, 0.075, -0.1, 0.34375, 0.112_5, -0.45, 0.75, 0.175, -0.056_25, 0.006_25,
            0.487_5,
        ];
        let mut codes = [0u8; 32];
        let s = mxfp4_block(&v, &mut codes);
        assert_eq!(s, 0x7C);
        let mut packed = [0u8; 16];
        pack_nibbles(&codes, &mut packed);
        assert_eq!(
            packed,
            [
                0xF7, 0x66, 0x44, 0x22, 0x80, 0x80, 0xD1, 0x76, 0xB0, 0x54, 0x2E, 0xA1, 0x25, 0x7E,
                0x93, 0x60
            ]
        );
        assert_eq!(e2m1_value(codes[13]) * 0.125, -0.375);
    }

    /// formats-spec/blockfloat.md §8.6 (../shared/formats.md §8.6).
    #[test]
    fn nvfp4_spec_vector() {
        let v: [f32; 16] = [
            2.3, -2.3, 1.0, -0.5, 0.0, -0.0, 0.19, 0.2, -0.6, 0.97, 1.35, -1.75, 0.05, -0.1, 1.9,
            0.77,
        ];
        let g = nvfp4_global(10.0);
        assert_eq!(g.to_bits(), 0x3B73CF3D);
        let mut codes = [0u8; 16];
        let s = nvfp4_block(&v, g, &mut codes);
        assert_eq!(s, 0x6D);
        assert_eq!(e4m3_value(s), 104.0);
        let mut packed = [0u8; 8];
        pack_nibbles(&codes, &mut packed);
        assert_eq!(packed, [0xF7, 0xB5, 0x80, 0x11, 0x5B, 0xE5, 0x90, 0x46]);
        let mut tile = [0f32; TILE_ELEMS];
        tile[..16].copy_from_slice(&v);
        let mut packed_tile = vec![0u8; NVFP4_TILE_BYTES];
        nvfp4_encode_tile(&tile, g, &mut packed_tile);
        let mut dec = vec![0f32; TILE_ELEMS];
        nvfp4_decode_tile(&packed_tile, g, &mut dec);
        assert_eq!(dec[0], 2.321_428_8);
        assert_eq!(dec[2], 1.160_714_4);
        assert_eq!(dec[6], 0.193_452_39);
    }

    #[test]
    fn e4m3_matches_its_definition() {
        // Every code but NaN decodes and re-encodes to itself (positive half).
        for c in 0u8..0x7F {
            let v = e4m3_value(c);
            if v > 0.0 {
                assert_eq!(e4m3(v), c, "code {c:#x} = {v}");
            }
        }
        assert_eq!(e4m3(1000.0), 0x7E);
        assert_eq!(e4m3(463.9), 0x7E);
        assert_eq!(e4m3(2f32.powi(-9) * 1.5), 0x02); // tie between 1 and 2 goes to even
        assert_eq!(e4m3(2f32.powi(-9) * 2.5), 0x02);
        assert_eq!(e4m3(2f32.powi(-6) * 0.99), 0x08);
    }

    #[test]
    fn tiles_roundtrip() {
        let mut x = 0x9E37_79B9u32;
        let tile: Vec<f32> = (0..TILE_ELEMS)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect();
        let mut a = vec![0u8; MXFP4_TILE_BYTES];
        mxfp4_encode_tile(&tile, &mut a);
        let mut d = vec![0f32; TILE_ELEMS];
        mxfp4_decode_tile(&a, &mut d);
        let mut b = vec![0u8; MXFP4_TILE_BYTES];
        mxfp4_encode_tile(&d, &mut b);
        assert_eq!(a, b, "mxfp4 encode-decode-encode");
        for r in 0..TILE {
            let x = pow2(a[r] as i32 - 127) as f32;
            for j in 0..TILE {
                let (s, y) = (tile[r * TILE + j], d[r * TILE + j]);
                // Half a step of the top binade, or the clip from (6, 8) X down to 6 X.
                assert!((s - y).abs() <= 2.0 * x, "{s} vs {y}");
            }
        }
        let amax = tile.iter().fold(0f32, |m, v| m.max(v.abs()));
        let g = nvfp4_global(amax);
        let mut a = vec![0u8; NVFP4_TILE_BYTES];
        nvfp4_encode_tile(&tile, g, &mut a);
        nvfp4_decode_tile(&a, g, &mut d);
        for b in 0..64 {
            let den = e4m3_value(a[b]) * g;
            for j in 0..16 {
                let (s, y) = (tile[16 * b + j], d[16 * b + j]);
                assert!((s - y).abs() <= den * 1.0 + 1e-6, "{s} vs {y}");
            }
        }
    }
}
