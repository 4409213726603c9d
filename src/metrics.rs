//! Error metrics of a decoded tensor against its source, computed in f64.
//!
//! Definitions (formats-spec/metrics.md): with source x, decoded y over the n pairs where both
//! are finite:
//! - `pcc` = cov(x, y) / (sd(x) sd(y)); 1 when x and y are identical (constant tensors
//!   included), 0 when exactly one of them is constant or both are different constants.
//! - `mae` = mean |x - y|; `max_abs` = max |x - y|; `rmse` = sqrt(mean (x - y)^2).
//! - `cosine` = x.y / (|x| |y|); 1 when both are zero vectors, 0 when exactly one is.
//! - `sqnr_db` = 10 log10(sum x^2 / sum (x - y)^2); +inf when the error is zero, -inf when the
//!   source is all zeros and the error is not.
//! - `nonfinite` = pairs where x or y is NaN or infinite; they are left out of the others.
//!
//! With no finite pairs every metric takes its "identical" value. No metric is ever NaN.
//! Chunks are reduced separately (two passes each) and merged with Chan et al.'s pairwise
//! update, in chunk order, so results do not depend on thread count.

use serde::Serialize;

/// Running moments of (source, decoded) pairs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accumulator {
    n: u64,
    mean_x: f64,
    mean_y: f64,
    m2x: f64,
    m2y: f64,
    cxy: f64,
    sum_abs: f64,
    max_abs: f64,
    sum_sq_err: f64,
    sum_xx: f64,
    sum_yy: f64,
    sum_xy: f64,
    nonfinite: u64,
}

/// Final metrics of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// Pearson correlation.
    pub pcc: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Largest absolute error.
    pub max_abs: f64,
    /// Root mean square error.
    pub rmse: f64,
    /// Cosine similarity.
    pub cosine: f64,
    /// Signal to quantization-noise ratio in dB (JSON `null` when infinite).
    #[serde(serialize_with = "finite_or_null")]
    pub sqnr_db: f64,
    /// Pairs left out because a value is not finite.
    pub nonfinite: u64,
    /// PCC has no meaning here (one side is constant and they differ, e.g. `fp0`); `pcc` then
    /// holds 0 by the stored definition, and reports that can say "n/a" do.
    #[serde(skip)]
    pub pcc_undefined: bool,
}

/// PCC for tables: `1` when exact, 7 decimals otherwise, `n/a` when undefined.
pub fn fmt_pcc(p: Option<f64>) -> String {
    match p {
        None => "n/a".into(),
        Some(1.0) => "1".into(),
        Some(v) => format!("{v:.7}"),
    }
}

/// An error figure for tables: `0`, or 4 significant digits in scientific notation.
pub fn fmt_sci(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.3e}")
    }
}

fn finite_or_null<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

impl Accumulator {
    /// Moments of one chunk of pairs.
    pub fn from_pairs(x: &[f64], y: &[f64]) -> Self {
        debug_assert_eq!(x.len(), y.len());
        let mut a = Accumulator::default();
        let (mut sx, mut sy) = (0.0, 0.0);
        for (&xi, &yi) in x.iter().zip(y) {
            if xi.is_finite() && yi.is_finite() {
                a.n += 1;
                sx += xi;
                sy += yi;
            } else {
                a.nonfinite += 1;
            }
        }
        if a.n == 0 {
            return a;
        }
        a.mean_x = sx / a.n as f64;
        a.mean_y = sy / a.n as f64;
        for (&xi, &yi) in x.iter().zip(y) {
            if !(xi.is_finite() && yi.is_finite()) {
                continue;
            }
            let (dx, dy) = (xi - a.mean_x, yi - a.mean_y);
            a.m2x += dx * dx;
            a.m2y += dy * dy;
            a.cxy += dx * dy;
            let e = (xi - yi).abs();
            a.sum_abs += e;
            a.max_abs = a.max_abs.max(e);
            a.sum_sq_err += e * e;
            a.sum_xx += xi * xi;
            a.sum_yy += yi * yi;
            a.sum_xy += xi * yi;
        }
        a
    }

    /// [`Accumulator::from_pairs`] of f32 data, without widening copies: four interleaved lanes
    /// per sum keep the f64 adds from waiting on each other (lanes are combined in a fixed
    /// order, so results stay independent of threads and CPUs). Pairs with a non-finite value
    /// take the general path.
    pub fn from_f32_pairs(x: &[f32], y: &[f32]) -> Self {
        debug_assert_eq!(x.len(), y.len());
        let general = || {
            let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let yf: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            Accumulator::from_pairs(&xf, &yf)
        };
        if x.is_empty() {
            return general();
        }
        let n = x.len();
        let body = n / L * L;
        let (mut sx, mut sy) = lanes::sums(&x[..body], &y[..body]);
        for (l, (&a, &b)) in x[body..].iter().zip(&y[body..]).enumerate() {
            sx[l] += a as f64;
            sy[l] += b as f64;
        }
        // f32 values cannot overflow an f64 sum, so a non-finite sum means a non-finite value.
        if !sx.iter().chain(&sy).all(|v| v.is_finite()) {
            return general();
        }
        let mut acc = Accumulator {
            n: n as u64,
            mean_x: sx.iter().sum::<f64>() / n as f64,
            mean_y: sy.iter().sum::<f64>() / n as f64,
            ..Default::default()
        };
        let (mx, my) = (acc.mean_x, acc.mean_y);
        let (mut s, mut mmax) = lanes::moments(&x[..body], &y[..body], mx, my);
        for (l, (&a, &b)) in x[body..].iter().zip(&y[body..]).enumerate() {
            lanes::step(&mut s, &mut mmax, l, a, b, mx, my);
        }
        let t = |k: usize| s[k].iter().sum::<f64>();
        acc.m2x = t(0);
        acc.m2y = t(1);
        acc.cxy = t(2);
        acc.sum_abs = t(3);
        acc.sum_sq_err = t(4);
        // The raw sums follow from the centred ones (no cancellation for the squares; the
        // cross term only feeds the cosine).
        let nf = n as f64;
        acc.sum_xx = acc.m2x + nf * mx * mx;
        acc.sum_yy = acc.m2y + nf * my * my;
        acc.sum_xy = acc.cxy + nf * mx * my;
        acc.max_abs = mmax.iter().copied().fold(0.0, f64::max);
        acc
    }

    /// Moments of one block of f32 pairs (a 32x32 tile, say: a few thousand values at most, a
    /// multiple of [`BLOCK_LANES`]) in a single cache-resident pass, for the compressor's hot
    /// path. Sums run in f32 over the source `x` and the error `d = y - x`, each shifted by its
    /// block mean; `cov(x, y)` and `var(y)` are then built from `var(x)`, `cov(x, d)` and
    /// `var(d)`, so the f32 rounding of `var(x)` cancels out of the PCC to first order and the
    /// small error terms keep their own relative precision. Blocks where the shifted sums lose
    /// too much to cancellation (nearly constant source, error or output) or hold a non-finite
    /// value are measured by [`Accumulator::from_f32_pairs`] instead. Deterministic: the same
    /// lanes, in the same order, with or without AVX.
    pub fn from_f32_block(x: &[f32], y: &[f32]) -> Self {
        match block_stats(x, y) {
            Some(p) => p.accumulator(),
            None => Accumulator::from_f32_pairs(x, y),
        }
    }

    /// Moments of `n` finite pairs known to be identical (and `nonfinite` others): every error
    /// sum is zero, which is all [`Accumulator::finish`] needs to report identity.
    pub fn identical(n: u64, nonfinite: u64) -> Self {
        Accumulator {
            n,
            nonfinite,
            ..Default::default()
        }
    }

    /// Merge another accumulator (pairwise update of the centred moments).
    pub fn merge(&mut self, b: &Accumulator) {
        self.nonfinite += b.nonfinite;
        if b.n == 0 {
            return;
        }
        if self.n == 0 {
            let nf = self.nonfinite;
            *self = *b;
            self.nonfinite = nf;
            return;
        }
        let (na, nb) = (self.n as f64, b.n as f64);
        let n = na + nb;
        let dx = b.mean_x - self.mean_x;
        let dy = b.mean_y - self.mean_y;
        self.m2x += b.m2x + dx * dx * na * nb / n;
        self.m2y += b.m2y + dy * dy * na * nb / n;
        self.cxy += b.cxy + dx * dy * na * nb / n;
        self.mean_x += dx * nb / n;
        self.mean_y += dy * nb / n;
        self.n += b.n;
        self.sum_abs += b.sum_abs;
        self.max_abs = self.max_abs.max(b.max_abs);
        self.sum_sq_err += b.sum_sq_err;
        self.sum_xx += b.sum_xx;
        self.sum_yy += b.sum_yy;
        self.sum_xy += b.sum_xy;
    }

    /// The metrics, with the edge cases of the module docs.
    pub fn finish(&self) -> Metrics {
        if self.n == 0 {
            return Metrics {
                pcc: 1.0,
                mae: 0.0,
                max_abs: 0.0,
                rmse: 0.0,
                cosine: 1.0,
                sqnr_db: f64::INFINITY,
                nonfinite: self.nonfinite,
                pcc_undefined: false,
            };
        }
        let n = self.n as f64;
        let exact = self.sum_sq_err == 0.0;
        let pcc = if exact {
            1.0
        } else if self.m2x > 0.0 && self.m2y > 0.0 {
            (self.cxy / (self.m2x.sqrt() * self.m2y.sqrt())).clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let cosine = if exact {
            1.0
        } else if self.sum_xx > 0.0 && self.sum_yy > 0.0 {
            (self.sum_xy / (self.sum_xx.sqrt() * self.sum_yy.sqrt())).clamp(-1.0, 1.0)
        } else if self.sum_xx == 0.0 && self.sum_yy == 0.0 {
            1.0
        } else {
            0.0
        };
        let sqnr_db = if exact {
            f64::INFINITY
        } else if self.sum_xx == 0.0 {
            f64::NEG_INFINITY
        } else {
            10.0 * (self.sum_xx / self.sum_sq_err).log10()
        };
        Metrics {
            pcc,
            mae: self.sum_abs / n,
            max_abs: self.max_abs,
            rmse: (self.sum_sq_err / n).sqrt(),
            cosine,
            sqnr_db,
            nonfinite: self.nonfinite,
            pcc_undefined: !exact && (self.m2x <= 0.0 || self.m2y <= 0.0),
        }
    }
}

/// Lanes of [`Accumulator::from_f32_pairs`]: lane `l` takes elements `4i + l`, in order, in
/// both the portable code and the AVX code, which therefore give identical bits (plain IEEE
/// adds and multiplies, no fused multiply-add).
const L: usize = 4;

mod lanes {
    use super::L;

    /// Centred sums: `(x-mx)^2, (y-my)^2, (x-mx)(y-my), |x-y|, (x-y)^2` per lane.
    pub type Moments = [[f64; L]; 5];

    #[inline(always)]
    pub fn step(s: &mut Moments, mmax: &mut [f64; L], l: usize, a: f32, b: f32, mx: f64, my: f64) {
        let (xi, yi) = (a as f64, b as f64);
        let (dx, dy) = (xi - mx, yi - my);
        let e = (xi - yi).abs();
        s[0][l] += dx * dx;
        s[1][l] += dy * dy;
        s[2][l] += dx * dy;
        s[3][l] += e;
        s[4][l] += e * e;
        if e > mmax[l] {
            mmax[l] = e;
        }
    }

    /// Per-lane sums of `x` and `y` (lengths a multiple of 4).
    pub fn sums(x: &[f32], y: &[f32]) -> ([f64; L], [f64; L]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX, checked just above.
            return unsafe { avx::sums(x, y) };
        }
        let (mut sx, mut sy) = ([0f64; L], [0f64; L]);
        for (a, b) in x.chunks_exact(L).zip(y.chunks_exact(L)) {
            for l in 0..L {
                sx[l] += a[l] as f64;
                sy[l] += b[l] as f64;
            }
        }
        (sx, sy)
    }

    /// Per-lane centred moments and largest error (lengths a multiple of 4).
    pub fn moments(x: &[f32], y: &[f32], mx: f64, my: f64) -> (Moments, [f64; L]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX, checked just above.
            return unsafe { avx::moments(x, y, mx, my) };
        }
        let (mut s, mut mmax) = ([[0f64; L]; 5], [0f64; L]);
        for (a, b) in x.chunks_exact(L).zip(y.chunks_exact(L)) {
            for l in 0..L {
                step(&mut s, &mut mmax, l, a[l], b[l], mx, my);
            }
        }
        (s, mmax)
    }

    #[cfg(target_arch = "x86_64")]
    mod avx {
        use super::{Moments, L};
        use std::arch::x86_64::*;

        #[target_feature(enable = "avx")]
        pub fn sums(x: &[f32], y: &[f32]) -> ([f64; L], [f64; L]) {
            let (mut sx, mut sy) = (_mm256_setzero_pd(), _mm256_setzero_pd());
            for (a, b) in x.chunks_exact(L).zip(y.chunks_exact(L)) {
                // SAFETY: each chunk holds exactly 4 f32; unaligned loads.
                let (xa, yb) = unsafe {
                    (
                        _mm256_cvtps_pd(_mm_loadu_ps(a.as_ptr())),
                        _mm256_cvtps_pd(_mm_loadu_ps(b.as_ptr())),
                    )
                };
                sx = _mm256_add_pd(sx, xa);
                sy = _mm256_add_pd(sy, yb);
            }
            let (mut ox, mut oy) = ([0f64; L], [0f64; L]);
            // SAFETY: the arrays hold 4 f64; unaligned stores.
            unsafe {
                _mm256_storeu_pd(ox.as_mut_ptr(), sx);
                _mm256_storeu_pd(oy.as_mut_ptr(), sy);
            }
            (ox, oy)
        }

        #[target_feature(enable = "avx")]
        pub fn moments(x: &[f32], y: &[f32], mx: f64, my: f64) -> (Moments, [f64; L]) {
            let (mxv, myv) = (_mm256_set1_pd(mx), _mm256_set1_pd(my));
            let abs = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFF_FFFF_FFFF_FFFF));
            let mut s = [_mm256_setzero_pd(); 5];
            let mut mm = _mm256_setzero_pd();
            for (a, b) in x.chunks_exact(L).zip(y.chunks_exact(L)) {
                // SAFETY: each chunk holds exactly 4 f32; unaligned loads.
                let (xa, yb) = unsafe {
                    (
                        _mm256_cvtps_pd(_mm_loadu_ps(a.as_ptr())),
                        _mm256_cvtps_pd(_mm_loadu_ps(b.as_ptr())),
                    )
                };
                let (dx, dy) = (_mm256_sub_pd(xa, mxv), _mm256_sub_pd(yb, myv));
                let e = _mm256_and_pd(_mm256_sub_pd(xa, yb), abs);
                s[0] = _mm256_add_pd(s[0], _mm256_mul_pd(dx, dx));
                s[1] = _mm256_add_pd(s[1], _mm256_mul_pd(dy, dy));
                s[2] = _mm256_add_pd(s[2], _mm256_mul_pd(dx, dy));
                s[3] = _mm256_add_pd(s[3], e);
                s[4] = _mm256_add_pd(s[4], _mm256_mul_pd(e, e));
                // Finite inputs: max_pd picks the larger, as the portable compare does.
                mm = _mm256_max_pd(e, mm);
            }
            let mut out = [[0f64; L]; 5];
            let mut om = [0f64; L];
            // SAFETY: the arrays hold 4 f64; unaligned stores.
            unsafe {
                for (o, v) in out.iter_mut().zip(&s) {
                    _mm256_storeu_pd(o.as_mut_ptr(), *v);
                }
                _mm256_storeu_pd(om.as_mut_ptr(), mm);
            }
            (out, om)
        }
    }
}

/// Sufficient statistics of one block of pairs, centred, in terms of the source `x` and the
/// error `d = y - x`: what a mixed-tile search needs to update a tensor's metrics when one tile
/// changes format (formats-spec/metrics.md).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PairStats {
    /// Pairs.
    pub n: f64,
    /// Mean of x.
    pub mean_x: f64,
    /// Sum of (x - mean_x)^2.
    pub m2x: f64,
    /// Mean of d.
    pub mean_d: f64,
    /// Sum of (d - mean_d)^2.
    pub m2d: f64,
    /// Sum of (x - mean_x)(d - mean_d).
    pub cxd: f64,
    /// Sum of |d|.
    pub sum_abs: f64,
    /// Largest |d|.
    pub max_abs: f64,
}

impl PairStats {
    /// Statistics of a block of finite pairs: the f32 block kernel where it is precise enough,
    /// the f64 path otherwise (see [`Accumulator::from_f32_block`]).
    pub fn of_block(x: &[f32], y: &[f32]) -> PairStats {
        block_stats(x, y).unwrap_or_else(|| PairStats::of(&Accumulator::from_f32_pairs(x, y)))
    }

    /// From an accumulator (its `nonfinite` pairs are dropped).
    pub fn of(a: &Accumulator) -> PairStats {
        let n = a.n as f64;
        let mean_d = a.mean_y - a.mean_x;
        PairStats {
            n,
            mean_x: a.mean_x,
            m2x: a.m2x,
            mean_d,
            m2d: (a.sum_sq_err - n * mean_d * mean_d).max(0.0),
            cxd: a.cxy - a.m2x,
            sum_abs: a.sum_abs,
            max_abs: a.max_abs,
        }
    }

    /// Sum of d^2.
    pub fn sum_sq_err(&self) -> f64 {
        self.m2d + self.n * self.mean_d * self.mean_d
    }

    /// The same moments as an [`Accumulator`].
    pub fn accumulator(&self) -> Accumulator {
        let nf = self.n;
        let mean_y = self.mean_x + self.mean_d;
        let cxy = self.m2x + self.cxd;
        let m2y = (self.m2x + 2.0 * self.cxd + self.m2d).max(0.0);
        Accumulator {
            n: nf as u64,
            mean_x: self.mean_x,
            mean_y,
            m2x: self.m2x,
            m2y,
            cxy,
            sum_abs: self.sum_abs,
            max_abs: self.max_abs,
            sum_sq_err: self.sum_sq_err(),
            sum_xx: self.m2x + nf * self.mean_x * self.mean_x,
            sum_yy: m2y + nf * mean_y * mean_y,
            sum_xy: cxy + nf * self.mean_x * mean_y,
            nonfinite: 0,
        }
    }
}

/// The f32 shifted-sum statistics of a block, `None` where they are not precise enough (or
/// the block is empty, not a multiple of [`BLOCK_LANES`], or holds a non-finite value).
fn block_stats(x: &[f32], y: &[f32]) -> Option<PairStats> {
    debug_assert_eq!(x.len(), y.len());
    let n = x.len();
    if n == 0 || !n.is_multiple_of(BLOCK_LANES) {
        return None;
    }
    let s = block::sums(x, y);
    let nf = n as f64;
    let [s1x, s2x, s1d, s2d, sxd, sab, mab, kx, kd] = s;
    let m2x = s2x - s1x * s1x / nf;
    let m2d = s2d - s1d * s1d / nf;
    let cxd = sxd - s1x * s1d / nf;
    let m2y = m2x + 2.0 * cxd + m2d;
    // 1e-3: beyond that the f32 shifted sums have lost more than a few of their 24 bits.
    let lost = |m2: f64, scale: f64| scale > 0.0 && m2 <= 1e-3 * scale;
    if !s.iter().all(|v| v.is_finite()) || lost(m2x, s2x) || lost(m2d, s2d) || lost(m2y, m2x + m2d)
    {
        return None;
    }
    Some(PairStats {
        n: nf,
        mean_x: kx + s1x / nf,
        m2x,
        mean_d: kd + s1d / nf,
        m2d,
        cxd,
        sum_abs: sab,
        max_abs: mab,
    })
}

/// Lanes of [`Accumulator::from_f32_block`] (one AVX register of f32).
pub const BLOCK_LANES: usize = 8;

/// The f32 block kernel: portable code over `[f32; 8]` lanes and an AVX version of the same
/// operations in the same order (plain IEEE adds and multiplies, no fused multiply-add), so
/// both give the same bits.
mod block {
    use super::BLOCK_LANES as B;

    type Lanes = [f32; B];

    /// Shifted sums of one block: `[S(x-kx), S(x-kx)^2, S(d-kd), S(d-kd)^2, S(x-kx)(d-kd),
    /// S|d|, max|d|, kx, kd]`, `d = y - x`, `kx`/`kd` the f32 block means.
    pub fn sums(x: &[f32], y: &[f32]) -> [f64; 9] {
        let n = x.len() as f64;
        #[cfg(target_arch = "x86_64")]
        let avx = std::arch::is_x86_feature_detected!("avx");
        #[cfg(not(target_arch = "x86_64"))]
        let avx = false;
        let (sx, sd) = if avx {
            // SAFETY: the CPU has AVX, checked just above.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx::means(x, y)
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!()
        } else {
            means(x, y)
        };
        let kx = (total(&sx) / n) as f32;
        let kd = (total(&sd) / n) as f32;
        let s = if avx {
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx::moments(x, y, kx, kd)
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!()
        } else {
            moments(x, y, kx, kd)
        };
        let max = s[6].iter().copied().fold(0f32, f32::max) as f64;
        [
            total(&s[0]),
            total(&s[1]),
            total(&s[2]),
            total(&s[3]),
            total(&s[4]),
            total(&s[5]),
            max,
            kx as f64,
            kd as f64,
        ]
    }

    fn total(v: &Lanes) -> f64 {
        v.iter().map(|&a| a as f64).sum()
    }

    /// Per-lane sums of `x` and of `y - x`.
    pub(super) fn means(x: &[f32], y: &[f32]) -> (Lanes, Lanes) {
        let (mut sx, mut sd) = ([0f32; B], [0f32; B]);
        for (a, b) in x.chunks_exact(B).zip(y.chunks_exact(B)) {
            for l in 0..B {
                sx[l] += a[l];
                sd[l] += b[l] - a[l];
            }
        }
        (sx, sd)
    }

    /// Per-lane shifted sums (the first seven of [`sums`]).
    pub(super) fn moments(x: &[f32], y: &[f32], kx: f32, kd: f32) -> [Lanes; 7] {
        let mut s = [[0f32; B]; 7];
        for (a, b) in x.chunks_exact(B).zip(y.chunks_exact(B)) {
            for l in 0..B {
                let d = b[l] - a[l];
                let (dx, dd) = (a[l] - kx, d - kd);
                s[0][l] += dx;
                s[1][l] += dx * dx;
                s[2][l] += dd;
                s[3][l] += dd * dd;
                s[4][l] += dx * dd;
                let e = f32::from_bits(d.to_bits() & 0x7FFF_FFFF);
                s[5][l] += e;
                s[6][l] = if e > s[6][l] { e } else { s[6][l] };
            }
        }
        s
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) mod avx {
        use super::{Lanes, B};
        use std::arch::x86_64::*;

        #[target_feature(enable = "avx")]
        pub fn means(x: &[f32], y: &[f32]) -> (Lanes, Lanes) {
            let (mut sx, mut sd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for (a, b) in x.chunks_exact(B).zip(y.chunks_exact(B)) {
                // SAFETY: each chunk holds exactly 8 f32; unaligned loads.
                let (xa, yb) =
                    unsafe { (_mm256_loadu_ps(a.as_ptr()), _mm256_loadu_ps(b.as_ptr())) };
                sx = _mm256_add_ps(sx, xa);
                sd = _mm256_add_ps(sd, _mm256_sub_ps(yb, xa));
            }
            let (mut ox, mut od) = ([0f32; B], [0f32; B]);
            // SAFETY: the arrays hold 8 f32; unaligned stores.
            unsafe {
                _mm256_storeu_ps(ox.as_mut_ptr(), sx);
                _mm256_storeu_ps(od.as_mut_ptr(), sd);
            }
            (ox, od)
        }

        #[target_feature(enable = "avx")]
        pub fn moments(x: &[f32], y: &[f32], kx: f32, kd: f32) -> [Lanes; 7] {
            let (kxv, kdv) = (_mm256_set1_ps(kx), _mm256_set1_ps(kd));
            let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
            let mut s = [_mm256_setzero_ps(); 7];
            for (a, b) in x.chunks_exact(B).zip(y.chunks_exact(B)) {
                // SAFETY: each chunk holds exactly 8 f32; unaligned loads.
                let (xa, yb) =
                    unsafe { (_mm256_loadu_ps(a.as_ptr()), _mm256_loadu_ps(b.as_ptr())) };
                let d = _mm256_sub_ps(yb, xa);
                let (dx, dd) = (_mm256_sub_ps(xa, kxv), _mm256_sub_ps(d, kdv));
                s[0] = _mm256_add_ps(s[0], dx);
                s[1] = _mm256_add_ps(s[1], _mm256_mul_ps(dx, dx));
                s[2] = _mm256_add_ps(s[2], dd);
                s[3] = _mm256_add_ps(s[3], _mm256_mul_ps(dd, dd));
                s[4] = _mm256_add_ps(s[4], _mm256_mul_ps(dx, dd));
                let e = _mm256_and_ps(d, abs);
                s[5] = _mm256_add_ps(s[5], e);
                // max_ps(e, m) is `e > m ? e : m`, as the portable code.
                s[6] = _mm256_max_ps(e, s[6]);
            }
            let mut out = [[0f32; B]; 7];
            // SAFETY: the arrays hold 8 f32; unaligned stores.
            unsafe {
                for (o, v) in out.iter_mut().zip(&s) {
                    _mm256_storeu_ps(o.as_mut_ptr(), *v);
                }
            }
            out
        }
    }
}

impl Metrics {
    /// As (name, value) pairs for the index.
    pub fn to_pairs(&self) -> Vec<(String, f64)> {
        vec![
            ("pcc".into(), self.pcc),
            ("mae".into(), self.mae),
            ("max_abs".into(), self.max_abs),
            ("rmse".into(), self.rmse),
            ("cosine".into(), self.cosine),
            ("sqnr_db".into(), self.sqnr_db),
            ("nonfinite".into(), self.nonfinite as f64),
        ]
    }

    /// Read back from index pairs; `None` if any is missing or out of its range.
    pub fn from_entry(t: &tpk_format::TensorEntry) -> Option<Metrics> {
        let m = Metrics {
            pcc: t.metric("pcc")?,
            mae: t.metric("mae")?,
            max_abs: t.metric("max_abs")?,
            rmse: t.metric("rmse")?,
            cosine: t.metric("cosine")?,
            sqnr_db: t.metric("sqnr_db")?,
            nonfinite: t.metric("nonfinite")? as u64,
            // Not stored: a file's reader sees the defined value 0.
            pcc_undefined: false,
        };
        let ok = [m.pcc, m.mae, m.max_abs, m.rmse, m.cosine]
            .iter()
            .all(|v| v.is_finite())
            && !m.sqnr_db.is_nan();
        ok.then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(x: &[f64], y: &[f64]) -> Metrics {
        Accumulator::from_pairs(x, y).finish()
    }

    /// The vector lanes give the portable lanes' bits exactly.
    #[test]
    fn lane_kernels_match_portable_code() {
        let mut v = 0x9E37_79B9u32;
        let mut r = || {
            v = v.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (v >> 8) as f32 / (1u32 << 24) as f32 - 0.4
        };
        let x: Vec<f32> = (0..4096).map(|_| r()).collect();
        let y: Vec<f32> = x.iter().map(|&a| a + r() * 0.001).collect();
        let (sx, sy) = lanes::sums(&x, &y);
        let (mut px, mut py) = ([0f64; L], [0f64; L]);
        for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
            px[i % L] += a as f64;
            py[i % L] += b as f64;
        }
        assert_eq!(sx.map(f64::to_bits), px.map(f64::to_bits));
        assert_eq!(sy.map(f64::to_bits), py.map(f64::to_bits));
        let (s, m) = lanes::moments(&x, &y, 0.01, -0.02);
        let (mut ps, mut pm) = ([[0f64; L]; 5], [0f64; L]);
        for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
            lanes::step(&mut ps, &mut pm, i % L, a, b, 0.01, -0.02);
        }
        assert_eq!(
            s.map(|k| k.map(f64::to_bits)),
            ps.map(|k| k.map(f64::to_bits))
        );
        assert_eq!(m.map(f64::to_bits), pm.map(f64::to_bits));
    }

    #[test]
    fn block_kernels_match_portable_code() {
        let mut v = 0x7F4A_7C15u32;
        let mut r = || {
            v = v.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (v >> 8) as f32 / (1u32 << 24) as f32 - 0.45
        };
        let x: Vec<f32> = (0..1024).map(|_| r()).collect();
        let y: Vec<f32> = x.iter().map(|&a| a + r() * 0.01).collect();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX, checked just above.
            let (ax, ad) = unsafe { block::avx::means(&x, &y) };
            let (px, pd) = block::means(&x, &y);
            assert_eq!(ax.map(f32::to_bits), px.map(f32::to_bits));
            assert_eq!(ad.map(f32::to_bits), pd.map(f32::to_bits));
            // SAFETY: as above.
            let a = unsafe { block::avx::moments(&x, &y, 0.01, -0.002) };
            let p = block::moments(&x, &y, 0.01, -0.002);
            assert_eq!(
                a.map(|k| k.map(f32::to_bits)),
                p.map(|k| k.map(f32::to_bits))
            );
        }
    }

    /// The f32 block path against the f64 reference: PCC to a small fraction of its distance
    /// from 1 (the figure reports care about; below 1e-12 the f64 reference itself is no more
    /// precise), the error figures to f32 rounding.
    #[test]
    fn f32_blocks_agree_with_f64_pairs() {
        let mut v = 0x0BAD_5EEDu32;
        let mut r = || {
            v = v.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (v >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let f64s = |a: &[f32]| a.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        // Offsets far from zero, tiny errors (bf16-like), coarse errors (bfp2-like).
        for (offset, noise) in [(0.0f32, 1e-3f32), (3.0, 1e-5), (-0.2, 0.3), (0.0, 2e-7)] {
            let x: Vec<f32> = (0..4096).map(|_| offset + r()).collect();
            let y: Vec<f32> = x.iter().map(|&a| a + r() * noise).collect();
            let mut acc = Accumulator::default();
            for (a, b) in x.chunks(1024).zip(y.chunks(1024)) {
                acc.merge(&Accumulator::from_f32_block(a, b));
            }
            let got = acc.finish();
            let want = Accumulator::from_pairs(&f64s(&x), &f64s(&y)).finish();
            assert!(
                (got.pcc - want.pcc).abs() <= (1e-3 * (1.0 - want.pcc)).max(1e-12),
                "{offset} {noise}: {} vs {}",
                got.pcc,
                want.pcc
            );
            for (p, q) in [
                (got.mae, want.mae),
                (got.rmse, want.rmse),
                (got.cosine, want.cosine),
            ] {
                assert!(
                    (p - q).abs() <= 1e-5 * q.abs(),
                    "{offset} {noise}: {p} vs {q}"
                );
            }
            assert!((got.max_abs - want.max_abs).abs() <= 1e-6 * want.max_abs);
        }
        // Degenerate blocks take the exact path: constant source, zero output (fp0), identity.
        let x: Vec<f32> = (0..1024).map(|_| r()).collect();
        let c = vec![0.1f32; 1024];
        let z = vec![0f32; 1024];
        for (a, b) in [(&c, &c), (&c, &z), (&x, &z), (&x, &x), (&z, &x)] {
            let got = Accumulator::from_f32_block(a, b).finish();
            let want = Accumulator::from_pairs(&f64s(a), &f64s(b)).finish();
            assert_eq!(got.pcc, want.pcc);
            assert_eq!(got.pcc_undefined, want.pcc_undefined);
            assert!((got.mae - want.mae).abs() <= 1e-6 * want.mae);
        }
    }

    #[test]
    fn f32_pairs_agree_with_f64_pairs() {
        let mut v = 0x1234_5678u32;
        let mut r = || {
            v = v.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (v >> 8) as f32 / (1u32 << 24) as f32 - 0.3
        };
        for n in [1usize, 3, 4, 7, 1000] {
            let x: Vec<f32> = (0..n).map(|_| r()).collect();
            let y: Vec<f32> = x.iter().map(|&a| a + r() * 0.01).collect();
            let a = Accumulator::from_f32_pairs(&x, &y).finish();
            let xf: Vec<f64> = x.iter().map(|&a| a as f64).collect();
            let yf: Vec<f64> = y.iter().map(|&a| a as f64).collect();
            let b = Accumulator::from_pairs(&xf, &yf).finish();
            for (p, q) in [
                (a.pcc, b.pcc),
                (a.mae, b.mae),
                (a.rmse, b.rmse),
                (a.cosine, b.cosine),
            ] {
                assert!(
                    (p - q).abs() <= 1e-12 * q.abs().max(1e-300),
                    "{n}: {p} vs {q}"
                );
            }
            assert_eq!(a.max_abs, b.max_abs);
        }
        let x = [1.0f32, f32::NAN, 2.0];
        let y = [1.5f32, 0.0, 2.5];
        assert_eq!(Accumulator::from_f32_pairs(&x, &y).finish().nonfinite, 1);
    }

    #[test]
    fn edge_cases_have_no_nan() {
        let z = [0.0; 4];
        let c = [2.0; 4];
        let r = [1.0, -2.0, 3.0, 0.5];
        for (x, y) in [
            (&z, &z),
            (&c, &c),
            (&z, &c),
            (&c, &z),
            (&r, &c),
            (&r, &r),
            (&c, &r),
        ] {
            let v = m(x, y);
            for f in [v.pcc, v.mae, v.max_abs, v.rmse, v.cosine, v.sqnr_db] {
                assert!(!f.is_nan(), "{x:?} {y:?} {v:?}");
            }
        }
        assert_eq!(m(&r, &r).pcc, 1.0);
        assert_eq!(m(&c, &c).pcc, 1.0);
        assert_eq!(m(&z, &c).pcc, 0.0);
        assert_eq!(m(&z, &z).cosine, 1.0);
        assert_eq!(m(&z, &c).sqnr_db, f64::NEG_INFINITY);
        assert_eq!(m(&[], &[]).pcc, 1.0);
        let nf = m(&[f64::NAN, 1.0, 2.0], &[f64::NAN, 1.0, 2.5]);
        assert_eq!(nf.nonfinite, 1);
        assert_eq!(nf.max_abs, 0.5);
    }

    #[test]
    fn identical_shortcut_matches_full_computation() {
        let x = [1.0, -2.0, 3.5, f64::NAN, 0.0];
        let full = Accumulator::from_pairs(&x, &x).finish();
        let mut a = Accumulator::identical(2, 0);
        a.merge(&Accumulator::identical(2, 1));
        assert_eq!(a.finish(), full);
    }

    #[test]
    fn merge_matches_single_pass() {
        let x: Vec<f64> = (0..1000)
            .map(|i| (i as f64 * 0.37).sin() * 3.0 + 1.0)
            .collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + ((i % 7) as f64 - 3.0) * 0.01)
            .collect();
        let whole = m(&x, &y);
        let mut a = Accumulator::from_pairs(&x[..313], &y[..313]);
        a.merge(&Accumulator::from_pairs(&x[313..], &y[313..]));
        let parts = a.finish();
        assert!((whole.pcc - parts.pcc).abs() < 1e-12);
        assert!((whole.rmse - parts.rmse).abs() < 1e-12);
        assert_eq!(whole.max_abs, parts.max_abs);
        // Against a direct textbook computation.
        let n = x.len() as f64;
        let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
        let cov: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
        let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
        let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
        assert!((whole.pcc - cov / (vx * vy).sqrt()).abs() < 1e-12);
    }
}
