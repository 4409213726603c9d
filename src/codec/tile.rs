//! The tile-codec layer: codecs whose chunks are whole 32x32 tiles of a tensor's 2-D view.
//!
//! A tile format supplies a [`TileKernel`] (its name, its packed tile size, and how to pack and
//! unpack one tile); `tile_codec!` builds the [`TensorCodec`](super::TensorCodec) around it (f32 input, exact
//! payload sizes, the [`TileCodec`] fast path), and every [`TileKernel`] is a [`TileCodec`].
//! [`TileCodec`] is what the compressor uses for tile codecs: encode f32 tiles held in memory and
//! see, tile by tile, what the payload decodes to, with no byte round trip and no decode pass.
//! The bit layouts are in formats-spec/blockfloat.md; the tile order in formats-spec/tpk.md.

use super::expect_len;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Elements per side of a tile.
pub const TILE: usize = 32;
/// Elements per tile.
pub const TILE_ELEMS: usize = TILE * TILE;

/// What the compressor does with each tile as it is encoded: `visit(source, reconstruction)`,
/// tiles in order, 1024 values each.
pub type TileVisitor<'a> = dyn FnMut(&[f32], &[f32]) + 'a;

/// The tile sub-trait of [`TensorCodec`](super::TensorCodec), reached through
/// [`TensorCodec::as_tile`](super::TensorCodec::as_tile).
pub trait TileCodec: Send + Sync {
    /// Encode a chunk of f32 tiles held in memory, whose first tile is tile `first_tile` of the
    /// tensor's tile grid (`mixed` gives each tile its own format), handing `visit` each source
    /// tile with what the payload decodes to.
    fn encode_f32_tiles_at(
        &self,
        first_tile: usize,
        tiles: &[f32],
        visit: &mut TileVisitor<'_>,
    ) -> Result<Vec<u8>>;
}

impl<K: TileKernel + Send + Sync> TileCodec for K {
    fn encode_f32_tiles_at(
        &self,
        _first_tile: usize,
        tiles: &[f32],
        visit: &mut TileVisitor<'_>,
    ) -> Result<Vec<u8>> {
        encode_f32_tiles(self, tiles, Some(visit))
    }
}

/// What a tile format supplies: its name, tile size and the two tile kernels. `tile_codec!`
/// builds the [`TensorCodec`](super::TensorCodec) around them (tile layout, f32 input, exact
/// payload sizes).
pub trait TileKernel {
    /// Codec name, for messages.
    fn kernel_name(&self) -> &'static str;
    /// Bytes of one packed tile.
    fn tile_bytes(&self) -> usize;
    /// Pack one row-major 32x32 tile into `out` (`tile_bytes()` long).
    fn pack(&self, tile: &[f32], out: &mut [u8]);
    /// Unpack one tile into 1024 row-major values; every byte pattern decodes.
    fn unpack(&self, data: &[u8], out: &mut [f32]);
    /// [`TileKernel::pack`], also writing into `recon` what `unpack` would give.
    fn pack_recon(&self, tile: &[f32], out: &mut [u8], recon: &mut [f32]) {
        self.pack(tile, out);
        self.unpack(out, recon);
    }
    /// Whether a packed tile shows that all its values were finite, for kernels whose bytes
    /// tell (`None`: the encoder scans the values first).
    fn packed_finite(&self, _packed: &[u8]) -> Option<bool> {
        None
    }
}

fn non_finite(name: &str, vals: &[f32]) -> Error {
    let x = vals
        .iter()
        .find(|x| !x.is_finite())
        .copied()
        .unwrap_or(f32::NAN);
    Error::input(format!(
        "{name} cannot encode the non-finite value {x}; tile formats take finite weights only"
    ))
}

/// Tile count of a tile-codec chunk of `n` elements; `n` must be a whole number of tiles.
fn tiles_of(codec: &str, n: usize) -> Result<usize> {
    if !n.is_multiple_of(TILE_ELEMS) {
        return Err(Error::bad_length(format!(
            "{codec}: a chunk of {n} elements is not a whole number of 32x32 tiles"
        )));
    }
    Ok(n / TILE_ELEMS)
}

/// Encode a chunk of f32 tiles (tile codecs take f32: the compressor widens first); a
/// non-finite value is an input error, since the formats cannot hold it faithfully.
pub(crate) fn encode_tiles(k: &impl TileKernel, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
    let name = k.kernel_name();
    if src != DType::F32 {
        return Err(Error::internal(format!(
            "{name} encodes f32 tiles, got {src}"
        )));
    }
    let vals: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    encode_f32_tiles(k, &vals, None)
}

/// Encode f32 tiles held in memory; with `visit`, also hand it each tile with what the payload
/// decodes to (the compressor measures that while the tile is in cache, with no decode pass).
pub(crate) fn encode_f32_tiles(
    k: &impl TileKernel,
    vals: &[f32],
    mut visit: Option<&mut TileVisitor<'_>>,
) -> Result<Vec<u8>> {
    let name = k.kernel_name();
    let tiles = tiles_of(name, vals.len())?;
    let tb = k.tile_bytes();
    let mut out = vec![0u8; tiles * tb];
    // Kernels whose bytes show a non-finite input are checked per tile, for free; for the
    // others an integer max over the magnitude bits (it vectorizes) runs first: at or above the
    // infinity pattern means a non-finite value, looked up only then.
    if tiles == 0 {
        return Ok(out);
    }
    let bytes_tell = k.packed_finite(&out[..tb]).is_some();
    if !bytes_tell {
        let top = vals
            .iter()
            .map(|v| v.to_bits() & 0x7FFF_FFFF)
            .fold(0u32, u32::max);
        if top >= 0x7F80_0000 {
            return Err(non_finite(name, vals));
        }
    }
    let mut recon = [0f32; TILE_ELEMS];
    for (i, t) in vals.chunks_exact(TILE_ELEMS).enumerate() {
        let o = &mut out[i * tb..(i + 1) * tb];
        match visit.as_deref_mut() {
            Some(v) => {
                k.pack_recon(t, o, &mut recon);
                if k.packed_finite(o) == Some(false) {
                    return Err(non_finite(name, t));
                }
                v(t, &recon);
            }
            None => {
                k.pack(t, o);
                if k.packed_finite(o) == Some(false) {
                    return Err(non_finite(name, t));
                }
            }
        }
    }
    Ok(out)
}

/// Decode a chunk of `n` elements (whole tiles) into little-endian f32 `out`, after checking the
/// payload is exactly `n / 1024` tiles long.
pub(crate) fn decode_tiles(
    k: &impl TileKernel,
    payload: &[u8],
    n: usize,
    out: &mut [u8],
) -> Result<()> {
    let tiles = tiles_of(k.kernel_name(), n)?;
    let tb = k.tile_bytes();
    expect_len(k.kernel_name(), payload, tiles * tb)?;
    // Unpack straight into the output where it can be viewed as f32 (little-endian and 4-byte
    // aligned, as decode buffers are): one pass over the memory instead of two.
    // SAFETY: every bit pattern is a valid f32, and align_to_mut yields only aligned elements.
    let (head, direct, tail) = unsafe { out.align_to_mut::<f32>() };
    if cfg!(target_endian = "little") && head.is_empty() && tail.is_empty() {
        for (t, o) in direct.chunks_exact_mut(TILE_ELEMS).enumerate() {
            k.unpack(&payload[t * tb..(t + 1) * tb], o);
        }
        return Ok(());
    }
    let mut vals = [0f32; TILE_ELEMS];
    for (t, o) in out.chunks_exact_mut(4 * TILE_ELEMS).enumerate() {
        k.unpack(&payload[t * tb..(t + 1) * tb], &mut vals);
        for (b, v) in o.chunks_exact_mut(4).zip(&vals) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }
    Ok(())
}

/// The `TensorCodec` methods every tile codec shares, around its [`TileKernel`]: f32 tiles
/// in, f32 out, a payload of exactly `tile_bytes()` per tile. The codec writes `props` itself.
/// `tile_codec!(no_coding)` leaves out `encode`, `decode` and `as_tile`, for a codec whose
/// kernel depends on a bound parameter (nvfp4's global scale).
macro_rules! tile_codec {
    () => {
        $crate::codec::tile::tile_codec!(no_coding);
        fn as_tile(&self) -> Option<&dyn $crate::codec::tile::TileCodec> {
            Some(self)
        }
        fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
            $crate::codec::tile::encode_tiles(self, src, bytes)
        }
        fn decode(&self, payload: &[u8], _: DType, n: usize, out: &mut [u8]) -> Result<()> {
            $crate::codec::tile::decode_tiles(self, payload, n, out)
        }
    };
    (no_coding) => {
        fn max_encoded_len(&self, _: DType, n: usize) -> usize {
            n.div_ceil($crate::codec::tile::TILE_ELEMS)
                .saturating_mul(self.tile_bytes())
        }
    };
}
pub(crate) use tile_codec;

/// Properties shared by the tile codecs: lossy, tiled, floats in, f32 out.
pub(crate) const fn tile_props(id: u16, name: &'static str) -> super::Props {
    super::Props {
        tiled: true,
        ..super::Props::lossy(id, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::bfp::{Bfp, BfpCodec};

    /// The direct path (aligned f32 output) and the copying path (any other buffer) agree.
    #[test]
    fn decode_into_any_buffer() {
        let vals: Vec<f32> = (0..2 * TILE_ELEMS)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let k = BfpCodec(Bfp::B4);
        let payload = encode_f32_tiles(&k, &vals, None).unwrap();
        let n = vals.len();
        let mut aligned = vec![0f32; n];
        // SAFETY: an f32 buffer viewed as its bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), 4 * n) };
        decode_tiles(&k, &payload, n, bytes).unwrap();
        let mut shifted = vec![0u8; 4 * n + 1];
        decode_tiles(&k, &payload, n, &mut shifted[1..]).unwrap();
        let via_copy: Vec<f32> = shifted[1..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            aligned.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            via_copy.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
