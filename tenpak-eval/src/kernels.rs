//! CPU kernels of the evaluator that candle's generic operators do slowly: a vectorizable exp
//! (f32 and f64), RoPE in place, causal attention on causal blocks only, SiLU-gated products and
//! the f64 log-sum-exp of logit rows. Each is compiled for AVX-512 and AVX2+FMA as well as the
//! baseline and chosen at run time; the builds run the same operations in the same order.

/// Define `pub fn $name` that runs `$core` built for the best instruction set the CPU has.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),*) $(-> $r:ty)? = $core:ident) => {
        $(#[$m])*
        pub fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn v4($($a: $t),*) $(-> $r)? { $core($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($a: $t),*) $(-> $r)? { $core($($a),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has these features, checked just above.
                    return unsafe { v4($($a),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { v3($($a),*) };
                }
            }
            $core($($a),*)
        }
    };
}

/// e^x in f32, branch-free so that loops over it vectorize: Cody–Waite reduction by ln 2 and a
/// degree-6 Taylor polynomial on |r| <= ln2/2 (relative error below 3e-7). Inputs are clamped
/// to [-87.3, 88.3] (normal results only); NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.3);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23) as u32);
    p * scale
}

/// e^x in f64, branch-free: reduction by ln 2 (split in two parts) and a degree-12 Taylor
/// polynomial on |r| <= ln2/2 (relative error about 2e-16). Inputs are clamped to
/// [-708, 709].
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
                                                // ln 2 split as fdlibm does: the high part has its low 32 bits zero, so n * LN2_HI is exact.
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    let x = x.clamp(-708.0, 709.0);
    let t = x * std::f64::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 479_001_600.0;
    for c in [
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    let e = (t.to_bits() as i64 - MAGIC.to_bits() as i64 + 1023) << 52;
    p * f64::from_bits(e as u64)
}

#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for j in 0..16 {
            m[j] = m[j].max(c[j]);
        }
    }
    let mut best = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for v in m {
        best = best.max(v);
    }
    best
}

#[inline(always)]
fn lse_core(row: &[f32]) -> f64 {
    let m = row_max(row) as f64;
    let mut acc = [0f64; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            acc[j] += exp_f64(c[j] as f64 - m);
        }
    }
    let mut s: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| exp_f64(x as f64 - m))
        .sum();
    for a in acc {
        s += a;
    }
    m + s.ln()
}

multiversion!(
    /// log Σ e^x over one row, in f64 (the row's maximum taken out first).
    fn lse(row: &[f32]) -> f64 = lse_core
);

#[inline(always)]
fn kl_core(r: &[f32], lr: f64, t: &[f32], lt: f64) -> f64 {
    let mut acc = [0f64; 8];
    let mut rc = r.chunks_exact(8);
    let mut tc = t.chunks_exact(8);
    for (a, b) in (&mut rc).zip(&mut tc) {
        for j in 0..8 {
            let la = a[j] as f64 - lr;
            acc[j] += exp_f64(la) * (la - (b[j] as f64 - lt));
        }
    }
    let mut s = 0.0;
    for (&a, &b) in rc.remainder().iter().zip(tc.remainder()) {
        let la = a as f64 - lr;
        s += exp_f64(la) * (la - (b as f64 - lt));
    }
    for a in acc {
        s += a;
    }
    s
}

multiversion!(
    /// Σ p_i (log p_i − log q_i) for logit rows `r` (log-normalizer `lr`) and `t` (`lt`), in f64.
    fn kl_row(r: &[f32], lr: f64, t: &[f32], lt: f64) -> f64 = kl_core
);

#[inline(always)]
fn silu_mul_core(gate_up: &[f32], out: &mut [f32]) {
    let f = out.len();
    let (g, u) = gate_up.split_at(f);
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + exp_f32(-g)) * u;
    }
}

multiversion!(
    /// One row: `out = silu(gate) * up` where the row holds `[gate | up]`.
    fn silu_mul_row(gate_up: &[f32], out: &mut [f32]) = silu_mul_core
);

/// Rotate the first half of each head against the second half ("rotate half", as Hugging Face
/// llama does) in place; `row` holds `heads` heads of `cos.len() * 2` values at position p.
#[inline(always)]
fn rope_core(row: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in row.chunks_exact_mut(2 * half) {
        let (a, b) = head.split_at_mut(half);
        for j in 0..half {
            let (x, y) = (a[j], b[j]);
            a[j] = x * cos[j] - y * sin[j];
            b[j] = y * cos[j] + x * sin[j];
        }
    }
}

multiversion!(
    /// RoPE of one token's heads in place (see the module comment).
    fn rope_row(row: &mut [f32], cos: &[f32], sin: &[f32]) = rope_core
);

#[inline(always)]
fn softmax_prefix_core(row: &mut [f32], live: usize) {
    let (keep, dead) = row.split_at_mut(live);
    let m = row_max(keep);
    for x in keep.iter_mut() {
        *x = exp_f32(*x - m);
    }
    // Sixteen partial sums: a single running sum would serialize the loop.
    let mut acc = [0f32; 16];
    let mut chunks = keep.chunks_exact(16);
    for c in &mut chunks {
        for j in 0..16 {
            acc[j] += c[j];
        }
    }
    let s = acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inv = 1.0 / s;
    for x in keep.iter_mut() {
        *x *= inv;
    }
    dead.fill(0.0);
}

multiversion!(
    /// Softmax over `row[..live]` in place; `row[live..]` (future positions) set to zero.
    fn softmax_prefix(row: &mut [f32], live: usize) = softmax_prefix_core
);

/// Rows per causal block of attention: each block of queries multiplies only the keys up to its
/// last row, so about (1 + 1/blocks)/2 of the full products are computed.
const ATTN_BLOCK: usize = 64;

/// Causal self-attention of one sequence. `qkv` is `[t, (h + 2 kvh) * hd]` (queries, keys,
/// values per row, RoPE already applied); returns `[t, h * hd]`. Query head `i` reads key/value
/// head `i / (h / kvh)`.
pub fn causal_attention(qkv: &[f32], t: usize, h: usize, kvh: usize, hd: usize) -> Vec<f32> {
    attention(qkv, t, h, kvh, hd, true)
}

/// Self-attention of one sequence, every position seeing every other (encoders); layout as
/// [`causal_attention`].
pub fn full_attention(qkv: &[f32], t: usize, h: usize, kvh: usize, hd: usize) -> Vec<f32> {
    attention(qkv, t, h, kvh, hd, false)
}

fn attention(qkv: &[f32], t: usize, h: usize, kvh: usize, hd: usize, causal: bool) -> Vec<f32> {
    use rayon::prelude::*;
    let w = (h + 2 * kvh) * hd;
    assert_eq!(qkv.len(), t * w);
    let g = h / kvh;
    let scale = 1.0 / (hd as f32).sqrt();
    let heads: Vec<Vec<f32>> = (0..h)
        .into_par_iter()
        .map(|head| {
            let q0 = head * hd;
            let k0 = (h + head / g) * hd;
            let v0 = (h + kvh + head / g) * hd;
            let mut scores = vec![0f32; ATTN_BLOCK * t];
            let mut out = vec![0f32; t * hd];
            let mut r0 = 0;
            while r0 < t {
                let r1 = (r0 + ATTN_BLOCK).min(t);
                let (m, n) = (r1 - r0, if causal { r1 } else { t });
                // SAFETY: every pointer and stride stays inside `qkv`, `scores` and `out`:
                // rows r0..r1 of q, rows 0..r1 of k and v, m x n of scores, m x hd of out.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        hd,
                        scores.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        qkv.as_ptr().add(r0 * w + q0),
                        1,
                        w as isize,
                        qkv.as_ptr().add(k0),
                        w as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for i in 0..m {
                    let live = if causal { r0 + i + 1 } else { n };
                    softmax_prefix(&mut scores[i * n..(i + 1) * n], live);
                }
                // SAFETY: as above.
                unsafe {
                    gemm::gemm(
                        m,
                        hd,
                        n,
                        out.as_mut_ptr().add(r0 * hd),
                        1,
                        hd as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        n as isize,
                        qkv.as_ptr().add(v0),
                        1,
                        w as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                r0 = r1;
            }
            out
        })
        .collect();
    let mut out = vec![0f32; t * h * hd];
    for (head, o) in heads.iter().enumerate() {
        for p in 0..t {
            out[p * h * hd + head * hd..p * h * hd + (head + 1) * hd]
                .copy_from_slice(&o[p * hd..(p + 1) * hd]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_accuracy() {
        for i in -8000..=8000 {
            let x = i as f64 / 100.0;
            let want = x.exp();
            let got = exp_f64(x);
            assert!(
                ((got - want) / want).abs() < 5e-16,
                "exp_f64({x}) = {got}, want {want}"
            );
            let xf = x as f32;
            let wf = (xf as f64).exp();
            let gf = exp_f32(xf) as f64;
            assert!(
                ((gf - wf) / wf).abs() < 5e-7,
                "exp_f32({xf}) = {gf}, want {wf}"
            );
        }
        assert_eq!(exp_f64(-1e9), exp_f64(-708.0));
        assert!(exp_f32(f32::NAN).is_nan());
    }

    /// The blocked attention equals a plain three-loop causal attention.
    #[test]
    fn attention_matches_naive() {
        let (t, h, kvh, hd) = (150, 4, 2, 8);
        let w = (h + 2 * kvh) * hd;
        let mut s = 1u64;
        let qkv: Vec<f32> = (0..t * w)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        let got = causal_attention(&qkv, t, h, kvh, hd);
        for head in 0..h {
            let kv = head / (h / kvh);
            for p in 0..t {
                let q = &qkv[p * w + head * hd..][..hd];
                let sc: Vec<f64> = (0..=p)
                    .map(|s| {
                        let k = &qkv[s * w + (h + kv) * hd..][..hd];
                        q.iter().zip(k).map(|(a, b)| (a * b) as f64).sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                for d in 0..hd {
                    let want: f64 = (0..=p)
                        .map(|s| {
                            (sc[s] - m).exp() / z * qkv[s * w + (h + kvh + kv) * hd + d] as f64
                        })
                        .sum();
                    let g = got[p * h * hd + head * hd + d] as f64;
                    assert!(
                        (g - want).abs() < 1e-5,
                        "head {head} pos {p} dim {d}: {g} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn lse_and_rope() {
        let row: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
        let want = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        assert!((lse(&row) - want).abs() < 1e-12);
        let mut r = [1.0f32, 2.0, 3.0, 4.0];
        rope_row(&mut r, &[0.0, 1.0], &[1.0, 0.0]);
        // Pair (1, 3) rotated by 90 degrees, pair (2, 4) untouched.
        assert_eq!(r, [-3.0, 2.0, 1.0, 4.0]);
    }
}
