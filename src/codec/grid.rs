//! `grid` (id 27): non-uniform scalar grids with a scale per group (MSE-optimal levels).
//! Spec: formats-spec/grid.md.
//!
//! Each group of `group` consecutive elements stores one f16 scale `s`; each element stores
//! the index of its nearest level in a table of 2 to 128 levels in [-1, 1]: `x ≈ s * level[c]`.
//! The table is in the parameters, so a reader needs no formula. Tables:
//! - `nf4`: bitsandbytes' NormalFloat4 levels (QLoRA), with `nf4` / `nf4_gN` short names
//!   (`group=64`, scale = the group's largest magnitude, as bitsandbytes does);
//! - `gauss`: the Lloyd-Max quantizer of a standard normal with `n` levels (HIGGS's scalar
//!   grids), scaled so that the outermost level is ±1;
//! - `fit`: levels fitted to this tensor (1-D k-means over the values divided by their group's
//!   largest magnitude), learned by the bind step.
//!
//! `fit=search` (the default except for `nf4`) tries eleven scales from 0.5 to 1.0 times the
//! group's largest magnitude and keeps the one with the least squared error.

use super::{expect_len, Binds, Codec, CodecEntry, Options, Props, TensorCodec, TensorFacts};
use crate::dtype::DType;
use crate::error::{Error, Result};
use half::f16;
use std::sync::Arc;

/// Registry id of `grid`.
pub const GRID_ID: u16 = 27;

/// bitsandbytes' NF4 levels.
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

const KINDS: [&str; 3] = ["nf4", "gauss", "fit"];

/// The grid codec; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCodec {
    /// 0 nf4, 1 gauss, 2 fit (where the levels came from; decoding reads only the table).
    kind: u8,
    /// Level count (2..=128).
    n: u8,
    group: u32,
    /// Scale search at encode time.
    search: bool,
    /// Ascending levels; empty for `fit` until bound.
    levels: Vec<f32>,
}

/// The Lloyd-Max quantizer of N(0, 1) with `n` levels, scaled to an outermost level of 1:
/// Lloyd's iteration (levels = conditional means between midpoints) over a fine fixed grid of
/// the density on [-8, 8], so the result is the same on every machine.
pub fn gauss_levels(n: usize) -> Vec<f32> {
    const STEPS: usize = 16_000;
    let h = 16.0 / STEPS as f64;
    // Cumulative mass and first moment at grid points x_k = -8 + k h.
    let mut cm = vec![0f64; STEPS + 1];
    let mut c1 = vec![0f64; STEPS + 1];
    for k in 0..STEPS {
        let x = -8.0 + (k as f64 + 0.5) * h;
        let p = (-0.5 * x * x).exp() * h;
        cm[k + 1] = cm[k] + p;
        c1[k + 1] = c1[k] + p * x;
    }
    let at = |t: f64| (((t + 8.0) / h).round().clamp(0.0, STEPS as f64)) as usize;
    let mut l: Vec<f64> = (0..n)
        .map(|i| -2.0 + 4.0 * (i as f64 + 0.5) / n as f64)
        .collect();
    for _ in 0..500 {
        let mut edges = vec![0usize];
        edges.extend(l.windows(2).map(|w| at(0.5 * (w[0] + w[1]))));
        edges.push(STEPS);
        for (i, li) in l.iter_mut().enumerate() {
            let (a, b) = (edges[i], edges[i + 1]);
            let m = cm[b] - cm[a];
            if m > 0.0 {
                *li = (c1[b] - c1[a]) / m;
            }
        }
    }
    let top = l.iter().fold(0f64, |m, x| m.max(x.abs()));
    l.iter().map(|x| (x / top) as f32).collect()
}

/// Levels fitted to `values` grouped by `group`: 1-D k-means with `n` centres over a
/// 4096-bin histogram of `x / amax(group)`, started from the Gaussian levels.
fn fit_levels(values: &[f32], group: usize, n: usize) -> Vec<f32> {
    const BINS: usize = 4096;
    let mut hist = vec![0f64; BINS];
    for g in values.chunks(group) {
        let a = g.iter().fold(0f32, |m, x| m.max(x.abs()));
        if a > 0.0 {
            for &x in g {
                let b = (((x / a) + 1.0) * 0.5 * (BINS - 1) as f32).round() as usize;
                hist[b.min(BINS - 1)] += 1.0;
            }
        }
    }
    let centre = |b: usize| b as f64 / (BINS - 1) as f64 * 2.0 - 1.0;
    let mut l: Vec<f64> = gauss_levels(n).iter().map(|&x| x as f64).collect();
    for _ in 0..100 {
        let mut sum = vec![0f64; n];
        let mut cnt = vec![0f64; n];
        let mut j = 0;
        for (b, &c) in hist.iter().enumerate() {
            let x = centre(b);
            while j + 1 < n && x > 0.5 * (l[j] + l[j + 1]) {
                j += 1;
            }
            sum[j] += c * x;
            cnt[j] += c;
        }
        for i in 0..n {
            if cnt[i] > 0.0 {
                l[i] = sum[i] / cnt[i];
            }
        }
        // A centre can win no bin only when the histogram is degenerate; keep the order.
        for i in 1..n {
            if l[i] <= l[i - 1] {
                l[i] = l[i - 1] + 1e-6;
            }
        }
    }
    l.iter().map(|&x| x as f32).collect()
}

fn bits_for(n: u8) -> u32 {
    (n.max(2) as u32 - 1).ilog2() + 1
}

impl GridCodec {
    fn bits(&self) -> u32 {
        bits_for(self.n)
    }

    fn groups(&self, n: usize) -> usize {
        n.div_ceil(self.group as usize)
    }

    /// Midpoints between levels: the code of `t` is the number of midpoints below it.
    fn thresholds(&self) -> Vec<f32> {
        self.levels
            .windows(2)
            .map(|w| 0.5 * (w[0] + w[1]))
            .collect()
    }

    /// Codes of one group under scale `s` and their squared error.
    fn codes(&self, g: &[f32], s: f32, th: &[f32], out: &mut [u8]) -> f32 {
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        let mut err = 0f32;
        for (o, &x) in out.iter_mut().zip(g) {
            let t = x * inv;
            let c = if th.len() < 16 {
                th.iter().filter(|&&m| t > m).count()
            } else {
                th.partition_point(|&m| m < t)
            };
            *o = c as u8;
            let d = x - s * self.levels[c];
            err += d * d;
        }
        err
    }

    /// The `grid` codec behind a stored stage, if it is one with its levels.
    pub(super) fn from_stage(c: &dyn TensorCodec) -> Option<GridCodec> {
        if c.id() != GRID_ID {
            return None;
        }
        from_params_bytes(&c.params()).ok()
    }

    /// Elements per scale.
    pub(super) fn group_size(&self) -> usize {
        self.group as usize
    }

    fn code_of(&self, x: f32, s: f32) -> usize {
        let t = if s > 0.0 { x / s } else { 0.0 };
        // The nearest level: the first whose midpoint with the next is not below t.
        let mut c = self.levels.partition_point(|&l| l < t);
        if c == self.levels.len() || (c > 0 && t - self.levels[c - 1] <= self.levels[c] - t) {
            c -= 1;
        }
        c
    }

    /// A value's reconstruction under a group's stored scale.
    pub(super) fn dequant(&self, x: f32, s: f32) -> f32 {
        s * self.levels[self.code_of(x, s)]
    }

    /// Codes of a group under its stored scale.
    pub(super) fn codes_of(&self, x: &[f32], s: f32, out: &mut [u8]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = self.code_of(v, s) as u8;
        }
    }

    /// A group's stored scale minimising `sum w_i (x_i - x^_i)^2` over 21 candidates from
    /// the absmax scale down to half of it.
    pub(super) fn fit_scale_weighted(&self, x: &[f32], w: &[f32]) -> Result<f32> {
        let top = self.levels.iter().fold(0f32, |m, l| m.max(l.abs()));
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut best = (f64::INFINITY, 0f32);
        for k in 0..21 {
            let s = f16::from_f32(amax * (1.0 - 0.025 * k as f32) / top).to_f32();
            if !s.is_finite() {
                return Err(Error::input(format!(
                    "a group scale of {} overflows f16",
                    amax / top
                )));
            }
            let e: f64 = x
                .iter()
                .zip(w)
                .map(|(&v, &wi)| {
                    let d = (v - self.dequant(v, s)) as f64;
                    wi as f64 * d * d
                })
                .sum();
            if e < best.0 {
                best = (e, s);
            }
        }
        Ok(best.1)
    }

    /// The payload of a chunk: its groups' f16 scales, then the codes.
    pub(super) fn payload(&self, params: &[(f32, f32)], codes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 * params.len() + codes.len());
        for &(s, _) in params {
            out.extend_from_slice(&f16::from_f32(s).to_le_bytes());
        }
        super::int::pack(codes, self.bits(), &mut out);
        out
    }
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: GRID_ID,
    name: "grid",
    version: 1,
    summary: "non-uniform scalar grid, f16 scale per group: levels=nf4|gauss|fit, n=2..128, group=N, fit=search|absmax (nf4, nf4_g32)",
    from_options: |o| Ok(Codec::Tensor(Arc::new(grid_options(o)?))),
    from_params: |p| Ok(Codec::Tensor(Arc::new(from_params_bytes(p)?))),
};

fn from_params_bytes(p: &[u8]) -> Result<GridCodec> {
    let bad = |m: String| Error::bad_params(format!("grid parameters: {m}"));
    if p.len() < 7 {
        return Err(bad(format!("{} bytes", p.len())));
    }
    let (kind, n, flags) = (p[0], p[1], p[2]);
    let group = u32::from_le_bytes(p[3..7].try_into().expect("4 bytes"));
    if kind > 2 || !(2..=128).contains(&n) || group == 0 || flags > 1 {
        return Err(bad(format!(
            "kind {kind}, {n} levels, group {group}, flags {flags}"
        )));
    }
    if p.len() != 7 + 4 * n as usize {
        return Err(bad(format!("{} bytes for {n} levels", p.len())));
    }
    let levels: Vec<f32> = p[7..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    if levels.iter().any(|l| !l.is_finite()) || levels.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad("levels are not finite and increasing".into()));
    }
    Ok(GridCodec {
        kind,
        n,
        group,
        search: flags & 1 != 0,
        levels,
    })
}

fn grid_options(o: &mut Options) -> Result<GridCodec> {
    let kind = o.choice("levels", &["gauss", "nf4", "fit"])?;
    let kind = KINDS.iter().position(|k| *k == kind).expect("a kind") as u8;
    let n = o.int("n", 16, 2, 128)? as u8;
    let group = o.int("group", if kind == 0 { 64 } else { 32 }, 1, 1 << 24)? as u32;
    let search = o.choice(
        "fit",
        if kind == 0 {
            &["absmax", "search"]
        } else {
            &["search", "absmax"]
        },
    )? == "search";
    let levels = match kind {
        0 if n != 16 => return Err(Error::config("grid levels=nf4 has 16 levels (n=16)")),
        0 => NF4.to_vec(),
        1 => gauss_levels(n as usize),
        _ => Vec::new(),
    };
    Ok(GridCodec {
        kind,
        n,
        group,
        search,
        levels,
    })
}

/// `nf4` and `nf4_gN`: bitsandbytes' format. Returns the codec name and its options.
pub fn expand_alias(name: &str) -> Option<(&'static str, String)> {
    let rest = name.strip_prefix("nf4")?;
    let group = match rest {
        "" => 64,
        r => r.strip_prefix("_g")?.parse::<u32>().ok()?,
    };
    Some(("grid", format!("levels=nf4,group={group}")))
}

impl TensorCodec for GridCodec {
    fn props(&self) -> Props {
        Props {
            chunk_multiple: self.group as u64,
            binds: if self.levels.is_empty() {
                Binds::Data
            } else {
                Binds::Nothing
            },
            ..Props::lossy(GRID_ID, "grid")
        }
    }
    fn params(&self) -> Vec<u8> {
        let mut p = vec![self.kind, self.n, self.search as u8];
        p.extend_from_slice(&self.group.to_le_bytes());
        for l in &self.levels {
            p.extend_from_slice(&l.to_le_bytes());
        }
        p
    }
    fn spec(&self) -> String {
        let mut s = format!("grid:levels={}", KINDS[self.kind as usize]);
        if self.n != 16 {
            s.push_str(&format!(",n={}", self.n));
        }
        s.push_str(&format!(",group={}", self.group));
        if self.search != (self.kind != 0) {
            s.push_str(if self.search {
                ",fit=search"
            } else {
                ",fit=absmax"
            });
        }
        s
    }
    fn max_encoded_len(&self, _src: DType, n: usize) -> usize {
        self.groups(n)
            .saturating_mul(2)
            .saturating_add(n.saturating_mul(self.bits() as usize).div_ceil(8))
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        if self.levels.is_empty() {
            return Err(Error::internal(
                "grid levels=fit is fitted by the bind step first",
            ));
        }
        let mut v = Vec::new();
        crate::dtype::to_f32(src, bytes, &mut v);
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(Error::input(format!(
                "grid cannot encode the non-finite value {x}"
            )));
        }
        let th = self.thresholds();
        let top = self.levels.iter().fold(0f32, |m, l| m.max(l.abs()));
        let mut out = Vec::with_capacity(self.max_encoded_len(src, v.len()));
        let mut codes = vec![0u8; v.len()];
        let mut trial = vec![0u8; self.group as usize];
        for (g, c) in v
            .chunks(self.group as usize)
            .zip(codes.chunks_mut(self.group as usize))
        {
            let amax = g.iter().fold(0f32, |m, x| m.max(x.abs()));
            let fs: &[f32] = if self.search {
                &[1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]
            } else {
                &[1.0]
            };
            let mut best = (f32::INFINITY, 0f32);
            for &f in fs {
                let s = f16::from_f32(amax * f / top).to_f32();
                if !s.is_finite() {
                    return Err(Error::input(format!(
                        "a group scale of {} overflows f16",
                        amax / top
                    )));
                }
                let e = self.codes(g, s, &th, &mut trial[..g.len()]);
                if e < best.0 {
                    best = (e, s);
                    c.copy_from_slice(&trial[..g.len()]);
                }
            }
            out.extend_from_slice(&f16::from_f32(best.1).to_le_bytes());
        }
        super::int::pack(&codes, self.bits(), &mut out);
        Ok(out)
    }
    fn decode(&self, payload: &[u8], _src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        expect_len("grid", payload, self.max_encoded_len(DType::F32, n))?;
        if self.levels.is_empty() {
            return Err(Error::bad_params("grid: no levels"));
        }
        let p = self.groups(n);
        let stream = &payload[2 * p..];
        super::check_pad_bits(stream, n as u64 * self.bits() as u64, "grid codes")?;
        let codes = super::int::unpack(stream, self.bits(), n);
        let g = self.group as usize;
        // A code past the table (possible with 3 levels in 2 bits) takes the last level.
        let mut table = self.levels.clone();
        table.resize(1 << self.bits(), *self.levels.last().expect("levels"));
        for ((og, cg), sb) in out
            .chunks_mut(4 * g)
            .zip(codes.chunks(g))
            .zip(payload.chunks_exact(2))
        {
            let s = f16::from_le_bytes([sb[0], sb[1]]).to_f32();
            for (o, &c) in og.chunks_exact_mut(4).zip(cg) {
                o.copy_from_slice(&(s * table[c as usize]).to_le_bytes());
            }
        }
        Ok(())
    }
    fn bind(&self, t: &TensorFacts<'_>) -> Option<Arc<dyn TensorCodec>> {
        if !self.levels.is_empty() {
            return None;
        }
        let v = t.values?;
        Some(Arc::new(GridCodec {
            levels: fit_levels(v, self.group as usize, self.n as usize),
            ..self.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Pipeline;

    fn roundtrip(p: &Pipeline, x: &[f32]) -> (Vec<f32>, usize) {
        let b: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let e = p.encode(DType::F32, &b).unwrap();
        let d = p.decode(&e, DType::F32, x.len(), u64::MAX).unwrap();
        (
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            e.len(),
        )
    }

    fn gaussian(n: usize) -> Vec<f32> {
        let mut s = 12345u64;
        (0..n)
            .map(|_| {
                let mut u = || {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
                };
                ((-2.0 * u().ln()).sqrt() * (2.0 * std::f64::consts::PI * u()).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn lloyd_max_levels_match_the_known_quantizer() {
        // Max (1960): 4 levels of N(0, 1) at ±0.4528, ±1.510.
        let l = gauss_levels(4);
        assert!((l[2] / l[3] - 0.4528 / 1.510).abs() < 1e-3, "{l:?}");
        let l = gauss_levels(16);
        assert_eq!(l.len(), 16);
        assert!(l.windows(2).all(|w| w[0] < w[1]));
        assert!((l[15] - 1.0).abs() < 1e-6 && (l[0] + 1.0).abs() < 1e-6);
    }

    #[test]
    fn grids_round_trip_and_beat_uniform_on_gaussian_data() {
        let x = gaussian(4096);
        let mse = |y: &[f32]| x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
        let int4 = Pipeline::parse("int4_g32").unwrap();
        let gauss = Pipeline::parse("grid:group=32").unwrap();
        let nf4 = Pipeline::parse("nf4").unwrap();
        assert_eq!(nf4.describe(), "grid:levels=nf4,group=64");
        let (yi, li) = roundtrip(&int4, &x);
        let (yg, lg) = roundtrip(&gauss, &x);
        let (yn, ln) = roundtrip(&nf4, &x);
        assert_eq!(li, lg, "same size as int4_g32");
        assert_eq!(ln, 4096 / 2 + 4096 / 64 * 2);
        assert!(mse(&yg) < 0.8 * mse(&yi), "{} vs {}", mse(&yg), mse(&yi));
        assert!(mse(&yn) < mse(&yi) * 1.2);
        let again = Pipeline::from_stages(&gauss.stages()).unwrap();
        assert_eq!(roundtrip(&again, &x).0, yg);
        let three = Pipeline::parse("grid:n=3,group=16").unwrap();
        let (y3, l3) = roundtrip(&three, &x);
        assert_eq!(l3, 4096 / 4 + 4096 / 16 * 2);
        assert!(mse(&y3) < mse(&x.iter().map(|_| 0.0).collect::<Vec<_>>()));
    }

    #[test]
    fn fitted_levels_are_learned_by_the_bind_step() {
        let x: Vec<f32> = gaussian(8192).iter().map(|v| v * v * v).collect();
        let p = Pipeline::parse("grid:levels=fit,group=32").unwrap();
        assert_eq!(p.tensor_codec().props().binds, Binds::Data);
        let b = p.bind(&TensorFacts {
            dims: &[64, 128],
            amax: None,
            values: Some(&x),
        });
        assert_eq!(b.tensor_codec().props().binds, Binds::Nothing);
        let mse = |y: &[f32]| x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
        let (yf, _) = roundtrip(&b, &x);
        let (yg, _) = roundtrip(&Pipeline::parse("grid:group=32").unwrap(), &x);
        assert!(mse(&yf) < mse(&yg), "{} vs {}", mse(&yf), mse(&yg));
        let again = Pipeline::from_stages(&b.stages()).unwrap();
        assert_eq!(roundtrip(&again, &x).0, yf);
    }

    /// formats-spec/grid.md's test vector.
    #[test]
    fn spec_test_vector() {
        let mut params = vec![2u8, 4, 0, 2, 0, 0, 0];
        for l in [-1f32, -0.3, 0.3, 1.0] {
            params.extend_from_slice(&l.to_le_bytes());
        }
        let Ok(Codec::Tensor(c)) = (ENTRY.from_params)(&params) else {
            panic!("valid params")
        };
        let mut out = vec![0u8; 16];
        c.decode(&[0x00, 0x40, 0x00, 0x38, 0x93], DType::F32, 4, &mut out)
            .unwrap();
        let y: Vec<f32> = out
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(y, [2.0, -2.0, 0.5 * -0.3f32, 0.5 * 0.3f32]);
    }

    #[test]
    fn bad_params_and_payloads_are_errors() {
        let p = Pipeline::parse("grid:n=8,group=8").unwrap();
        let x = gaussian(64);
        let b: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let e = p.encode(DType::F32, &b).unwrap();
        assert!(p.decode(&e[1..], DType::F32, 64, u64::MAX).is_err());
        let mut params = p.tensor_codec().params();
        params[7..11].copy_from_slice(&5f32.to_le_bytes());
        assert!((ENTRY.from_params)(&params).is_err());
        assert!((ENTRY.from_params)(&params[..9]).is_err());
        assert!(Pipeline::parse("grid:levels=nf4,n=8").is_err());
        assert!(Pipeline::parse("grid:n=129").is_err());
        assert!(Pipeline::parse("grid:n=17").is_ok());
    }
}
