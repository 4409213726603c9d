//! FP8 weights with DeepSeek-V3-style block scales: `w[i][j] * scale_inv[i / 128][j / 128]`.

use crate::dtype::{self, DType};
use crate::error::{Error, Result};

/// Side of the square scale block.
pub const BLOCK: u64 = 128;

/// The scale tensor must be 2-D float with one value per 128x128 block (partial edge blocks).
pub fn check_shapes(w: &[u64], s: &[u64], sdt: DType) -> Result<()> {
    if !sdt.is_float() {
        return Err(Error::input(format!(
            "scale_inv tensor has dtype {sdt}, expected a float"
        )));
    }
    match (w, s) {
        ([r, c], [sr, sc]) if *sr == r.div_ceil(BLOCK) && *sc == c.div_ceil(BLOCK) => Ok(()),
        _ => Err(Error::input(format!(
            "FP8 weight of shape {w:?} needs a scale_inv of shape [ceil(rows/128), ceil(cols/128)], found {s:?}"
        ))),
    }
}

/// Dequantize elements `first..first + w.len()` (row-major; `w` holds just those) to
/// little-endian f32 bytes.
pub fn dequantize_range(
    w: &[u8],
    first: u64,
    wdt: DType,
    dims: &[u64],
    s: &[u8],
    sdt: DType,
    sdims: &[u64],
) -> Result<Vec<u8>> {
    check_shapes(dims, sdims, sdt)?;
    let (cols, scols) = (dims[1].max(1), sdims[1] as usize);
    let mut scales = Vec::new();
    dtype::to_f32(sdt, s, &mut scales);
    let mut vals = Vec::new();
    dtype::to_f32(wdt, w, &mut vals);
    let mut out = Vec::with_capacity(vals.len() * 4);
    for (k, v) in vals.iter().enumerate() {
        let at = first + k as u64;
        let (i, j) = ((at / cols) as usize, (at % cols) as usize);
        let scale = scales
            .get((i / BLOCK as usize) * scols + j / BLOCK as usize)
            .copied()
            .ok_or_else(|| Error::input("the scale_inv tensor is shorter than its shape"))?;
        out.extend_from_slice(&(v * scale).to_le_bytes());
    }
    Ok(out)
}

/// Dequantize to little-endian f32 bytes.
pub fn dequantize(
    w: &[u8],
    wdt: DType,
    dims: &[u64],
    s: &[u8],
    sdt: DType,
    sdims: &[u64],
) -> Result<Vec<u8>> {
    dequantize_range(w, 0, wdt, dims, s, sdt, sdims)
}
