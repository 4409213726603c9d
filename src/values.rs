//! A tensor's values as the encoder reads them: bytes already in memory, or the source file read
//! band by band, so that encoding a tensor costs memory for one band, not the tensor.
//!
//! Everything that needs the tensor in order (row-major chunks, bands of 32-row tiles, the
//! largest magnitude for a per-tensor scale, per-tile error tables) reads through [`Values`];
//! only the steps that learn from the whole tensor at once (codebooks, low-rank factors, fitted
//! grids, GPTQ, pruning thresholds, deltas) load it whole (README "Memory").

use crate::dtype;
use crate::error::{Error, Result};
use crate::input::{element_range, TensorInfo, TensorSource};
use crate::tiles::{BandKind, TileGeom, T};
use std::borrow::Cow;
use std::ops::Range;
use tpk_format::Layout;

/// Elements read from a source at a time by [`Values::f32s`].
pub const PIECE_ELEMS: u64 = 1 << 20;

/// Elements read at a time by [`Values::scan`].
pub const SCAN_ELEMS: u64 = 1 << 22;

/// Where a tensor's values come from.
#[derive(Clone, Copy)]
pub enum Values<'a> {
    /// Little-endian bytes of the whole tensor, in memory (or mapped).
    Loaded(&'a [u8]),
    /// Tensor `.1` of a source, read piece by piece.
    Source(&'a dyn TensorSource, usize),
}

impl<'a> Values<'a> {
    /// Whether a tensor can be read in bands under `layout`: always row-major and in 32-row
    /// tiles; with reversed axes only up to two dimensions (a band is then one run per row of the
    /// tensor; with more, its elements scatter over the whole tensor).
    pub fn streams(layout: Layout, dims: &[u64]) -> bool {
        layout != Layout::Tiles32Transposed || dims.len() <= 2
    }

    /// Bytes of elements `first..first + count` (the tensor's dtype).
    pub fn bytes(&self, info: &TensorInfo, first: u64, count: u64) -> Result<Cow<'a, [u8]>> {
        match *self {
            Values::Loaded(d) => Ok(Cow::Borrowed(element_range(d, info.dtype, first, count)?)),
            Values::Source(s, i) => {
                let mut v = Vec::new();
                s.read(i, first, count, &mut v)
                    .map_err(|e| e.with_tensor(&info.name))?;
                Ok(Cow::Owned(v))
            }
        }
    }

    /// Elements `first..first + count` as f32, into `out` (replaced). A source is read in
    /// pieces of [`PIECE_ELEMS`], so its bytes are never held beside the whole f32 copy.
    pub fn f32s(
        &self,
        info: &TensorInfo,
        first: u64,
        count: u64,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if let Values::Loaded(_) = self {
            let b = self.bytes(info, first, count)?;
            dtype::to_f32(info.dtype, &b, out);
            return Ok(());
        }
        out.clear();
        out.reserve(count as usize);
        let mut piece = Vec::new();
        let mut at = first;
        while at < first + count {
            let n = PIECE_ELEMS.min(first + count - at);
            let b = self.bytes(info, at, n)?;
            dtype::to_f32(info.dtype, &b, &mut piece);
            out.extend_from_slice(&piece);
            at += n;
        }
        Ok(())
    }

    /// The bit pattern of the largest magnitude (without the sign) and the count of non-finite
    /// values, in pieces of [`SCAN_ELEMS`].
    pub fn scan(&self, info: &TensorInfo) -> Result<(u32, u64)> {
        let n = info.numel();
        let (mut top, mut nonfinite) = (0u32, 0u64);
        let mut buf = Vec::new();
        let mut first = 0;
        while first < n {
            let count = SCAN_ELEMS.min(n - first);
            self.f32s(info, first, count, &mut buf)?;
            // An integer max over the magnitude bits vectorizes (a float max does not); for
            // non-negative floats the patterns order as the values, non-finite ones at the top.
            let t = buf
                .iter()
                .map(|v| v.to_bits() & 0x7FFF_FFFF)
                .fold(0u32, u32::max);
            if t >= 0x7F80_0000 {
                nonfinite += buf.iter().filter(|v| !v.is_finite()).count() as u64;
            }
            top = top.max(t);
            first += count;
        }
        Ok((top, nonfinite))
    }

    /// Tile-ordered values of tile rows `trs` of `geom` (padding 0) into `out` (resized).
    pub fn tiles(
        &self,
        info: &TensorInfo,
        geom: &TileGeom,
        trs: Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let (r0, r1) = (trs.start * T, (trs.end * T).min(geom.rows));
        if r0 >= r1 || geom.cols == 0 {
            geom.fill_padding(trs.len(), out);
            return Ok(());
        }
        let mut vals = Vec::new();
        match geom.band_kind() {
            BandKind::Rows => {
                // Rows are contiguous: one read for the band.
                let first = geom.base(r0) as u64;
                let count = ((r1 - r0) * geom.cols) as u64;
                self.f32s(info, first, count, &mut vals)?;
                geom.gather_offset(&vals, first as usize, trs, out);
            }
            BandKind::Columns => {
                // Reversed axes of a matrix: view column c is the tensor's row c, and the band's
                // view rows are one run in it.
                geom.fill_padding(trs.len(), out);
                let tiles_wide = geom.pcols / T;
                let stride = geom.col_stride() as u64;
                for c in 0..geom.cols {
                    let first = c as u64 * stride + geom.base(r0) as u64;
                    self.f32s(info, first, (r1 - r0) as u64, &mut vals)?;
                    let (tc, j) = (c / T, c % T);
                    for (k, v) in vals.iter().enumerate() {
                        let r = r0 + k;
                        let tr = r / T - trs.start;
                        out[(tr * tiles_wide + tc) * T * T + (r % T) * T + j] = *v;
                    }
                }
            }
            BandKind::Scattered => {
                // Reversed axes of more dimensions: the smallest element range holding the band.
                let (mut lo, mut hi) = (usize::MAX, 0);
                geom.for_each(trs.clone(), |_, idx| {
                    lo = lo.min(idx);
                    hi = hi.max(idx + 1);
                });
                geom.fill_padding(trs.len(), out);
                if lo < hi {
                    self.f32s(info, lo as u64, (hi - lo) as u64, &mut vals)?;
                    geom.for_each(trs, |t, idx| out[t] = vals[idx - lo]);
                }
            }
        }
        Ok(())
    }

    /// The whole tensor's bytes: borrowed when loaded; read (the whole tensor in memory) from a
    /// source. For the steps that learn from the whole tensor.
    pub fn whole(&self, info: &TensorInfo) -> Result<Cow<'a, [u8]>> {
        match *self {
            Values::Loaded(d) => Ok(Cow::Borrowed(d)),
            Values::Source(s, i) => s.data(i).map_err(|e| e.with_tensor(&info.name)),
        }
    }
}

/// Check the two descriptions agree (bytes for the shape), before any band is read.
pub fn check_len(info: &TensorInfo, v: &Values<'_>) -> Result<()> {
    if let Values::Loaded(d) = v {
        if d.len() as u64 != info.numel() * info.dtype.size() as u64 {
            return Err(Error::internal(format!(
                "{} bytes of data for shape {:?} of {}",
                d.len(),
                info.dims,
                info.dtype
            )));
        }
    }
    Ok(())
}
