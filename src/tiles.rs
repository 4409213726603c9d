//! The tile view of a tensor: its 2-D view `[rows, cols]` (optionally of the tensor with its axes
//! reversed), zero-padded to multiples of 32 and cut into 32x32 tiles, tiles row-major over the
//! grid and elements row-major inside a tile (formats-spec/tpk.md §4 "Layout").
//!
//! Tile codecs see chunks of whole tile rows in this order; [`TileGeom::gather`] builds them from
//! the tensor's row-major values and [`TileGeom::scatter`] puts decoded tiles back.

use crate::error::{Error, ErrorKind, Result};
use tpk_format::Layout;

/// Side of a tile.
pub const T: usize = 32;

/// Geometry of one tensor's tile view.
#[derive(Debug, Clone)]
pub struct TileGeom {
    /// Rows of the 2-D view.
    pub rows: usize,
    /// Columns of the 2-D view.
    pub cols: usize,
    /// Rows rounded up to a multiple of 32.
    pub prows: usize,
    /// Columns rounded up to a multiple of 32.
    pub pcols: usize,
    /// Row-major index in the tensor of view element `(r, 0)`.
    row_base: Vec<usize>,
    /// Index step between view columns.
    col_stride: usize,
    /// How a band of view rows lies in the tensor.
    kind: BandKind,
}

/// How a band of view rows lies in the tensor's row-major elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandKind {
    /// One contiguous run (the view's rows are the tensor's).
    Rows,
    /// One run per view column, `col_stride` apart (a matrix or vector with reversed axes).
    Columns,
    /// Spread over the tensor (more than two dimensions, reversed).
    Scattered,
}

impl TileGeom {
    /// The view of a tensor of shape `dims` under a tile `layout`; `None` for row-major.
    /// `max_elems` bounds the padded size (checked before anything is allocated).
    pub fn new(layout: Layout, dims: &[u64], max_elems: u64) -> Result<Option<TileGeom>> {
        let Some((rows, cols)) = layout.view(dims) else {
            if layout == Layout::RowMajor {
                return Ok(None);
            }
            return Err(Error::bad_params(format!("shape {dims:?} overflows")));
        };
        layout
            .space(dims)
            .filter(|&s| s <= max_elems)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Limit,
                    format!("the tile view of shape {dims:?} exceeds {max_elems} elements"),
                )
            })?;
        let (rows, cols) = (rows as usize, cols as usize);
        let kind = match layout {
            Layout::Tiles32Transposed if dims.len() > 2 => BandKind::Scattered,
            Layout::Tiles32Transposed if dims.len() == 2 => BandKind::Columns,
            // A vector or scalar reversed is its own single row.
            _ => BandKind::Rows,
        };
        let (row_base, col_stride) = match layout {
            Layout::Tiles32Transposed if dims.len() > 1 => {
                // View row r holds the tensor's trailing indices in reversed order: its digits in
                // the mixed radix (d[n-1], ..., d[1]), most significant first, are i[1..] reversed.
                let rest: Vec<usize> = dims[1..].iter().map(|&d| d as usize).collect();
                let mut strides = vec![1usize; rest.len()];
                for k in (0..rest.len().saturating_sub(1)).rev() {
                    strides[k] = strides[k + 1] * rest[k + 1];
                }
                let base = (0..rows)
                    .map(|mut r| {
                        let mut idx = 0;
                        // Least significant digit of r is i[1] (axis 0 of `rest`).
                        for (k, &d) in rest.iter().enumerate() {
                            idx += (r % d) * strides[k];
                            r /= d;
                        }
                        idx
                    })
                    .collect();
                (base, rows)
            }
            Layout::Tiles32Transposed => ((0..rows).collect(), rows),
            _ => ((0..rows).map(|r| r * cols).collect(), 1),
        };
        Ok(Some(TileGeom {
            rows,
            cols,
            prows: rows.next_multiple_of(T),
            pcols: cols.next_multiple_of(T),
            row_base,
            col_stride,
            kind,
        }))
    }

    /// How a band of view rows lies in the tensor.
    pub fn band_kind(&self) -> BandKind {
        self.kind
    }

    /// Index step between view columns in the tensor.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// Row-major tensor index of view element `(r, 0)` (`r < rows`).
    pub fn base(&self, r: usize) -> usize {
        self.row_base[r]
    }

    /// `out` sized for `tile_rows` tile rows, all zero.
    pub fn fill_padding(&self, tile_rows: usize, out: &mut Vec<f32>) {
        out.clear();
        out.resize(tile_rows * self.tile_row_elems(), 0.0);
    }

    /// Tile rows in the grid.
    pub fn tile_rows(&self) -> usize {
        self.prows / T
    }

    /// Elements of one tile row (32 padded rows).
    pub fn tile_row_elems(&self) -> usize {
        T * self.pcols
    }

    /// Row-major tensor index of view element `(r, c)`, if it is not padding.
    #[inline]
    pub fn index(&self, r: usize, c: usize) -> Option<usize> {
        (r < self.rows && c < self.cols).then(|| self.row_base[r] + c * self.col_stride)
    }

    /// Tile-ordered values of tile rows `trs` from the tensor's row-major `vals` (padding 0).
    pub fn gather(&self, vals: &[f32], trs: std::ops::Range<usize>) -> Vec<f32> {
        let mut out = Vec::new();
        self.gather_into(vals, trs, &mut out);
        out
    }

    /// [`TileGeom::gather`] into a reusable buffer (resized; padding set to zero).
    pub fn gather_into(&self, vals: &[f32], trs: std::ops::Range<usize>, out: &mut Vec<f32>) {
        self.gather_offset(vals, 0, trs, out)
    }

    /// [`TileGeom::gather_into`] from `vals` holding the tensor's elements from index `offset`
    /// on (a band read on its own; rows must be contiguous, [`BandKind::Rows`], unless `offset`
    /// is 0).
    pub fn gather_offset(
        &self,
        vals: &[f32],
        offset: usize,
        trs: std::ops::Range<usize>,
        out: &mut Vec<f32>,
    ) {
        let len = trs.len() * self.tile_row_elems();
        // Every non-padding element is written below, so a buffer of the right length needs
        // zeroing only where this band has padding (a pass over the band otherwise).
        let padded = self.cols != self.pcols || self.rows < trs.end * T;
        if out.len() != len {
            out.clear();
            out.resize(len, 0.0);
        } else if padded {
            out.fill(0.0);
        }
        if self.col_stride == 1 {
            // Rows are contiguous in the tensor: copy each tile row's 32-element runs (cut short
            // at the last column; padding stays zero).
            let tiles_wide = self.pcols / T;
            for (k, tr) in trs.enumerate() {
                for i in 0..T {
                    let r = tr * T + i;
                    if r >= self.rows {
                        break;
                    }
                    let at = self.row_base[r] - offset;
                    let row = &vals[at..at + self.cols];
                    for (tc, run) in row.chunks(T).enumerate() {
                        let at = (k * tiles_wide + tc) * T * T + i * T;
                        // Whole runs as fixed-size arrays: inline moves, not a memmove call each.
                        match <&[f32; T]>::try_from(run) {
                            Ok(full) => {
                                let dst: &mut [f32; T] =
                                    (&mut out[at..at + T]).try_into().expect("32 elements");
                                *dst = *full;
                            }
                            Err(_) => out[at..at + run.len()].copy_from_slice(run),
                        }
                    }
                }
            }
        } else {
            self.for_each(trs, |t, idx| out[t] = vals[idx - offset]);
        }
    }

    /// Call `f(tile_space_index, tensor_index)` for every non-padding element of tile rows `trs`
    /// (tile-space indices relative to the first of them).
    pub fn for_each(&self, trs: std::ops::Range<usize>, mut f: impl FnMut(usize, usize)) {
        let tiles_wide = self.pcols / T;
        for (k, tr) in trs.enumerate() {
            for tc in 0..tiles_wide {
                let base = (k * tiles_wide + tc) * T * T;
                for i in 0..T {
                    let r = tr * T + i;
                    if r >= self.rows {
                        break;
                    }
                    for j in 0..T {
                        if let Some(idx) = self.index(r, tc * T + j) {
                            f(base + i * T + j, idx);
                        }
                    }
                }
            }
        }
    }

    /// Put the tile-ordered elements `tiles` (all tile rows, `esize` bytes each) back into the
    /// tensor's row-major `out`; padding is dropped.
    pub fn scatter(&self, tiles: &[u8], esize: usize, out: &mut [u8]) {
        self.for_each(0..self.tile_rows(), |t, idx| {
            out[idx * esize..(idx + 1) * esize].copy_from_slice(&tiles[t * esize..(t + 1) * esize]);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_view_reverses_axes() {
        // A [2, 3, 4] tensor: the view of its reversed axes [4, 3, 2] is [12, 2].
        let dims = [2u64, 3, 4];
        let g = TileGeom::new(Layout::Tiles32Transposed, &dims, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!((g.rows, g.cols), (12, 2));
        // reversed[j0, j1, j2] = x[j2, j1, j0]; view row r = j0 * 3 + j1, column c = j2.
        for j0 in 0..4 {
            for j1 in 0..3 {
                for j2 in 0..2 {
                    let want = j2 * 12 + j1 * 4 + j0;
                    assert_eq!(g.index(j0 * 3 + j1, j2), Some(want));
                }
            }
        }
        let m = TileGeom::new(Layout::Tiles32Transposed, &[3, 5], 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(m.index(4, 2), Some(2 * 5 + 4));
    }

    #[test]
    fn gather_scatter_roundtrip() {
        for layout in [Layout::Tiles32, Layout::Tiles32Transposed] {
            for dims in [vec![5u64], vec![33, 70], vec![2, 3, 40], vec![]] {
                let g = TileGeom::new(layout, &dims, 1 << 24).unwrap().unwrap();
                let n: u64 = dims.iter().product();
                let vals: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
                let tiles = g.gather(&vals, 0..g.tile_rows());
                assert_eq!(tiles.len() as u64, layout.space(&dims).unwrap());
                assert_eq!(tiles.iter().filter(|&&v| v != 0.0).count() as u64, n);
                let bytes: Vec<u8> = tiles.iter().flat_map(|v| v.to_le_bytes()).collect();
                let mut out = vec![0u8; 4 * n as usize];
                g.scatter(&bytes, 4, &mut out);
                let back: Vec<f32> = out
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                assert_eq!(back, vals, "{layout:?} {dims:?}");
            }
        }
    }
}
