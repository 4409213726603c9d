//! `mixed` (id 16): a tile codec whose 32x32 tiles each take one format of a small table
//! (bf16, bfp8, bfp4, bfp2, fp0, mxfp4, nvfp4), chosen per tile by a mixed-tile search
//! (`crate::mixed`). Spec: formats-spec/mixed.md.
//!
//! Params (the format table, stored once per tensor): `k` (u8, 1..=16), then `k` entries of
//! `codec id` (u16 LE, the tile format's registry id), `len` (u8) and `len` bytes of that codec's
//! params (4 for nvfp4's f32 global scale, 0 for the others). A chunk (whole tile rows) is the
//! bit-packed assignment codes of its tiles (`b` = 0, 1, 2 or 4 bits for `k` = 1, 2, <= 4,
//! <= 16; code `i` at bit `i*b` counted from the least significant bit of byte 0; the last byte zero-padded),
//! then each tile's payload in its format, in tile order. Chunks decode on their own.
//!
//! There is no `--codec mixed`: the assignment comes from a config (`--config`, algorithm
//! `mixed-tile-*`). The codec in the registry is for reading.

use super::bfp::{Bfp, BfpCodec, Fp0Codec};
use super::mx::{nvfp4_global, Mxfp4Codec, Nvfp4Kernel};
use super::tile::{tile_props, TileCodec, TileKernel, TileVisitor, TILE_ELEMS};
use super::{Codec, CodecEntry, Props, TensorCodec};
use crate::dtype::{f32_to_bf16_bits, DType};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Registry id of `mixed`.
pub const MIXED_ID: u16 = 16;
/// Most formats in one table.
pub const MAX_FORMATS: usize = 16;

/// One tile format a mixed tensor can use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TileFormat {
    /// bf16 in tile order, 2048 bytes a tile.
    Bf16,
    /// A block float (1088 / 576 / 320 bytes).
    Bfp(Bfp),
    /// Dropped: no bytes, zeros.
    Fp0,
    /// OCP MX FP4, 544 bytes.
    Mxfp4,
    /// NVIDIA FP4 with its per-tensor global decode scale, 576 bytes.
    Nvfp4(f32),
}

/// Names accepted by [`TileFormat::parse`], most precise first.
pub const TILE_FORMAT_NAMES: &[&str] = &["bf16", "bfp8", "nvfp4", "bfp4", "mxfp4", "bfp2", "fp0"];

impl TileFormat {
    /// Parse a format name; nvfp4 gets a placeholder scale until [`TileFormat::for_tensor`].
    pub fn parse(name: &str) -> Option<TileFormat> {
        Some(match name {
            "bf16" => TileFormat::Bf16,
            "bfp8" => TileFormat::Bfp(Bfp::B8),
            "bfp4" => TileFormat::Bfp(Bfp::B4),
            "bfp2" => TileFormat::Bfp(Bfp::B2),
            "fp0" => TileFormat::Fp0,
            "mxfp4" => TileFormat::Mxfp4,
            "nvfp4" => TileFormat::Nvfp4(1.0),
            _ => return None,
        })
    }

    /// This format with its per-tensor parameters set from the tensor's largest magnitude.
    pub fn for_tensor(self, amax: f32) -> TileFormat {
        match self {
            TileFormat::Nvfp4(_) => TileFormat::Nvfp4(nvfp4_global(amax)),
            f => f,
        }
    }

    /// Format name.
    pub fn name(self) -> &'static str {
        match self {
            TileFormat::Bf16 => "bf16",
            TileFormat::Bfp(b) => b.name(),
            TileFormat::Fp0 => "fp0",
            TileFormat::Mxfp4 => "mxfp4",
            TileFormat::Nvfp4(_) => "nvfp4",
        }
    }

    /// Registry id of the format's own codec.
    pub fn codec_id(self) -> u16 {
        match self {
            TileFormat::Bf16 => 4,
            TileFormat::Bfp(Bfp::B8) => 10,
            TileFormat::Bfp(Bfp::B4) => 11,
            TileFormat::Bfp(Bfp::B2) => 12,
            TileFormat::Fp0 => 13,
            TileFormat::Mxfp4 => 14,
            TileFormat::Nvfp4(_) => 15,
        }
    }

    /// Bytes of one tile.
    pub fn tile_bytes(self) -> usize {
        match self {
            TileFormat::Bf16 => 2 * TILE_ELEMS,
            TileFormat::Bfp(b) => b.tile_bytes(),
            TileFormat::Fp0 => 0,
            TileFormat::Mxfp4 => super::mx::MXFP4_TILE_BYTES,
            TileFormat::Nvfp4(_) => super::mx::NVFP4_TILE_BYTES,
        }
    }

    /// Precision rank: larger is more precise (the order of [`TILE_FORMAT_NAMES`], reversed).
    /// Breaks ties between formats of equal size (bfp4 and nvfp4).
    pub fn rank(self) -> usize {
        TILE_FORMAT_NAMES.len()
            - TILE_FORMAT_NAMES
                .iter()
                .position(|&n| n == self.name())
                .expect("a listed format")
    }

    /// Pack one tile into `out` (`tile_bytes()` long) and write what it decodes to.
    pub fn pack_recon(self, tile: &[f32], out: &mut [u8], recon: &mut [f32]) {
        match self {
            TileFormat::Bf16 => {
                for ((o, r), &v) in out.chunks_exact_mut(2).zip(recon.iter_mut()).zip(tile) {
                    let b = f32_to_bf16_bits(v);
                    o.copy_from_slice(&b.to_le_bytes());
                    *r = f32::from_bits((b as u32) << 16);
                }
            }
            TileFormat::Bfp(b) => BfpCodec(b).pack_recon(tile, out, recon),
            TileFormat::Fp0 => recon.fill(0.0),
            TileFormat::Mxfp4 => Mxfp4Codec.pack_recon(tile, out, recon),
            TileFormat::Nvfp4(g) => Nvfp4Kernel(g).pack_recon(tile, out, recon),
        }
    }

    /// Unpack one tile (every byte pattern decodes).
    pub fn unpack(self, data: &[u8], out: &mut [f32]) {
        match self {
            TileFormat::Bf16 => {
                for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                    *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                }
            }
            TileFormat::Bfp(b) => BfpCodec(b).unpack(data, out),
            TileFormat::Fp0 => Fp0Codec.unpack(data, out),
            TileFormat::Mxfp4 => Mxfp4Codec.unpack(data, out),
            TileFormat::Nvfp4(g) => Nvfp4Kernel(g).unpack(data, out),
        }
    }
}

/// Bits per assignment code for a table of `k` formats (none for a single format).
pub fn code_bits(k: usize) -> usize {
    match k {
        0..=1 => 0,
        2 => 1,
        3..=4 => 2,
        _ => 4,
    }
}

/// Bytes of the codes of `tiles` tiles.
pub fn codes_len(k: usize, tiles: usize) -> usize {
    (tiles * code_bits(k)).div_ceil(8)
}

/// Code `i` of a packed code array.
pub fn code_at(codes: &[u8], bits: usize, i: usize) -> usize {
    if bits == 0 {
        return 0;
    }
    let bit = i * bits;
    (codes[bit / 8] as usize >> (bit % 8)) & ((1 << bits) - 1)
}

/// The mixed codec: a format table and, when encoding, the tensor's assignment (table index per
/// tile, tiles row-major over the tile grid).
#[derive(Debug, Clone)]
pub struct MixedCodec {
    table: Vec<TileFormat>,
    assignment: Option<Arc<[u8]>>,
}

impl MixedCodec {
    /// A codec writing `assignment` (indices into `table`) for a tensor.
    pub fn new(table: Vec<TileFormat>, assignment: Arc<[u8]>) -> Result<MixedCodec> {
        if table.is_empty() || table.len() > MAX_FORMATS {
            return Err(Error::config(format!(
                "a mixed tensor takes 1 to {MAX_FORMATS} formats, got {}",
                table.len()
            )));
        }
        if let Some(&c) = assignment.iter().find(|&&c| c as usize >= table.len()) {
            return Err(Error::config(format!(
                "assignment code {c} is outside the table of {} formats",
                table.len()
            )));
        }
        Ok(MixedCodec {
            table,
            assignment: Some(assignment),
        })
    }

    /// The format table.
    pub fn table(&self) -> &[TileFormat] {
        &self.table
    }

    /// Read a table from stored params.
    pub fn from_params(p: &[u8]) -> Result<MixedCodec> {
        let bad = |m: String| Error::bad_params(format!("mixed parameters: {m}"));
        let (&k, mut rest) = p.split_first().ok_or_else(|| bad("empty".into()))?;
        let k = k as usize;
        if k == 0 || k > MAX_FORMATS {
            return Err(bad(format!("{k} formats (1 to {MAX_FORMATS} allowed)")));
        }
        let mut table = Vec::with_capacity(k);
        for i in 0..k {
            if rest.len() < 3 {
                return Err(bad(format!("entry {i} is cut short")));
            }
            let id = u16::from_le_bytes([rest[0], rest[1]]);
            let len = rest[2] as usize;
            rest = &rest[3..];
            if rest.len() < len {
                return Err(bad(format!("entry {i}'s params are cut short")));
            }
            let (params, r) = rest.split_at(len);
            rest = r;
            let f = match (id, params.len()) {
                (4, 0) => TileFormat::Bf16,
                (10, 0) => TileFormat::Bfp(Bfp::B8),
                (11, 0) => TileFormat::Bfp(Bfp::B4),
                (12, 0) => TileFormat::Bfp(Bfp::B2),
                (13, 0) => TileFormat::Fp0,
                (14, 0) => TileFormat::Mxfp4,
                (15, 4) => {
                    let g = f32::from_le_bytes(params.try_into().expect("4 bytes"));
                    if !(g.is_finite() && g > 0.0) {
                        return Err(bad(format!("nvfp4 global scale {g} is not positive")));
                    }
                    TileFormat::Nvfp4(g)
                }
                _ => {
                    return Err(bad(format!(
                        "entry {i}: codec id {id} with {len} parameter bytes is not a tile format"
                    )))
                }
            };
            table.push(f);
        }
        if !rest.is_empty() {
            return Err(bad(format!("{} bytes after the table", rest.len())));
        }
        Ok(MixedCodec {
            table,
            assignment: None,
        })
    }

    /// Tile count of a chunk of `n` elements.
    fn tiles_of(n: usize) -> Result<usize> {
        if !n.is_multiple_of(TILE_ELEMS) {
            return Err(Error::bad_length(format!(
                "mixed: a chunk of {n} elements is not a whole number of 32x32 tiles"
            )));
        }
        Ok(n / TILE_ELEMS)
    }

    /// The codes of a chunk of `tiles` tiles and where its tile payloads start, after checking
    /// every code and the payload length.
    fn chunk_layout(&self, payload: &[u8], tiles: usize) -> Result<(Vec<u8>, usize)> {
        let k = self.table.len();
        let bits = code_bits(k);
        let cl = codes_len(k, tiles);
        if payload.len() < cl {
            return Err(Error::bad_length(format!(
                "mixed payload is {} bytes, shorter than its {cl} bytes of tile codes",
                payload.len()
            )));
        }
        let mut codes = Vec::with_capacity(tiles);
        let mut want = cl;
        for i in 0..tiles {
            let c = code_at(payload, bits, i);
            let f = self.table.get(c).ok_or_else(|| {
                Error::bad_payload(format!(
                    "mixed tile {i}: code {c} is outside the table of {k}"
                ))
            })?;
            want += f.tile_bytes();
            codes.push(c as u8);
        }
        super::check_pad_bits(&payload[..cl], (tiles * bits) as u64, "mixed tile codes")?;
        if payload.len() != want {
            return Err(Error::bad_length(format!(
                "mixed payload is {} bytes, its tile codes say {want}",
                payload.len()
            )));
        }
        Ok((codes, cl))
    }

    /// Tile counts per table entry in one chunk's payload (for `inspect`).
    pub fn chunk_counts(&self, payload: &[u8], n: usize) -> Result<Vec<u64>> {
        let (codes, _) = self.chunk_layout(payload, Self::tiles_of(n)?)?;
        let mut counts = vec![0u64; self.table.len()];
        for c in codes {
            counts[c as usize] += 1;
        }
        Ok(counts)
    }

    /// The assignment codes of one chunk's payload.
    pub fn chunk_codes(&self, payload: &[u8], n: usize) -> Result<Vec<u8>> {
        Ok(self.chunk_layout(payload, Self::tiles_of(n)?)?.0)
    }

    fn encode_at(
        &self,
        first_tile: usize,
        vals: &[f32],
        visit: Option<&mut TileVisitor<'_>>,
    ) -> Result<Vec<u8>> {
        let tiles = Self::tiles_of(vals.len())?;
        let assignment = self.assignment.as_deref().ok_or_else(|| {
            Error::config("mixed tensors are made by a mixed-tile config (--config), not --codec")
        })?;
        let codes = assignment
            .get(first_tile..first_tile + tiles)
            .ok_or_else(|| {
                Error::internal(format!(
                    "mixed: tiles {first_tile}..{} are outside the assignment of {} tiles",
                    first_tile + tiles,
                    assignment.len()
                ))
            })?;
        let top = vals
            .iter()
            .map(|v| v.to_bits() & 0x7FFF_FFFF)
            .fold(0u32, u32::max);
        if top >= 0x7F80_0000 {
            return Err(Error::input(
                "mixed tiles take finite weights only; this chunk holds NaN or infinity",
            ));
        }
        let k = self.table.len();
        let bits = code_bits(k);
        let cl = codes_len(k, tiles);
        let body: usize = codes
            .iter()
            .map(|&c| self.table[c as usize].tile_bytes())
            .sum();
        let mut out = vec![0u8; cl + body];
        if bits > 0 {
            for (i, &c) in codes.iter().enumerate() {
                let bit = i * bits;
                out[bit / 8] |= c << (bit % 8);
            }
        }
        let mut at = cl;
        let mut recon = [0f32; TILE_ELEMS];
        let mut visit = visit;
        for (t, &c) in vals.chunks_exact(TILE_ELEMS).zip(codes) {
            let f = self.table[c as usize];
            let tb = f.tile_bytes();
            f.pack_recon(t, &mut out[at..at + tb], &mut recon);
            at += tb;
            if let Some(v) = visit.as_deref_mut() {
                v(t, &recon);
            }
        }
        Ok(out)
    }
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: MIXED_ID,
    name: "mixed",
    version: 1,
    summary:
        "a format per 32x32 tile (bf16, bfp8/4/2, fp0, mxfp4, nvfp4), chosen by a mixed-tile config",
    from_options: |_| {
        Err(Error::config(
            "mixed tensors are made by a mixed-tile config (--config FILE with algorithm mixed-tile-*), not --codec",
        ))
    },
    from_params: |p| Ok(Codec::Tensor(Arc::new(MixedCodec::from_params(p)?))),
};

impl TensorCodec for MixedCodec {
    fn props(&self) -> Props {
        // Tiles of different sizes: the assignment decides the payload's size.
        const P: Props = Props {
            sized: false,
            ..tile_props(MIXED_ID, "mixed")
        };
        P
    }
    fn params(&self) -> Vec<u8> {
        let mut p = vec![self.table.len() as u8];
        for f in &self.table {
            p.extend_from_slice(&f.codec_id().to_le_bytes());
            match f {
                TileFormat::Nvfp4(g) => {
                    p.push(4);
                    p.extend_from_slice(&g.to_le_bytes());
                }
                _ => p.push(0),
            }
        }
        p
    }
    fn spec(&self) -> String {
        let names: Vec<&str> = self.table.iter().map(|f| f.name()).collect();
        format!("mixed[{}]", names.join(","))
    }
    fn max_encoded_len(&self, _: DType, n: usize) -> usize {
        let tiles = n.div_ceil(TILE_ELEMS);
        let widest = self.table.iter().map(|f| f.tile_bytes()).max().unwrap_or(0);
        codes_len(self.table.len(), tiles).saturating_add(tiles.saturating_mul(widest))
    }
    fn as_tile(&self) -> Option<&dyn TileCodec> {
        Some(self)
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        if src != DType::F32 {
            return Err(Error::internal(format!(
                "mixed encodes f32 tiles, got {src}"
            )));
        }
        let vals: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        self.encode_at(0, &vals, None)
    }
    fn decode(&self, payload: &[u8], _: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let tiles = Self::tiles_of(n)?;
        let (codes, mut at) = self.chunk_layout(payload, tiles)?;
        let mut vals = [0f32; TILE_ELEMS];
        for (o, &c) in out.chunks_exact_mut(4 * TILE_ELEMS).zip(&codes) {
            let f = self.table[c as usize];
            let tb = f.tile_bytes();
            f.unpack(&payload[at..at + tb], &mut vals);
            at += tb;
            for (b, v) in o.chunks_exact_mut(4).zip(&vals) {
                b.copy_from_slice(&v.to_le_bytes());
            }
        }
        Ok(())
    }
}

impl TileCodec for MixedCodec {
    fn encode_f32_tiles_at(
        &self,
        first_tile: usize,
        tiles: &[f32],
        visit: &mut TileVisitor<'_>,
    ) -> Result<Vec<u8>> {
        self.encode_at(first_tile, tiles, Some(visit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiles(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n * TILE_ELEMS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn every_tile_decodes_as_its_own_format() {
        let table: Vec<TileFormat> = TILE_FORMAT_NAMES
            .iter()
            .map(|n| TileFormat::parse(n).unwrap().for_tensor(0.5))
            .collect();
        let vals = tiles(9, 77);
        let assignment: Arc<[u8]> = (0..9u8).map(|i| i % table.len() as u8).collect();
        let c = MixedCodec::new(table.clone(), assignment.clone()).unwrap();
        let mut recon = Vec::new();
        let payload = c
            .encode_f32_tiles_at(0, &vals, &mut |_, r| recon.extend_from_slice(r))
            .unwrap();
        let back = MixedCodec::from_params(&c.params()).unwrap();
        assert_eq!(back.table(), &table[..]);
        let mut out = vec![0u8; 4 * vals.len()];
        back.decode(&payload, DType::F32, vals.len(), &mut out)
            .unwrap();
        for (i, t) in vals.chunks_exact(TILE_ELEMS).enumerate() {
            let f = table[assignment[i] as usize];
            let (mut o, mut want) = (vec![0u8; f.tile_bytes()], vec![0f32; TILE_ELEMS]);
            f.pack_recon(t, &mut o, &mut want);
            let mut un = vec![0f32; TILE_ELEMS];
            f.unpack(&o, &mut un);
            assert_eq!(un, want, "{}", f.name());
            let got: Vec<f32> = out[i * 4 * TILE_ELEMS..(i + 1) * 4 * TILE_ELEMS]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            assert_eq!(got, want, "tile {i} ({})", f.name());
            assert_eq!(&recon[i * TILE_ELEMS..(i + 1) * TILE_ELEMS], &want[..]);
        }
        assert_eq!(
            back.chunk_codes(&payload, vals.len()).unwrap(),
            assignment.to_vec()
        );
        // Chunks start anywhere in the assignment.
        let p2 = c
            .encode_f32_tiles_at(4, &vals[..2 * TILE_ELEMS], &mut |_, _| ())
            .unwrap();
        assert_eq!(back.chunk_codes(&p2, 2 * TILE_ELEMS).unwrap(), vec![4, 5]);
    }

    #[test]
    fn bad_payloads_are_errors() {
        let table = vec![TileFormat::Bfp(Bfp::B8), TileFormat::Fp0, TileFormat::Bf16];
        let c = MixedCodec::new(table, Arc::from(vec![0u8, 1, 2])).unwrap();
        let vals = tiles(3, 5);
        let p = c
            .encode(
                DType::F32,
                &vals
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let mut out = vec![0u8; 4 * vals.len()];
        assert!(c
            .decode(&p[..p.len() - 1], DType::F32, vals.len(), &mut out)
            .is_err());
        let mut q = p.clone();
        q[0] |= 0b11; // code 3 of a 3-entry table
        assert!(c.decode(&q, DType::F32, vals.len(), &mut out).is_err());
        assert!(c.decode(&p, DType::F32, 1000, &mut out[..4000]).is_err());
        for bad in [
            &[][..],
            &[0],
            &[1, 99, 0, 0],
            &[1, 15, 0, 0],
            &[1, 10, 0, 0, 7],
        ] {
            assert!(MixedCodec::from_params(bad).is_err(), "{bad:?}");
        }
        assert!(MixedCodec::new(vec![TileFormat::Fp0], Arc::from(vec![1u8])).is_err());
    }

    #[test]
    fn one_format_needs_no_codes() {
        let vals = tiles(2, 9);
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        for (f, len) in [(TileFormat::Bfp(Bfp::B8), 2 * 1088), (TileFormat::Fp0, 0)] {
            let c = MixedCodec::new(vec![f], Arc::from(vec![0u8, 0])).unwrap();
            let p = c.encode(DType::F32, &bytes).unwrap();
            assert_eq!(p.len(), len);
            let mut out = vec![0u8; bytes.len()];
            c.decode(&p, DType::F32, vals.len(), &mut out).unwrap();
            assert_eq!(c.chunk_codes(&p, vals.len()).unwrap(), vec![0, 0]);
        }
    }
}
