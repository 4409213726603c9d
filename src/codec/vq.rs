//! `vq` (id 28): vector quantization with a k-means codebook (PocketLLM-style). Spec:
//! formats-spec/vq.md.
//!
//! Runs of `d` consecutive elements (2, 4 or 8) are replaced by the index of their nearest
//! codebook entry (Euclidean); indices are packed at log2(k) bits. The codebook (k entries of
//! d f16 values, k a power of two from 16 to 65536) is learned per tensor by the bind step and
//! stored in the parameters (`scope=tensor`), or learned per chunk and stored at the head of
//! each chunk's payload (`scope=chunk`: a block of rows).
//!
//! Training is k-means with k-means++ initialisation on a deterministic sample of the vectors
//! (every `m / sample`-th one), seeded; the assignment step runs in parallel over fixed blocks
//! whose partial sums are added in block order, so the codebook is the same bytes whatever the
//! thread count. k-means is hand-written: the crates that offer it (linfa-clustering) bring an
//! ndarray stack and no control over the summation order that determinism needs.

use super::{Binds, Codec, CodecEntry, Options, Props, TensorCodec, TensorFacts};
use crate::dtype::DType;
use crate::error::{Error, Result};
use half::f16;
use rayon::prelude::*;
use std::sync::Arc;

/// Registry id of `vq`.
pub const VQ_ID: u16 = 28;

const SCOPES: [&str; 2] = ["tensor", "chunk"];

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Train {
    /// Lloyd iterations after the k-means++ start.
    pub iters: u32,
    /// Most vectors trained on.
    pub sample: u32,
    /// Seed of the k-means++ draws.
    pub seed: u64,
}

/// One block's share of a Lloyd step: sums and counts per entry, and its worst-served vector
/// (squared distance, index).
type Partial = (Vec<f64>, Vec<u32>, (f32, usize));

/// Bytes of [`Train`] in parameters.
pub const TRAIN_BYTES: usize = 16;

impl Train {
    /// `iters` u32, `sample` u32, `seed` u64, little-endian (stored so that a file says how its
    /// codebook was trained; decoding does not use them).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.iters.to_le_bytes().to_vec();
        b.extend_from_slice(&self.sample.to_le_bytes());
        b.extend_from_slice(&self.seed.to_le_bytes());
        b
    }

    /// Read [`Train::to_bytes`] (exactly [`TRAIN_BYTES`] bytes).
    pub fn from_bytes(b: &[u8]) -> Train {
        Train {
            iters: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            sample: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            seed: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
        }
    }
}

/// Which of `m` vectors k-means learns from: `sample` of them, evenly spaced (all when fewer).
fn sample_rows(m: usize, sample: u32) -> Vec<usize> {
    if m == 0 {
        return Vec::new();
    }
    let s = (sample as usize).clamp(1, m);
    (0..s).map(|i| i * m / s).collect()
}

/// k-means++ over `ns` sample vectors (`at(i)`, `d` long): the first centre drawn uniformly,
/// each next one with probability proportional to `dist(i, centre)` to the nearest centre so
/// far (seeded splitmix64). Returns `k * d` values.
fn seed_centres<'a>(
    ns: usize,
    d: usize,
    k: usize,
    seed: u64,
    at: impl Fn(usize) -> &'a [f32],
    dist: impl Fn(usize, &[f32]) -> f32,
) -> Vec<f32> {
    let mut rng = crate::assign::Rng::new(seed ^ 0x5650_5143);
    let mut c: Vec<f32> = at((rng.next_u64() % ns as u64) as usize).to_vec();
    let mut near: Vec<f32> = (0..ns).map(|i| dist(i, &c[..d])).collect();
    while c.len() < k * d {
        let total: f64 = near.iter().map(|&x| x as f64).sum();
        let pick = if total > 0.0 {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
            let mut acc = 0f64;
            near.iter()
                .position(|&x| {
                    acc += x as f64;
                    acc > u
                })
                .unwrap_or(ns - 1)
        } else {
            (rng.next_u64() % ns as u64) as usize
        };
        let start = c.len();
        c.extend_from_slice(at(pick));
        for (i, n) in near.iter_mut().enumerate() {
            *n = n.min(dist(i, &c[start..start + d]));
        }
    }
    c
}

/// A trained codebook: `k` entries of `d` values, already rounded to f16.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    /// Vector length.
    pub d: usize,
    /// Entries, row-major (`k * d`).
    pub entries: Vec<f32>,
}

impl Codebook {
    /// Entries.
    pub fn k(&self) -> usize {
        self.entries.len() / self.d.max(1)
    }

    /// The f16 bytes of the entries.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.entries
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect()
    }

    /// Entries from f16 bytes (`k * d * 2` of them; non-finite entries are an error).
    pub fn from_bytes(b: &[u8], d: usize) -> Result<Codebook> {
        let entries: Vec<f32> = b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        if entries.iter().any(|x| !x.is_finite()) {
            return Err(Error::bad_payload("vq codebook entry is not finite"));
        }
        Ok(Codebook { d, entries })
    }

    /// k-means over the `d`-vectors of `v` (a trailing partial vector is left out).
    pub fn train(v: &[f32], d: usize, k: usize, t: Train) -> Codebook {
        let rows = sample_rows(v.len() / d, t.sample);
        let sample: Vec<f32> = if rows.is_empty() {
            vec![0.0; d]
        } else {
            rows.iter()
                .flat_map(|&j| v[j * d..(j + 1) * d].iter().copied())
                .collect()
        };
        let ns = sample.len() / d;
        let at = |i: usize| &sample[i * d..(i + 1) * d];
        let c = seed_centres(ns, d, k, t.seed, at, |i, c| {
            at(i).iter().zip(c).map(|(x, y)| (x - y) * (x - y)).sum()
        });
        let mut book = Codebook { d, entries: c };
        const BLOCK: usize = 1024;
        for _ in 0..t.iters {
            let parts: Vec<Partial> = (0..ns.div_ceil(BLOCK))
                .into_par_iter()
                .map(|b| {
                    let lo = b * BLOCK;
                    let hi = (lo + BLOCK).min(ns);
                    let mut sum = vec![0f64; k * d];
                    let mut cnt = vec![0u32; k];
                    let mut far = (-1f32, 0usize);
                    let mut scratch = Scratch::new(&book);
                    for i in lo..hi {
                        let (j, e) = scratch.nearest(&book, at(i));
                        cnt[j] += 1;
                        for (s, &x) in sum[j * d..(j + 1) * d].iter_mut().zip(at(i)) {
                            *s += x as f64;
                        }
                        if e > far.0 {
                            far = (e, i);
                        }
                    }
                    (sum, cnt, far)
                })
                .collect();
            let mut sum = vec![0f64; k * d];
            let mut cnt = vec![0u64; k];
            let mut far = (-1f32, 0usize);
            for (s, n, f) in parts {
                sum.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
                cnt.iter_mut().zip(&n).for_each(|(a, &b)| *a += b as u64);
                if f.0 > far.0 {
                    far = f;
                }
            }
            for j in 0..k {
                let e = &mut book.entries[j * d..(j + 1) * d];
                if cnt[j] > 0 {
                    for (x, s) in e.iter_mut().zip(&sum[j * d..(j + 1) * d]) {
                        *x = (s / cnt[j] as f64) as f32;
                    }
                } else {
                    // An empty cluster restarts at the worst-served vector.
                    e.copy_from_slice(at(far.1));
                }
            }
        }
        for x in &mut book.entries {
            *x = f16::from_f32(*x).to_f32();
        }
        book
    }

    /// [`Codebook::train`] minimising `sum w_i (x_i - c_i)^2`: `w` weighs each element of `v`
    /// (k-means++ draws, assignments and centroid means all weighted); the same sample of
    /// vectors, the same seed. Single-threaded (it runs on calibrated tensors only).
    pub fn train_weighted(v: &[f32], w: &[f32], d: usize, k: usize, t: Train) -> Codebook {
        let rows = sample_rows(v.len() / d, t.sample);
        let take = |x: &[f32], fill: f32| -> Vec<f32> {
            if rows.is_empty() {
                vec![fill; d]
            } else {
                rows.iter()
                    .flat_map(|&j| x[j * d..(j + 1) * d].iter().copied())
                    .collect()
            }
        };
        let (sample, sw) = (take(v, 0.0), take(w, 1.0));
        let ns = sample.len() / d;
        let at = |i: usize| (&sample[i * d..(i + 1) * d], &sw[i * d..(i + 1) * d]);
        let c = seed_centres(
            ns,
            d,
            k,
            t.seed,
            |i| at(i).0,
            |i, c| {
                let (x, wx) = at(i);
                x.iter()
                    .zip(c)
                    .zip(wx)
                    .map(|((a, b), wi)| wi * (a - b) * (a - b))
                    .sum()
            },
        );
        let mut book = Codebook { d, entries: c };
        for _ in 0..t.iters {
            let mut sum = vec![0f64; k * d];
            let mut wsum = vec![0f64; k * d];
            let mut far = (-1f32, 0usize);
            for i in 0..ns {
                let (x, wx) = at(i);
                let (j, e) = book.nearest_weighted(x, wx);
                for q in 0..d {
                    sum[j * d + q] += (wx[q] * x[q]) as f64;
                    wsum[j * d + q] += wx[q] as f64;
                }
                if e > far.0 {
                    far = (e, i);
                }
            }
            for j in 0..k {
                if wsum[j * d..(j + 1) * d].iter().all(|&x| x == 0.0) {
                    // An empty cluster restarts at the worst-served vector.
                    let e = at(far.1).0.to_vec();
                    book.entries[j * d..(j + 1) * d].copy_from_slice(&e);
                    continue;
                }
                for q in 0..d {
                    if wsum[j * d + q] > 0.0 {
                        book.entries[j * d + q] = (sum[j * d + q] / wsum[j * d + q]) as f32;
                    }
                }
            }
        }
        for x in &mut book.entries {
            *x = f16::from_f32(*x).to_f32();
        }
        book
    }

    /// `(index, weighted squared distance)` of the nearest entry; ties to the lowest index.
    fn nearest_weighted(&self, x: &[f32], w: &[f32]) -> (usize, f32) {
        let d = self.d;
        let mut best = (0usize, f32::INFINITY);
        for (i, e) in self.entries.chunks_exact(d).enumerate() {
            let dd: f32 = x
                .iter()
                .zip(e)
                .zip(w)
                .map(|((a, b), wi)| wi * (a - b) * (a - b))
                .sum();
            if dd < best.1 {
                best = (i, dd);
            }
        }
        best
    }

    /// [`Codebook::assign`] under element weights `w` (same length as `v`).
    pub fn assign_weighted(&self, v: &[f32], w: &[f32]) -> Vec<u32> {
        let d = self.d;
        let (mut pad, mut padw) = (vec![0f32; d], vec![0f32; d]);
        v.chunks(d)
            .zip(w.chunks(d))
            .map(|(x, wx)| {
                if x.len() == d {
                    self.nearest_weighted(x, wx).0 as u32
                } else {
                    pad.fill(0.0);
                    padw.fill(0.0);
                    pad[..x.len()].copy_from_slice(x);
                    padw[..x.len()].copy_from_slice(wx);
                    self.nearest_weighted(&pad, &padw).0 as u32
                }
            })
            .collect()
    }

    /// Indices of the nearest entries of the `d`-vectors of `v` (a trailing partial vector is
    /// padded with zeros).
    pub fn assign(&self, v: &[f32]) -> Vec<u32> {
        let d = self.d;
        let mut scratch = Scratch::new(self);
        let mut pad = vec![0f32; d];
        v.chunks(d)
            .map(|x| {
                let x = if x.len() == d {
                    x
                } else {
                    pad[..x.len()].copy_from_slice(x);
                    &pad
                };
                scratch.nearest(self, x).0 as u32
            })
            .collect()
    }

    /// Write entry `idx` over `out` (a trailing partial vector takes its first values).
    pub fn expand(&self, idx: &[u32], out: &mut [f32]) {
        let d = self.d;
        for (o, &j) in out.chunks_mut(d).zip(idx) {
            let j = j as usize;
            o.copy_from_slice(&self.entries[j * d..j * d + o.len()]);
        }
    }
}

impl Codebook {
    /// Add entry `idx` to each `d`-run of `out` (a trailing partial run takes its first values).
    pub fn add_to(&self, idx: &[u32], out: &mut [f32]) {
        let d = self.d;
        for (o, &j) in out.chunks_mut(d).zip(idx) {
            let (j, len) = (j as usize, o.len());
            o.iter_mut()
                .zip(&self.entries[j * d..j * d + len])
                .for_each(|(x, e)| *x += e);
        }
    }
}

/// Nearest-entry search: entries stored by dimension (`cols[j][i]` = value j of entry i) with
/// their squared norms, so that `|c|^2 - 2 x.c` runs as a loop the compiler vectorizes.
struct Scratch {
    cols: Vec<Vec<f32>>,
    norms: Vec<f32>,
    dist: Vec<f32>,
}

impl Scratch {
    fn new(book: &Codebook) -> Scratch {
        let k = book.k();
        let d = book.d;
        let cols: Vec<Vec<f32>> = (0..d)
            .map(|j| (0..k).map(|i| book.entries[i * d + j]).collect())
            .collect();
        let norms = (0..k)
            .map(|i| book.entries[i * d..(i + 1) * d].iter().map(|x| x * x).sum())
            .collect();
        Scratch {
            cols,
            norms,
            dist: vec![0.0; k],
        }
    }

    /// `(index, squared distance)` of the nearest entry; ties go to the lowest index.
    fn nearest(&mut self, book: &Codebook, x: &[f32]) -> (usize, f32) {
        if self.norms.len() != book.k() {
            *self = Scratch::new(book);
        }
        self.dist.copy_from_slice(&self.norms);
        for (col, &xj) in self.cols.iter().zip(x) {
            let t = -2.0 * xj;
            for (dd, &c) in self.dist.iter_mut().zip(col) {
                *dd += t * c;
            }
        }
        let mut best = (0usize, f32::INFINITY);
        for (i, &dd) in self.dist.iter().enumerate() {
            if dd < best.1 {
                best = (i, dd);
            }
        }
        let xx: f32 = x.iter().map(|v| v * v).sum();
        (best.0, (best.1 + xx).max(0.0))
    }
}

/// The vq codec; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct VqCodec {
    d: u8,
    /// log2 of the codebook size.
    kbits: u8,
    /// 0 tensor, 1 chunk.
    scope: u8,
    /// Elements per f16 scale (a multiple of `d`); 0: no scales.
    group: u32,
    train: Train,
    /// The tensor's codebook (`scope=tensor`, once bound).
    book: Option<Codebook>,
}

impl VqCodec {
    fn k(&self) -> usize {
        1 << self.kbits
    }
    fn book_bytes(&self) -> usize {
        self.k() * self.d as usize * 2
    }
    fn scale_bytes(&self, n: usize) -> usize {
        if self.group == 0 {
            0
        } else {
            n.div_ceil(self.group as usize) * 2
        }
    }

    /// Each group divided by its largest magnitude (as stored, f16); the stored scales.
    fn normalize(&self, v: &mut [f32]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.group == 0 {
            return out;
        }
        for g in v.chunks_mut(self.group as usize) {
            let a = f16::from_f32(g.iter().fold(0f32, |m, x| m.max(x.abs())));
            out.extend_from_slice(&a.to_le_bytes());
            let a = a.to_f32();
            let inv = if a > 0.0 && a.is_finite() {
                1.0 / a
            } else {
                0.0
            };
            g.iter_mut().for_each(|x| *x *= inv);
        }
        out
    }

    fn index_bytes(&self, n: usize) -> usize {
        n.div_ceil(self.d as usize)
            .saturating_mul(self.kbits as usize)
            .div_ceil(8)
    }

    /// The `vq` codec behind a stage, if it is one. Its codebook, if learnt, is ignored by [`VqCodec::bound_weighted`], so an unbound
    /// `scope=tensor` codec is taken too (and learnt once, weighted).
    pub(super) fn from_stage(c: &dyn TensorCodec) -> Option<VqCodec> {
        (c.id() == VQ_ID)
            .then(|| from_params_with(&c.params(), true).ok())
            .flatten()
    }

    /// This codec with its tensor codebook (`scope=tensor`) learnt from `values` under element
    /// weights `w` (the calibrated bind step); `scope=chunk` codecs are returned as they are.
    pub(super) fn bound_weighted(&self, values: &[f32], w: &[f32]) -> VqCodec {
        if self.scope != 0 {
            return self.clone();
        }
        let mut v = values.to_vec();
        self.normalize(&mut v);
        VqCodec {
            book: Some(Codebook::train_weighted(
                &v,
                w,
                self.d as usize,
                self.k(),
                self.train,
            )),
            ..self.clone()
        }
    }

    /// [`TensorCodec::encode`] of f32 values with nearest entries under element weights `w`
    /// (`scope=chunk` codebooks learnt weighted too); the payload is the plain encoder's format.
    pub(super) fn encode_weighted(&self, v: Vec<f32>, w: &[f32]) -> Result<Vec<u8>> {
        self.encode_with(
            v,
            |x| Codebook::train_weighted(x, w, self.d as usize, self.k(), self.train),
            |book, x| book.assign_weighted(x, w),
        )
    }

    /// The payload of f32 values: scales, the chunk's codebook (`scope=chunk`, from `train`),
    /// and the indices `assign` gives.
    fn encode_with(
        &self,
        mut v: Vec<f32>,
        train: impl Fn(&[f32]) -> Codebook,
        assign: impl Fn(&Codebook, &[f32]) -> Vec<u32>,
    ) -> Result<Vec<u8>> {
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(Error::input(format!(
                "vq cannot encode the non-finite value {x}"
            )));
        }
        let mut out = Vec::with_capacity(self.max_encoded_len(DType::F32, v.len()));
        let scales = self.normalize(&mut v);
        let local;
        let book = match (&self.book, self.scope) {
            (_, 1) => {
                local = train(&v);
                out.extend(local.to_bytes());
                &local
            }
            (Some(b), _) => b,
            (None, _) => {
                return Err(Error::internal(
                    "vq scope=tensor learns its codebook in the bind step first",
                ))
            }
        };
        out.extend(scales);
        out.extend(super::kvq::pack(&assign(book, &v), self.kbits));
        Ok(out)
    }
}

/// Parse the vq options shared with `tenpakx`: `d`, `k`, `iters`, `sample`, `seed`.
pub(super) fn vq_options(o: &mut Options, d: i64, k: i64) -> Result<(u8, u8, Train)> {
    let d = o.int("d", d, 2, 8)? as u8;
    if ![2, 4, 8].contains(&d) {
        return Err(Error::config(format!("vq: d={d}: expected 2, 4 or 8")));
    }
    let k = o.int("k", k, 16, 65536)? as u32;
    if !k.is_power_of_two() {
        return Err(Error::config(format!(
            "vq: k={k} is not a power of two (16..=65536)"
        )));
    }
    let iters = o.int("iters", 10, 0, 1000)? as u32;
    let sample = o.int("sample", (32 * k as i64).clamp(8192, 1 << 17), 1, 1 << 24)? as u32;
    let seed = o.int("seed", 0, 0, i64::MAX)? as u64;
    Ok((
        d,
        k.trailing_zeros() as u8,
        Train {
            iters,
            sample,
            seed,
        },
    ))
}

/// The `k=... iters=... sample=... seed=...` options that differ from their defaults.
pub(super) fn train_spec(d: u8, kbits: u8, t: &Train) -> String {
    let k = 1u32 << kbits;
    let mut s = format!("d={d},k={k}");
    if t.iters != 10 {
        s.push_str(&format!(",iters={}", t.iters));
    }
    if t.sample as i64 != (32 * k as i64).clamp(8192, 1 << 17) {
        s.push_str(&format!(",sample={}", t.sample));
    }
    if t.seed != 0 {
        s.push_str(&format!(",seed={}", t.seed));
    }
    s
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: VQ_ID,
    name: "vq",
    version: 1,
    summary: "vector quantization, k-means codebook: d=2|4|8, k=16..65536, group=N (f16 scales), scope=tensor|chunk, iters, sample, seed",
    from_options: |o| {
        let (d, kbits, train) = vq_options(o, 4, 256)?;
        let scope = o.choice("scope", &SCOPES)?;
        let group = o.int("group", 0, 0, 1 << 24)? as u32;
        if !group.is_multiple_of(d as u32) {
            return Err(Error::config(format!(
                "vq: group={group} is not a multiple of d={d}"
            )));
        }
        Ok(Codec::Tensor(Arc::new(VqCodec {
            d,
            kbits,
            group,
            scope: SCOPES.iter().position(|s| *s == scope).expect("a scope") as u8,
            train,
            book: None,
        })))
    },
    from_params: |p| Ok(Codec::Tensor(Arc::new(from_params_bytes(p)?))),
};

fn from_params_bytes(p: &[u8]) -> Result<VqCodec> {
    from_params_with(p, false)
}

/// Parse stored parameters; `unbound` also accepts a `scope=tensor` codec whose codebook is not
/// learnt yet (no codebook bytes), as the calibrated encoder meets it before the bind step.
fn from_params_with(p: &[u8], unbound: bool) -> Result<VqCodec> {
    let bad = |m: String| Error::bad_params(format!("vq parameters: {m}"));
    if p.len() < 7 + TRAIN_BYTES {
        return Err(bad(format!("{} bytes", p.len())));
    }
    let (d, kbits, scope) = (p[0], p[1], p[2]);
    let group = u32::from_le_bytes(p[3..7].try_into().expect("4 bytes"));
    if ![2, 4, 8].contains(&d)
        || !(4..=16).contains(&kbits)
        || scope > 1
        || !group.is_multiple_of(d as u32)
    {
        return Err(bad(format!(
            "d {d}, log2 k {kbits}, scope {scope}, group {group}"
        )));
    }
    let mut c = VqCodec {
        d,
        kbits,
        scope,
        group,
        train: Train::from_bytes(&p[7..7 + TRAIN_BYTES]),
        book: None,
    };
    let head = 7 + TRAIN_BYTES;
    if unbound && p.len() == head {
        return Ok(c);
    }
    let want = head + if scope == 0 { c.book_bytes() } else { 0 };
    if p.len() != want {
        return Err(bad(format!("{} bytes, expected {want}", p.len())));
    }
    if scope == 0 {
        c.book = Some(Codebook::from_bytes(&p[head..], d as usize)?);
    }
    Ok(c)
}

impl TensorCodec for VqCodec {
    fn props(&self) -> Props {
        Props {
            chunk_multiple: if self.group > 0 {
                self.group as u64
            } else {
                self.d as u64
            },
            binds: if self.scope == 0 && self.book.is_none() {
                Binds::Data
            } else {
                Binds::Nothing
            },
            ..Props::lossy(VQ_ID, "vq")
        }
    }
    fn params(&self) -> Vec<u8> {
        let mut p = vec![self.d, self.kbits, self.scope];
        p.extend_from_slice(&self.group.to_le_bytes());
        p.extend(self.train.to_bytes());
        if let Some(b) = &self.book {
            p.extend(b.to_bytes());
        }
        p
    }
    fn spec(&self) -> String {
        let mut s = format!("vq:{}", train_spec(self.d, self.kbits, &self.train));
        if self.group != 0 {
            s.push_str(&format!(",group={}", self.group));
        }
        if self.scope == 1 {
            s.push_str(",scope=chunk");
        }
        s
    }
    fn max_encoded_len(&self, _src: DType, n: usize) -> usize {
        let book = if self.scope == 1 {
            self.book_bytes()
        } else {
            0
        };
        book.saturating_add(self.scale_bytes(n))
            .saturating_add(self.index_bytes(n))
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        crate::dtype::to_f32(src, bytes, &mut v);
        self.encode_with(
            v,
            |x| Codebook::train(x, self.d as usize, self.k(), self.train),
            |book, x| book.assign(x),
        )
    }
    fn decode(&self, payload: &[u8], _src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        super::expect_len("vq", payload, self.max_encoded_len(DType::F32, n))?;
        let (book, idx) = match (&self.book, self.scope) {
            (_, 1) => {
                let (b, i) = payload.split_at(self.book_bytes());
                (&Codebook::from_bytes(b, self.d as usize)?, i)
            }
            (Some(b), _) => (b, payload),
            (None, _) => return Err(Error::bad_params("vq: no codebook")),
        };
        let (scales, idx) = idx.split_at(self.scale_bytes(n));
        let k = n.div_ceil(self.d as usize);
        super::check_pad_bits(idx, k as u64 * self.kbits as u64, "vq indices")?;
        let idx = super::kvq::unpack(idx, self.kbits, k);
        let mut v = vec![0f32; n];
        book.expand(&idx, &mut v);
        if self.group > 0 {
            for (g, s) in v
                .chunks_mut(self.group as usize)
                .zip(scales.chunks_exact(2))
            {
                let s = f16::from_le_bytes([s[0], s[1]]).to_f32();
                g.iter_mut().for_each(|x| *x *= s);
            }
        }
        super::int::put_f32(&v, out);
        Ok(())
    }
    fn stage_bytes(&self, chunks: &[u64]) -> Option<Vec<(&'static str, u64)>> {
        let books = if self.scope == 1 { chunks.len() } else { 1 };
        let idx: usize = chunks.iter().map(|&n| self.index_bytes(n as usize)).sum();
        let scales: usize = chunks.iter().map(|&n| self.scale_bytes(n as usize)).sum();
        Some(vec![
            ("codebook", (books * self.book_bytes()) as u64),
            ("scales", scales as u64),
            ("indices", idx as u64),
        ])
    }
    fn bind(&self, t: &TensorFacts<'_>) -> Option<Arc<dyn TensorCodec>> {
        if self.scope != 0 || self.book.is_some() {
            return None;
        }
        let mut v = t.values?.to_vec();
        self.normalize(&mut v);
        Some(Arc::new(VqCodec {
            book: Some(Codebook::train(&v, self.d as usize, self.k(), self.train)),
            ..self.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Pipeline;

    fn data(n: usize) -> Vec<f32> {
        let mut s = crate::assign::Rng::new(99);
        (0..n)
            .map(|_| ((s.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1)
            .collect()
    }

    fn run(p: &Pipeline, x: &[f32]) -> (Vec<f32>, Vec<u8>) {
        let b: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let e = p.encode(DType::F32, &b).unwrap();
        let d = p.decode(&e, DType::F32, x.len(), u64::MAX).unwrap();
        let y = d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (y, e)
    }

    #[test]
    fn kmeans_is_deterministic_across_thread_counts() {
        let x = data(40_000);
        let t = Train {
            iters: 5,
            sample: 8192,
            seed: 1,
        };
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| Codebook::train(&x, 4, 64, t));
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| Codebook::train(&x, 4, 64, t));
        assert_eq!(one, three);
    }

    #[test]
    fn vq_round_trips_with_tensor_and_chunk_codebooks() {
        let x = data(4098);
        let p = Pipeline::parse("vq:d=4,k=64,iters=4").unwrap();
        assert_eq!(p.tensor_codec().props().binds, Binds::Data);
        let b = p.bind(&TensorFacts {
            dims: &[2, 2049],
            amax: None,
            values: Some(&x),
        });
        let (y, e) = run(&b, &x);
        assert_eq!(e.len(), (4098usize.div_ceil(4) * 6).div_ceil(8));
        let mse = |y: &[f32]| x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
        let zero = mse(&vec![0.0; x.len()]);
        assert!(mse(&y) < 0.5 * zero, "{} vs {zero}", mse(&y));
        let again = Pipeline::from_stages(&b.stages()).unwrap();
        let d = again.decode(&e, DType::F32, x.len(), u64::MAX).unwrap();
        assert_eq!(d.len(), 4 * x.len());
        let c = Pipeline::parse("vq:d=2,k=16,scope=chunk").unwrap();
        let (yc, ec) = run(&c, &x);
        assert_eq!(ec.len(), 16 * 2 * 2 + (2049 * 4usize).div_ceil(8));
        assert!(mse(&yc) < zero);
        assert!(c
            .decode(&ec[..ec.len() - 1], DType::F32, x.len(), u64::MAX)
            .is_err());
    }

    #[test]
    fn bad_options_and_params_are_errors() {
        assert!(Pipeline::parse("vq:d=3").is_err());
        assert!(Pipeline::parse("vq:k=100").is_err());
        assert!((ENTRY.from_params)(&[4, 8, 0]).is_err());
        assert!(Pipeline::parse("vq:d=4,group=6").is_err());
        let mut p = vec![2, 4, 2, 0, 0, 0, 0];
        p.extend([0u8; TRAIN_BYTES]);
        assert!((ENTRY.from_params)(&p).is_err());
        p[2] = 0;
        p.extend(std::iter::repeat_n(0u8, 16 * 2 * 2));
        assert!((ENTRY.from_params)(&p).is_ok());
        p[3] = 3;
        assert!(
            (ENTRY.from_params)(&p).is_err(),
            "group not a multiple of d"
        );
        p[3] = 0;
        p[7 + TRAIN_BYTES..9 + TRAIN_BYTES].copy_from_slice(&f16::NAN.to_le_bytes());
        assert!((ENTRY.from_params)(&p).is_err());
    }
}
