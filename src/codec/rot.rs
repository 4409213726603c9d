//! `rot` (id 26): a seeded randomized block-Hadamard rotation in front of any lossy codec
//! (QuIP# / HIGGS incoherence processing). Spec: formats-spec/rot.md.
//!
//! Every run of `block` consecutive elements of a chunk (a power of two; runs lie inside rows
//! when `block` divides the row length, which the default guarantees) is multiplied element by
//! element by a seeded ±1 sign vector and then by the orthonormal Walsh-Hadamard matrix; the
//! inner codec stores the rotated values and decoding applies the inverse (the same transform,
//! then the signs). A trailing run shorter than `block` is left as it is. Rotation spreads an
//! outlier over its block, so a group's scale is set by typical values rather than by one
//! extreme. The seed and block are parameters; no byte is added per weight.
//!
//! Syntax: `rot[:block=B,seed=S]+CODEC...` (`rot+nvfp4`, `rot:block=64+int4_g32`,
//! `rot+vq+zstd`). Without `block`, the bind step takes the largest power of two up to 256
//! that divides the row length (32 for tile codecs, whose runs are tile rows).

use super::{Binds, Codec, CodecEntry, Props, TensorCodec, TensorFacts};
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::sync::Arc;

/// Registry id of `rot`.
pub const ROT_ID: u16 = 26;

/// Largest block the default picks.
const AUTO_MAX: u32 = 256;
/// Largest block accepted.
const MAX_BLOCK: u32 = 1 << 16;

/// The rotation around `inner`.
#[derive(Debug, Clone)]
pub struct RotCodec {
    /// Run length; 0 until bound ("the default for this tensor").
    block: u32,
    seed: u64,
    inner: Arc<dyn TensorCodec>,
    /// Whether the inner codec's per-tensor values (nvfp4's amax) are those of the rotated
    /// tensor: set by the bind step and for codecs read from a file.
    bound: bool,
}

/// The `block` signs of `seed`: sign j is negative when bit (j mod 64) of the (j / 64)-th
/// splitmix64 output is set.
pub fn signs(seed: u64, block: usize) -> Vec<f32> {
    // splitmix64, as formats-spec/rot.md gives it.
    let mut state = crate::assign::Rng::new(seed);
    let mut word = 0;
    (0..block)
        .map(|j| {
            if j % 64 == 0 {
                word = state.next_u64();
            }
            if word >> (j % 64) & 1 == 1 {
                -1.0
            } else {
                1.0
            }
        })
        .collect()
}

/// The orthonormal Walsh-Hadamard transform of `b` (length a power of two), in place:
/// butterflies `(u, v) -> (u + v, u - v)` over strides 1, 2, 4, ..., then `/ sqrt(len)`.
pub fn fwht(b: &mut [f32]) {
    let n = b.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            let (lo, hi) = b[i..i + 2 * h].split_at_mut(h);
            for (u, v) in lo.iter_mut().zip(hi.iter_mut()) {
                let (a, c) = (*u, *v);
                *u = a + c;
                *v = a - c;
            }
        }
        h *= 2;
    }
    let k = 1.0 / (n as f32).sqrt();
    b.iter_mut().for_each(|v| *v *= k);
}

/// Rotate every whole run of `signs.len()` elements of `x` (`forward`: signs, then the
/// transform; back: the transform, then the signs).
pub fn rotate(x: &mut [f32], signs: &[f32], forward: bool) {
    for b in x.chunks_exact_mut(signs.len()) {
        if forward {
            b.iter_mut().zip(signs).for_each(|(v, s)| *v *= s);
            fwht(b);
        } else {
            fwht(b);
            b.iter_mut().zip(signs).for_each(|(v, s)| *v *= s);
        }
    }
}

/// The largest power of two up to `max` dividing `n` (1 when `n` is odd or zero).
fn pow2_divisor(n: u64, max: u32) -> u32 {
    let mut b = 1u32;
    while b < max && n > 0 && n.is_multiple_of(2 * b as u64) {
        b *= 2;
    }
    b
}

impl RotCodec {
    /// Rotate in front of `inner`, a lossy codec that decodes f32 to f32.
    pub fn new(block: u32, seed: u64, inner: Arc<dyn TensorCodec>) -> Result<RotCodec> {
        if inner.lossless_for(DType::F32) || inner.decoded_dtype(DType::F32) != DType::F32 {
            return Err(Error::config(format!(
                "rot goes in front of a lossy codec that decodes to f32 (int..., nvfp4, vq, grid, ...), not {}",
                inner.spec()
            )));
        }
        if inner.id() == ROT_ID {
            return Err(Error::config("rot+rot: one rotation is enough"));
        }
        if block != 0 && (!block.is_power_of_two() || !(2..=MAX_BLOCK).contains(&block)) {
            return Err(Error::config(format!(
                "rot: block={block} is not a power of two in 2..={MAX_BLOCK}"
            )));
        }
        Ok(RotCodec {
            block,
            seed,
            inner,
            bound: false,
        })
    }

    /// The codec the rotated values go through.
    pub fn inner(&self) -> &dyn TensorCodec {
        &*self.inner
    }

    fn signs(&self) -> Result<Vec<f32>> {
        if self.block == 0 {
            return Err(Error::internal(
                "rot: the block is fixed by the bind step first",
            ));
        }
        Ok(signs(self.seed, self.block as usize))
    }

    fn with_inner(
        &self,
        block: u32,
        inner: Arc<dyn TensorCodec>,
        bound: bool,
    ) -> Arc<dyn TensorCodec> {
        Arc::new(RotCodec {
            block,
            seed: self.seed,
            inner,
            bound,
        })
    }

    /// The largest rotated magnitude over runs of `block` along rows and along columns, each
    /// zero-padded at the edge: what a tile layout (plain or transposed) feeds the inner codec.
    fn rotated_amax(&self, block: usize, dims: &[u64], v: &[f32]) -> f32 {
        let s = signs(self.seed, block);
        let cols = dims.last().copied().unwrap_or(1).max(1) as usize;
        let rows = v.len() / cols;
        let mut run = vec![0f32; block];
        let mut amax = 0f32;
        let mut take = |run: &mut [f32]| {
            rotate(run, &s, true);
            amax = run.iter().fold(amax, |m, x| m.max(x.abs()));
        };
        for r in 0..rows {
            for c0 in (0..cols).step_by(block) {
                run.fill(0.0);
                let n = block.min(cols - c0);
                run[..n].copy_from_slice(&v[r * cols + c0..r * cols + c0 + n]);
                take(&mut run);
            }
        }
        if dims.len() >= 2 {
            for c in 0..cols {
                for r0 in (0..rows).step_by(block) {
                    run.fill(0.0);
                    for (k, x) in run.iter_mut().enumerate().take(block.min(rows - r0)) {
                        *x = v[(r0 + k) * cols + c];
                    }
                    take(&mut run);
                }
            }
        }
        amax
    }
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: ROT_ID,
    name: "rot",
    version: 1,
    summary: "seeded randomized block-Hadamard rotation in front of a lossy codec: rot[:block=B,seed=S]+CODEC",
    from_options: |_| {
        Err(Error::config(
            "rot wraps the codec after it: write rot+CODEC (rot:block=64+int4_g32, rot+nvfp4)",
        ))
    },
    from_params: |p| {
        if p.len() < 12 {
            return Err(Error::bad_params("rot parameters: cut short"));
        }
        let block = u32::from_le_bytes(p[0..4].try_into().expect("4 bytes"));
        let seed = u64::from_le_bytes(p[4..12].try_into().expect("8 bytes"));
        if block == 0 {
            return Err(Error::bad_params("rot parameters: block 0"));
        }
        let inner = super::inner_from_params("rot", &p[12..])?;
        let mut r = RotCodec::new(block, seed, inner).map_err(|e| Error::bad_params(e.message))?;
        r.bound = true;
        Ok(Codec::Tensor(Arc::new(r)))
    },
};

/// Parse the `rot` stage's options and wrap `inner` (the rest of the pipeline's tensor codec).
pub(super) fn wrap(o: &mut super::Options, inner: Arc<dyn TensorCodec>) -> Result<RotCodec> {
    let block = o.int("block", 0, 0, MAX_BLOCK as i64)? as u32;
    let seed = match o.take("seed") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| Error::config(format!("codec rot: seed={v} is not an integer")))?,
    };
    RotCodec::new(block, seed, inner)
}

impl TensorCodec for RotCodec {
    fn props(&self) -> Props {
        let ip = self.inner.props();
        let binds = match (self.block, ip.binds) {
            (_, Binds::Data) => Binds::Data,
            (_, Binds::Amax) if !self.bound => Binds::Data,
            (0, _) | (_, Binds::Shape) => Binds::Shape,
            _ => Binds::Nothing,
        };
        Props {
            id: ROT_ID,
            name: "rot",
            version: 1,
            lossless: false,
            exact_for: &[],
            floats_only: true,
            decodes_to: Some(DType::F32),
            chunk_multiple: super::lcm(ip.chunk_multiple.max(1), self.block.max(1) as u64),
            binds,
            ..ip
        }
    }
    fn params(&self) -> Vec<u8> {
        let mut p = self.block.to_le_bytes().to_vec();
        p.extend_from_slice(&self.seed.to_le_bytes());
        p.extend(super::inner_params(&*self.inner));
        p
    }
    fn spec(&self) -> String {
        let mut o = Vec::new();
        if self.block != 0 {
            o.push(format!("block={}", self.block));
        }
        if self.seed != 0 {
            o.push(format!("seed={}", self.seed));
        }
        let head = if o.is_empty() {
            "rot".to_string()
        } else {
            format!("rot:{}", o.join(","))
        };
        format!("{head}+{}", self.inner.spec())
    }
    fn max_encoded_len(&self, _src: DType, n: usize) -> usize {
        self.inner.max_encoded_len(DType::F32, n)
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        crate::dtype::to_f32(src, bytes, &mut v);
        rotate(&mut v, &self.signs()?, true);
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.inner.encode(DType::F32, &raw)
    }
    fn decode(&self, payload: &[u8], _src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let s = self.signs()?;
        self.inner.decode(payload, DType::F32, n, out)?;
        let mut v: Vec<f32> = out
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        rotate(&mut v, &s, false);
        super::int::put_f32(&v, out);
        Ok(())
    }
    fn bind(&self, t: &TensorFacts<'_>) -> Option<Arc<dyn TensorCodec>> {
        let block = match self.block {
            0 if t.dims.is_empty() => return None,
            0 if self.inner.tiled() => 32,
            0 => pow2_divisor(*t.dims.last()?, AUTO_MAX),
            b => b,
        };
        let mut bound = self.bound;
        let inner = match (self.inner.props().binds, t.values) {
            (Binds::Amax, Some(v)) => {
                let amax = self.rotated_amax(block as usize, t.dims, v);
                bound = true;
                self.inner
                    .bind(&TensorFacts {
                        dims: t.dims,
                        amax: Some(amax),
                        values: None,
                    })
                    .unwrap_or_else(|| self.inner.clone())
            }
            (Binds::Data, Some(v)) => {
                let mut r = v.to_vec();
                rotate(&mut r, &signs(self.seed, block as usize), true);
                self.inner.bind(&TensorFacts {
                    dims: t.dims,
                    amax: None,
                    values: Some(&r),
                })?
            }
            _ => self
                .inner
                .bind(&TensorFacts {
                    dims: t.dims,
                    amax: t.amax,
                    values: None,
                })
                .unwrap_or_else(|| self.inner.clone()),
        };
        Some(self.with_inner(block, inner, bound))
    }
    fn stage_bytes(&self, chunks: &[u64]) -> Option<Vec<(&'static str, u64)>> {
        self.inner.stage_bytes(chunks)
    }
    fn as_tile(&self) -> Option<&dyn super::tile::TileCodec> {
        self.inner
            .as_tile()
            .map(|_| self as &dyn super::tile::TileCodec)
    }
}

impl super::tile::TileCodec for RotCodec {
    fn encode_f32_tiles_at(
        &self,
        first_tile: usize,
        tiles: &[f32],
        visit: &mut super::tile::TileVisitor<'_>,
    ) -> Result<Vec<u8>> {
        let inner = self
            .inner
            .as_tile()
            .ok_or_else(|| Error::internal("rot: the inner codec has no tile path"))?;
        let s = self.signs()?;
        let mut rotated = tiles.to_vec();
        rotate(&mut rotated, &s, true);
        let te = super::tile::TILE_ELEMS;
        let mut i = 0;
        let mut back = vec![0f32; te];
        inner.encode_f32_tiles_at(first_tile, &rotated, &mut |_, recon| {
            back.copy_from_slice(recon);
            rotate(&mut back, &s, false);
            visit(&tiles[i * te..(i + 1) * te], &back);
            i += 1;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Pipeline;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn rotation_is_orthonormal_and_undone() {
        let s = signs(7, 64);
        assert!(s.iter().filter(|&&x| x < 0.0).count() > 16);
        let x: Vec<f32> = (0..200)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut y = x.clone();
        rotate(&mut y, &s, true);
        let e = |v: &[f32]| v[..192].iter().map(|a| a * a).sum::<f32>();
        assert!((e(&x) - e(&y)).abs() < 1e-3 * e(&x));
        assert_eq!(&x[192..], &y[192..], "the short tail stays");
        rotate(&mut y, &s, false);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    /// formats-spec/rot.md's test vector, computed from the spec alone.
    #[test]
    fn spec_test_vector() {
        assert_eq!(signs(0, 8), [-1.0, -1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -1.0]);
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        rotate(&mut x, &signs(0, 8), true);
        let r = std::f32::consts::SQRT_2;
        let want = [-3.0 * r, 7.0 * r, r, -r, -2.0 * r, -6.0 * r, r, r];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{x:?}");
        }
    }

    #[test]
    fn rot_spreads_an_outlier_and_round_trips() {
        let dims = [4u64, 128];
        let mut x: Vec<f32> = (0..512)
            .map(|i| ((i * 29 % 61) as f32 - 30.0) / 300.0)
            .collect();
        x[70] = 6.0;
        let plain = Pipeline::parse("int4_g32").unwrap();
        let rot = Pipeline::parse("rot:seed=3+int4_g32").unwrap();
        let rot = rot.bind(&TensorFacts {
            dims: &dims,
            amax: None,
            values: None,
        });
        assert_eq!(rot.describe(), "rot:block=128,seed=3+int:bits=4,group=32");
        let err = |p: &Pipeline| {
            let enc = p.encode(DType::F32, &bytes(&x)).unwrap();
            let dec = p.decode(&enc, DType::F32, 512, u64::MAX).unwrap();
            let d: Vec<f32> = dec
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (
                x.iter()
                    .zip(&d)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>(),
                enc.len(),
            )
        };
        let (ep, lp) = err(&plain);
        let (er, lr) = err(&rot);
        assert_eq!(lp, lr, "no bytes per weight");
        assert!(er < ep, "rotated {er} vs plain {ep}");
        let again = Pipeline::from_stages(&rot.stages()).unwrap();
        assert_eq!(again.describe(), rot.describe());
    }

    #[test]
    fn rot_refuses_what_it_cannot_wrap() {
        assert!(Pipeline::parse("rot").is_err());
        assert!(Pipeline::parse("rot+f32").is_err());
        assert!(Pipeline::parse("rot+rot+int8").is_err());
        assert!(Pipeline::parse("rot:block=48+int8").is_err());
        assert!(Pipeline::parse("rot:block=64+int8+zstd").is_ok());
    }
}
