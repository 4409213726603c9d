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
