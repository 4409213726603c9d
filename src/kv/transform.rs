//! The KV reference's value transforms, exactly as `../shared/kv.md` §3.4, §3.6 and §3.7 define
//! them: fake quant (per-tensor symmetric, dequantized to the dtype), mantissa truncation and
//! clipping (percentile or sigma bounds over the finite values). Each maps a dump tensor's
//! bytes to bytes of the same dtype.

use super::method::{Clip, Transform};
use crate::dtype::DType;
use crate::error::Result;

/// Apply `t` to `bytes` (elements of `dtype`: F16, BF16 or F32).
pub fn apply(t: &Transform, dtype: DType, bytes: &[u8]) -> Result<Vec<u8>> {
    match *t {
        Transform::Truncate { keep } => Ok(truncate(dtype, bytes, keep)),
        Transform::Clip(c) => {
            let mut x = Vec::new();
            crate::dtype::to_f32(dtype, bytes, &mut x);
            let (lo, hi) = clip_bounds(&x, c);
            for v in &mut x {
                // numpy's clip: NaN stays NaN, infinities go to the bounds.
                if !v.is_nan() {
                    *v = v.clamp(lo as f32, hi as f32);
                }
            }
            let mut out = Vec::new();
            crate::dtype::from_f32(dtype, &x, &mut out)?;
            Ok(out)
        }
        Transform::BlockNormRef { .. } => Err(crate::error::Error::config(
            "blocknorm-ref is the reference's block-norm analysis (normalized codes plus side \
             metadata, not the reconstruction): use it with kv analyze or kv sweep; kv compress \
             stores block-norm as real codes with blocknorm:bits=B,block=S",
        )),
        Transform::FakeQuant { bits } => {
            let mut x = Vec::new();
            crate::dtype::to_f32(dtype, bytes, &mut x);
            fake_quant(&mut x, bits);
            let mut out = Vec::new();
            crate::dtype::from_f32(dtype, &x, &mut out)?;
            Ok(out)
        }
    }
}

/// The reference's `quantize_uniform_array` in f32, before the cast to the dtype: `scale =
/// max|x| / qmax`, `q = clamp(round_half_even(x / scale), ±qmax)`, `x^ = q * scale`; an all-zero
/// tensor is left as is. Non-finite values pass unchanged.
pub fn fake_quant(x: &mut [f32], bits: u32) {
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let amax = x
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |a, v| a.max(v.abs()));
    if amax == 0.0 {
        return;
    }
    let scale = amax / qmax;
    for v in x.iter_mut().filter(|v| v.is_finite()) {
        *v = (*v / scale).round_ties_even().clamp(-qmax, qmax) * scale;
    }
}

/// The reference's block-norm (`analyze_blocknorm.py`, kv.md §3.5) of one `[T, H, D]` tensor.
pub struct BlockNormRef {
    /// The normalized codes as stored, `f16`/`f32` as the dump (`norm_q`), `[T, H, D]`.
    pub stored: Vec<u8>,
    /// The reconstruction, in f32 as the reference measures it.
    pub restored: Vec<f32>,
    /// Blocks.
    pub blocks: usize,
    /// Blocks that keep a full-precision scale.
    pub topk: usize,
}

/// Block-normalize `x` (`[t, h, d]` of `dtype`) as the reference does: blocks of `block` along
/// `d` (zero-padded), scale `max|block|` (0 -> 1) kept as f16 (`scale_bytes` 2) or f32, codes
/// `round_half_even(x / scale * qmax)` stored as `dtype(q / qmax)`, and the `topk_ratio` share of
/// blocks with the most energy restored with their f32 scale when `topk_extra` is set. Blocks
/// are computed in the dump's dtype and the products in f32, as numpy promotes them; ties in
/// energy go to the lower block index.
#[allow(clippy::too_many_arguments)]
pub fn blocknorm_ref(
    dtype: DType,
    bytes: &[u8],
    d: usize,
    block: usize,
    bits: u32,
    topk_ratio: f64,
    scale_bytes: u32,
    topk_extra: bool,
) -> Result<BlockNormRef> {
    let mut x = Vec::new();
    crate::dtype::to_f32(dtype, bytes, &mut x);
    let vecs = x.len() / d.max(1);
    let per = d.div_ceil(block);
    let nb = vecs * per;
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let mut scales = vec![0f32; nb];
    let mut energy = vec![0f32; nb];
    for v in 0..vecs {
        for j in 0..per {
            let lo = v * d + j * block;
            let hi = (v * d + (j + 1) * block).min((v + 1) * d);
            let b = &x[lo..hi];
            let m = b.iter().fold(0f32, |a, e| a.max(e.abs()));
            scales[v * per + j] = if m == 0.0 { 1.0 } else { m };
            energy[v * per + j] = b.iter().map(|e| e * e).sum();
        }
    }
    let k = ((nb as f64 * topk_ratio) as usize).max(1).min(nb);
    let mut order: Vec<usize> = (0..nb).collect();
    order.sort_by(|a, b| energy[*b].total_cmp(&energy[*a]).then(a.cmp(b)));
    let mut top = vec![false; nb];
    if topk_extra {
        for &i in &order[..k] {
            top[i] = true;
        }
    }
    let round = |v: f32| match dtype {
        DType::F16 => half::f16::from_f32(v).to_f32(),
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    };
    let mut stored = Vec::with_capacity(x.len());
    let mut restored = Vec::with_capacity(x.len());
    for (i, v) in x.iter().enumerate() {
        let b = (i / d) * per + (i % d) / block;
        let s = scales[b];
        let q = (v / s * qmax).round_ties_even().clamp(-qmax, qmax);
        let nq = round(q / qmax);
        stored.push(nq);
        let s_used = if top[b] || scale_bytes != 2 {
            s
        } else {
            half::f16::from_f32(s).to_f32()
        };
        restored.push(nq * s_used);
    }
    let mut out = Vec::new();
    crate::dtype::from_f32(dtype, &stored, &mut out)?;
    Ok(BlockNormRef {
        stored: out,
        restored,
        blocks: nb,
        topk: k,
    })
}

/// Keep `keep` mantissa bits (toward zero); NaN and infinities unchanged.
pub fn truncate(dtype: DType, bytes: &[u8], keep: u32) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match dtype {
        DType::F32 => {
            let k = keep.min(23);
            let mask = 0xFF80_0000u32 | (((1u32 << k) - 1) << (23 - k));
            for w in out.chunks_exact_mut(4) {
                let v = u32::from_le_bytes(w.try_into().expect("4 bytes"));
                if v & 0x7F80_0000 != 0x7F80_0000 {
                    w.copy_from_slice(&(v & mask).to_le_bytes());
                }
            }
        }
        DType::F16 | DType::BF16 => {
            let (m, e) = if dtype == DType::F16 {
                (10, 0x7C00u16)
            } else {
                (7, 0x7F80u16)
            };
            let k = keep.min(m);
            let mask = !((1u16 << m) - 1) | ((((1u32 << k) - 1) as u16) << (m - k));
            for w in out.chunks_exact_mut(2) {
                let v = u16::from_le_bytes([w[0], w[1]]);
                if v & e != e {
                    w.copy_from_slice(&(v & mask).to_le_bytes());
                }
            }
        }
        _ => {}
    }
    out
}

/// Clip bounds of the finite values (f64), as the reference computes them.
pub fn clip_bounds(x: &[f32], c: Clip) -> (f64, f64) {
    let fin: Vec<f64> = x
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| v as f64)
        .collect();
    if fin.is_empty() {
        return (f64::NEG_INFINITY, f64::INFINITY);
    }
    match c {
        Clip::Percentile { lo, hi } => {
            let mut s = fin;
            s.sort_by(f64::total_cmp);
            (percentile(&s, lo), percentile(&s, hi))
        }
        Clip::Sigma { k } => {
            let n = fin.len() as f64;
            let mean = fin.iter().sum::<f64>() / n;
            let var = fin.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            let sd = var.sqrt();
            (mean - k * sd, mean + k * sd)
        }
    }
}

/// numpy's default ("linear") percentile of sorted values.
fn percentile(s: &[f64], p: f64) -> f64 {
    let h = (s.len() - 1) as f64 * p / 100.0;
    let i = h.floor() as usize;
    let j = (i + 1).min(s.len() - 1);
    s[i] + (h - i as f64) * (s[j] - s[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_masks_as_the_reference() {
        // fp16 keep 6: mask 0xFC00 | 0b111111 << 4 = 0xFFF0; NaN 0x7C01 stays NaN.
        let b: Vec<u8> = [0x3C0Fu16, 0xBFFF, 0x7C01, 0x7C00, 0x0001]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = truncate(DType::F16, &b, 6);
        let w: Vec<u16> = t
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(w, [0x3C00, 0xBFF0, 0x7C01, 0x7C00, 0x0000]);
        let f: Vec<u8> = 0x3F80_1234u32.to_le_bytes().to_vec();
        assert_eq!(truncate(DType::F32, &f, 6), 0x3F80_0000u32.to_le_bytes());
    }

    #[test]
    fn percentiles_and_sigma_are_numpys() {
        // np.percentile([1,2,3,4,10], [1, 99]) = [1.04, 9.76]; mean 4, std sqrt(10).
        let x = [3.0f32, 1.0, 10.0, 2.0, 4.0, f32::NAN];
        let (lo, hi) = clip_bounds(&x, Clip::Percentile { lo: 1.0, hi: 99.0 });
        assert!((lo - 1.04).abs() < 1e-12 && (hi - 9.76).abs() < 1e-12);
        let (lo, hi) = clip_bounds(&x, Clip::Sigma { k: 1.0 });
        assert!((lo - (4.0 - 10f64.sqrt())).abs() < 1e-12);
        assert!((hi - (4.0 + 10f64.sqrt())).abs() < 1e-12);
    }

    #[test]
    fn fake_quant_rounds_half_to_even() {
        // amax 2, 2 bits: qmax 1, scale 2; 1.0 / 2 = 0.5 rounds to 0, -3/2 = -1.5 -> -2 -> -1.
        let mut x = [1.0f32, -2.0, 2.0, 3.0 / 2.0 * 2.0 / 3.0];
        fake_quant(&mut x, 2);
        assert_eq!(x, [0.0, -2.0, 2.0, 0.0]);
    }
}
