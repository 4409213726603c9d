//! Calibrated encoders of the group-wise scalar codecs (`int` with `group=N`, `grid`) and of
//! `nvfp4` (weighted block scales; GPTQ does not apply to its tiles): they write the codec's
//! own payload, so decoding is unchanged and the stored stage is the codec's
//! (same id, same parameters); only how the payload is chosen differs. Encoder-only: this
//! codec never comes from the registry or from a file.
//!
//! With a weight's calibration statistics ([`crate::calib::TensorCalib`]):
//! - **weighted**: every group's scale (and offset) search minimises
//!   `sum_j E[x_j^2] (w_j - w^_j)^2`, the error the layer's output sees for uncorrelated input
//!   channels (AWQ's and llama.cpp's imatrix objective), instead of the plain squared error;
//! - **gptq**: the columns of each row are rounded in order and each rounding error is spread
//!   over the columns not yet rounded through the inverse Hessian `E[x x^T]^-1`
//!   ([`crate::calib::Gptq`]); each group's parameters are fitted, weighted, when the rounding
//!   reaches the group, from the values as the earlier errors left them.
//!
//! Chunks hold whole rows (the codec's `chunk_multiple` becomes a multiple of the row), and the
//! group must divide the row, so that a group is always `g` consecutive columns of one row.

use super::grid::GridCodec;
use super::int::IntCodec;
use super::vq::VqCodec;
use super::{Props, TensorCodec};
use crate::calib::{Gptq, TensorCalib};
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::sync::Arc;

/// The parts of [`TensorCodec`] a calibrated encoder takes from the codec it encodes for:
/// parameters, spec, sizes and the decoder (the stored stage is that codec's).
macro_rules! delegate_to {
    ($field:ident) => {
        fn params(&self) -> Vec<u8> {
            self.$field.params()
        }
        fn spec(&self) -> String {
            self.$field.spec()
        }
        fn max_encoded_len(&self, src: DType, n: usize) -> usize {
            self.$field.max_encoded_len(src, n)
        }
        fn decode(&self, payload: &[u8], src: DType, n: usize, out: &mut [u8]) -> Result<()> {
            self.$field.decode(payload, src, n, out)
        }
    };
}

/// How a calibrated encoder uses the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Importance-weighted scale searches.
    Weighted,
    /// GPTQ (needs the second moments), with weighted group fits.
    Gptq,
}

impl Mode {
    /// As reports name it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Weighted => "weighted",
            Mode::Gptq => "gptq",
        }
    }
}

#[derive(Debug)]
enum Quant {
    Int(IntCodec),
    Grid(GridCodec),
}

/// A calibrated encoder over a bound `int` or `grid` codec.
#[derive(Debug)]
pub struct Calibrated {
    inner: Arc<dyn TensorCodec>,
    quant: Quant,
    group: usize,
    cols: usize,
    /// Column weights, mean 1.
    weights: Arc<[f32]>,
    gptq: Option<Arc<Gptq>>,
}

/// The calibrated encoder of `inner` for a tensor of shape `dims` stored in `layout`; `None`
/// when this codec, shape or layout has none (the codec is then used as it is, data-free).
pub(super) fn calibrated(
    inner: Arc<dyn TensorCodec>,
    dims: &[u64],
    layout: tpk_format::Layout,
    calib: &TensorCalib,
    mode: Mode,
    values: &[f32],
) -> Option<Result<(Arc<dyn TensorCodec>, Mode)>> {
    let cols = usize::try_from(*dims.last()?).ok()?;
    if dims.len() != 2 || cols == 0 {
        return None;
    }
    if calib.cols() != cols {
        return Some(Err(Error::input(format!(
            "the calibration statistics have {} input channels, the tensor {cols} columns",
            calib.cols()
        ))));
    }
    if let Some(g) = super::mx::nvfp4_global_of(&*inner) {
        // Tiles of the [out, in] view: a tile's columns are input channels.
        if layout != tpk_format::Layout::Tiles32 {
            return None;
        }
        let mut weights = calib.column_weights();
        weights.resize(cols.next_multiple_of(32), 1.0);
        let c: Arc<dyn TensorCodec> = Arc::new(CalibratedNvfp4 {
            inner,
            g,
            weights: weights.into(),
        });
        return Some(Ok((c, Mode::Weighted)));
    }
    if layout != tpk_format::Layout::RowMajor {
        return None;
    }
    if let Some(vq) = VqCodec::from_stage(&*inner) {
        // The codebook is learnt again under the column weights, and vectors take the nearest
        // entry under them (a vector's d elements are d consecutive input channels).
        let weights: Arc<[f32]> = calib.column_weights().into();
        let w: Vec<f32> = (0..values.len()).map(|k| weights[k % cols]).collect();
        let c: Arc<dyn TensorCodec> = Arc::new(CalibratedVq {
            vq: vq.bound_weighted(values, &w),
            cols,
            weights,
        });
        return Some(Ok((c, Mode::Weighted)));
    }
    let (quant, group) = if let Some(i) = IntCodec::from_stage(&*inner) {
        let g = i.group_elems()?;
        (Quant::Int(i), g)
    } else if let Some(g) = GridCodec::from_stage(&*inner) {
        let n = g.group_size();
        (Quant::Grid(g), n)
    } else {
        return None;
    };
    if group == 0 || cols % group != 0 {
        return None;
    }
    let gptq = match (mode, &calib.hessian) {
        (Mode::Gptq, Some(h)) => match Gptq::new(h, cols) {
            Ok(g) => Some(Arc::new(g)),
            Err(e) => return Some(Err(e)),
        },
        (Mode::Gptq, None) => {
            return Some(Err(Error::config(
                "GPTQ needs the second moments: run tenpak calibrate without --no-hessian",
            )))
        }
        (Mode::Weighted, _) => None,
    };
    let c: Arc<dyn TensorCodec> = Arc::new(Calibrated {
        inner,
        quant,
        group,
        cols,
        weights: calib.column_weights().into(),
        gptq,
    });
    Some(Ok((c, mode)))
}

impl Calibrated {
    /// Fit one group (its values and column weights): parameters as stored.
    fn fit(&self, x: &[f32], w: &[f32]) -> Result<(f32, f32)> {
        match &self.quant {
            Quant::Int(i) => i.fit_group_weighted(x, w),
            Quant::Grid(g) => Ok((g.fit_scale_weighted(x, w)?, 0.0)),
        }
    }

    fn round(&self, v: f32, p: (f32, f32)) -> f32 {
        match &self.quant {
            Quant::Int(i) => i.dequant(v, p.0, p.1),
            Quant::Grid(g) => g.dequant(v, p.0),
        }
    }

    fn payload(&self, q: &[f32], params: &[(f32, f32)]) -> Result<Vec<u8>> {
        let mut codes = vec![0u8; q.len()];
        for ((c, x), p) in codes
            .chunks_mut(self.group)
            .zip(q.chunks(self.group))
            .zip(params)
        {
            match &self.quant {
                Quant::Int(i) => i.codes_of(x, p.0, p.1, c),
                Quant::Grid(g) => g.codes_of(x, p.0, c),
            }
        }
        match &self.quant {
            Quant::Int(i) => i.payload(params, &codes),
            Quant::Grid(g) => Ok(g.payload(params, &codes)),
        }
    }
}

impl TensorCodec for Calibrated {
    fn props(&self) -> Props {
        let p = self.inner.props();
        Props {
            chunk_multiple: super::lcm(p.chunk_multiple, self.cols as u64),
            ..p
        }
    }
    delegate_to!(inner);
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        crate::dtype::to_f32(src, bytes, &mut v);
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(Error::input(format!(
                "calibrated encoding takes finite weights, found {x}"
            )));
        }
        if v.len() % self.cols != 0 {
            return Err(Error::internal(format!(
                "a calibrated chunk of {} values is not whole rows of {}",
                v.len(),
                self.cols
            )));
        }
        let g = self.group;
        let params = match &self.gptq {
            Some(gp) => gp.quantize_rows(
                &mut v,
                g,
                |j, x| self.fit(x, &self.weights[j..j + x.len()]),
                |x, p| self.round(x, *p),
            )?,
            None => {
                let mut params = Vec::with_capacity(v.len() / g);
                for (j, x) in v.chunks_mut(g).enumerate() {
                    let c = (j * g) % self.cols;
                    let p = self.fit(x, &self.weights[c..c + x.len()])?;
                    for e in x.iter_mut() {
                        *e = self.round(*e, p);
                    }
                    params.push(p);
                }
                params
            }
        };
        self.payload(&v, &params)
    }
}

/// nvfp4 with each block's E4M3 scale chosen under the column weights (the global scale and
/// the payload are nvfp4's own). Tile layout `Tiles32` of a 2-D `[out, in]` tensor only.
#[derive(Debug)]
pub struct CalibratedNvfp4 {
    inner: Arc<dyn TensorCodec>,
    g: f32,
    /// Column weights, mean 1, padded to whole tiles (32 per tile across).
    weights: Arc<[f32]>,
}

impl TensorCodec for CalibratedNvfp4 {
    fn props(&self) -> Props {
        // Bound already (the global scale): no second pass over the tensor for its amax.
        Props {
            binds: super::Binds::Nothing,
            ..self.inner.props()
        }
    }
    delegate_to!(inner);
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        // Without the tiles' positions only the plain encoder applies.
        self.inner.encode(src, bytes)
    }
    fn as_tile(&self) -> Option<&dyn super::tile::TileCodec> {
        Some(self)
    }
}

impl super::tile::TileCodec for CalibratedNvfp4 {
    fn encode_f32_tiles_at(
        &self,
        first_tile: usize,
        tiles: &[f32],
        visit: &mut super::tile::TileVisitor<'_>,
    ) -> Result<Vec<u8>> {
        const TILE: usize = 1024;
        const BYTES: usize = 576;
        if !tiles.len().is_multiple_of(TILE) {
            return Err(Error::internal(format!(
                "{} values are not whole tiles",
                tiles.len()
            )));
        }
        if let Some(x) = tiles.iter().find(|x| !x.is_finite()) {
            return Err(Error::input(format!(
                "nvfp4 encodes finite weights only, found {x}"
            )));
        }
        let mut out = vec![0u8; tiles.len() / TILE * BYTES];
        let mut recon = [0f32; TILE];
        for (i, (t, o)) in tiles
            .chunks_exact(TILE)
            .zip(out.chunks_exact_mut(BYTES))
            .enumerate()
        {
            let tc = (first_tile + i) % (self.weights.len() / 32);
            let w = &self.weights[tc * 32..tc * 32 + 32];
            super::mx::nvfp4_encode_tile_weighted(t, w, self.g, o);
            super::mx::nvfp4_decode_tile(o, self.g, &mut recon);
            visit(t, &recon);
        }
        Ok(out)
    }
}

/// vq with its codebook learnt, and its vectors assigned, under the column weights (the
/// payload and parameters are vq's own). Row-major chunks of whole rows.
#[derive(Debug)]
pub struct CalibratedVq {
    /// The codec bound to its weighted codebook: what decoding and the index see.
    vq: VqCodec,
    cols: usize,
    weights: Arc<[f32]>,
}

impl TensorCodec for CalibratedVq {
    fn props(&self) -> Props {
        let p = self.vq.props();
        Props {
            chunk_multiple: super::lcm(p.chunk_multiple, self.cols as u64),
            ..p
        }
    }
    delegate_to!(vq);
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        crate::dtype::to_f32(src, bytes, &mut v);
        if v.len() % self.cols != 0 {
            return Err(Error::internal(format!(
                "a calibrated chunk of {} values is not whole rows of {}",
                v.len(),
                self.cols
            )));
        }
        let w: Vec<f32> = (0..v.len()).map(|k| self.weights[k % self.cols]).collect();
        self.vq.encode_weighted(v, &w)
    }
    fn stage_bytes(&self, chunks: &[u64]) -> Option<Vec<(&'static str, u64)>> {
        self.vq.stage_bytes(chunks)
    }
}
