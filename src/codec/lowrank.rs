//! The low-rank family: `lowrank` (id 29) and `tenpakx` (id 30, the design card's TenPak-X:
//! low-rank + vector codebook + integer residual). Spec: formats-spec/lowrank.md.
//!
//! A matrix `A` (rows x cols, the tensor's last dimension being cols) is approximated as
//! `L R` with `R` (rank x cols) in the parameters and `L` (rows x rank) in each chunk (chunks
//! hold whole rows). With `importance=magnitude` (the default; the experiment log's
//! calibration-free proxy) the factorization is that of `A diag(s)`, `s_j` the mean magnitude of
//! column j, so columns of large weights are fitted first: `L = A diag(s) V`,
//! `R = V^T diag(1/s)`, `V` the top right singular vectors. `tenpakx` then quantizes what is
//! left with a k-means codebook over runs of `d` elements (`vq`) and what is left after that
//! with an `int` codec (`bits=4,zero=asym,group=32` by default): `A ≈ L R + C[idx] + Q(res)`.
//! `pocketllm` is `tenpakx` without the low-rank part (`rank=0,d=4,k=256,group=16,fit=als`).
//!
//! The singular vectors come from a randomized range finder (Halko, Martinsson & Tropp:
//! Gaussian test matrix, two power iterations, QR) and the SVD of the small projected matrix,
//! both in faer, single-threaded so that the factors are the same bytes whatever the thread
//! count.

use super::int::{Fit, Group, IntCodec};
use super::vq::{Codebook, Train};
use super::{Binds, Codec, CodecEntry, Options, Props, TensorCodec, TensorFacts};
use crate::dtype::DType;
use crate::error::{Error, Result};
use faer::Mat;
use half::{bf16, f16};
use rayon::prelude::*;
use std::sync::Arc;

/// Registry id of `lowrank`.
pub const LOWRANK_ID: u16 = 29;
/// Registry id of `tenpakx`.
pub const TENPAKX_ID: u16 = 30;

/// How the factors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// IEEE half.
    F16 = 0,
    /// bfloat16.
    Bf16 = 1,
    /// int8, symmetric, one f16 scale per stored row.
    Int8 = 2,
}

const FACTORS: [&str; 3] = ["f16", "bf16", "int8"];

impl Factor {
    /// Bytes of `rows` stored rows of `len` values.
    fn bytes(self, rows: usize, len: usize) -> usize {
        match self {
            Factor::F16 | Factor::Bf16 => rows * len * 2,
            Factor::Int8 => rows * (len + 2),
        }
    }

    /// Store `rows x len` values; also round `v` to what decoding gives.
    fn store(self, v: &mut [f32], len: usize, out: &mut Vec<u8>) {
        if len == 0 {
            return;
        }
        for row in v.chunks_mut(len) {
            match self {
                Factor::F16 => row.iter_mut().for_each(|x| {
                    // Out of f16's range: the largest finite value (the later stages absorb it).
                    let h = f16::from_f32(x.clamp(-65504.0, 65504.0));
                    out.extend_from_slice(&h.to_le_bytes());
                    *x = h.to_f32();
                }),
                Factor::Bf16 => row.iter_mut().for_each(|x| {
                    let h = bf16::from_f32(*x);
                    out.extend_from_slice(&h.to_le_bytes());
                    *x = h.to_f32();
                }),
                Factor::Int8 => {
                    let a = row.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let s = f16::from_f32(a / 127.0);
                    out.extend_from_slice(&s.to_le_bytes());
                    let s = s.to_f32();
                    for x in row.iter_mut() {
                        let q = if s > 0.0 {
                            (*x / s).round().clamp(-127.0, 127.0)
                        } else {
                            0.0
                        };
                        out.push(q as i8 as u8);
                        *x = q * s;
                    }
                }
            }
        }
    }

    /// Read `rows x len` values stored by [`Factor::store`] (`b` is exactly their bytes).
    fn load(self, b: &[u8], len: usize) -> Result<Vec<f32>> {
        let v: Vec<f32> = match self {
            Factor::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Factor::Bf16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Factor::Int8 => {
                let mut v = Vec::with_capacity(b.len());
                for row in b.chunks_exact(len + 2) {
                    let s = f16::from_le_bytes([row[0], row[1]]).to_f32();
                    v.extend(row[2..].iter().map(|&q| q as i8 as f32 * s));
                }
                v
            }
        };
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::bad_payload("lowrank factor value is not finite"));
        }
        Ok(v)
    }
}

/// Top right singular vectors of `a` (rows x cols, row-major), at most `k` of them, with the
/// singular values: randomized range finder (oversampling 8, two power iterations) and the
/// SVD of the projected matrix, in faer.
pub fn top_singular(a: &[f32], rows: usize, cols: usize, k: usize) -> (Vec<f32>, Mat<f32>) {
    let l = (k + 8).min(rows).min(cols);
    let am = Mat::<f32>::from_fn(rows, cols, |i, j| a[i * cols + j]);
    let mut s = crate::assign::Rng::new(0x4C4F_5752);
    let omega = Mat::<f32>::from_fn(cols, l, |_, _| {
        // Box-Muller from two uniforms in (0, 1).
        let u = ((s.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let w = ((s.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * w).cos()) as f32
    });
    let mut q = (&am * &omega).qr().compute_thin_Q();
    for _ in 0..2 {
        let z = (am.transpose() * &q).qr().compute_thin_Q();
        q = (&am * &z).qr().compute_thin_Q();
    }
    let b = q.transpose() * &am;
    match b.thin_svd() {
        Ok(svd) => {
            let sv: Vec<f32> = svd.S().column_vector().iter().copied().collect();
            let k = k.min(sv.len());
            let v = svd.V().subcols(0, k).to_owned();
            (sv[..k].to_vec(), v)
        }
        Err(_) => (Vec::new(), Mat::zeros(cols, 0)),
    }
}

/// `out[i, :] += L[i, :] R` for every row of `l` (rows x rank): the reconstruction, in this
/// summation order on both sides.
fn add_lr(l: &[f32], r: &[f32], rank: usize, cols: usize, out: &mut [f32]) {
    if rank == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { add_lr_avx2(l, r, rank, cols, out) };
        return;
    }
    add_lr_body(l, r, rank, cols, out);
}

/// [`add_lr_body`] compiled for AVX2: the same multiplications and additions in the same
/// order (Rust never fuses them), eight lanes at a time, so the bits are the same.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_lr_avx2(l: &[f32], r: &[f32], rank: usize, cols: usize, out: &mut [f32]) {
    add_lr_body(l, r, rank, cols, out);
}

#[inline(always)]
fn add_lr_body(l: &[f32], r: &[f32], rank: usize, cols: usize, out: &mut [f32]) {
    // Sixteen outputs stay in registers while t runs over the rank: each element still gets
    // its additions in the order t = 0, 1, ..., so the bits are those of the plain loop.
    const W: usize = 16;
    for (li, oi) in l.chunks_exact(rank).zip(out.chunks_exact_mut(cols)) {
        let whole = cols / W * W;
        for j in (0..whole).step_by(W) {
            let mut acc: [f32; W] = oi[j..j + W].try_into().expect("W values");
            for (t, &lv) in li.iter().enumerate() {
                let rr = &r[t * cols + j..t * cols + j + W];
                for k in 0..W {
                    acc[k] += lv * rr[k];
                }
            }
            oi[j..j + W].copy_from_slice(&acc);
        }
        for (t, &lv) in li.iter().enumerate() {
            for (o, &rv) in oi[whole..]
                .iter_mut()
                .zip(&r[t * cols + whole..(t + 1) * cols])
            {
                *o += lv * rv;
            }
        }
    }
}

/// The low-rank codecs; see the module docs.
#[derive(Debug, Clone)]
pub struct LowRankCodec {
    id: u16,
    factor: Factor,
    /// Fixed rank, or the most the energy rule may pick.
    rank: u16,
    /// Pick the smallest rank keeping this share of the (weighted) energy; 0: `rank`.
    energy: f32,
    importance: bool,
    /// `tenpakx`: the codebook stage (d, log2 k, training).
    vq: Option<(u8, u8, Train)>,
    /// `tenpakx`: the residual's integer codec.
    residual: Option<IntCodec>,
    /// Row length; 0 until the shape is bound.
    cols: u64,
    /// Bound: `R` (rank x cols, as decoded), the codebook, and for encoding `P = diag(s) V`.
    r: Vec<f32>,
    book: Option<Codebook>,
    proj: Option<Arc<Vec<f32>>>,
    bound: bool,
}

impl LowRankCodec {
    fn name(&self) -> &'static str {
        if self.id == LOWRANK_ID {
            "lowrank"
        } else {
            "tenpakx"
        }
    }

    /// Rank in use once bound (the energy rule may have picked fewer).
    fn used_rank(&self) -> usize {
        if self.cols == 0 {
            0
        } else {
            self.r.len() / self.cols as usize
        }
    }

    fn rows(&self, n: usize) -> usize {
        n / (self.cols.max(1) as usize)
    }

    fn lbytes(&self, n: usize) -> usize {
        self.factor.bytes(self.rows(n), self.used_rank())
    }

    fn ibytes(&self, n: usize) -> usize {
        match self.vq {
            Some((d, kb, _)) => (n.div_ceil(d as usize) * kb as usize).div_ceil(8),
            None => 0,
        }
    }

    /// Bytes of each stage of a chunk of `n` elements: low-rank factor, codebook indices,
    /// residual.
    fn chunk_stages(&self, n: usize) -> [usize; 3] {
        let res = self
            .residual
            .as_ref()
            .map_or(0, |c| c.max_encoded_len(DType::F32, n));
        [self.lbytes(n), self.ibytes(n), res]
    }

    /// `A - L R` for rows of `a`, with the factors as stored: returns the stored `L` bytes.
    fn strip_lowrank(&self, a: &mut [f32]) -> Result<Vec<u8>> {
        let rank = self.used_rank();
        let cols = self.cols as usize;
        let mut bytes = Vec::new();
        if rank == 0 {
            return Ok(bytes);
        }
        let p = self
            .proj
            .as_ref()
            .ok_or_else(|| Error::internal("lowrank encodes after its bind step"))?;
        let rows = a.len() / cols;
        let mut l = vec![0f32; rows * rank];
        for (ai, li) in a.chunks_exact(cols).zip(l.chunks_exact_mut(rank)) {
            for (&x, pj) in ai.iter().zip(p.chunks_exact(rank)) {
                for (o, &pv) in li.iter_mut().zip(pj) {
                    *o += x * pv;
                }
            }
        }
        self.factor.store(&mut l, rank, &mut bytes);
        let mut rec = vec![0f32; a.len()];
        add_lr(&l, &self.r, rank, cols, &mut rec);
        a.iter_mut().zip(&rec).for_each(|(x, r)| *x -= r);
        Ok(bytes)
    }
}

fn factor_options(o: &mut Options, rank: i64) -> Result<(Factor, u16, f32, bool)> {
    let f = o.choice("factors", &FACTORS)?;
    let factor = [Factor::F16, Factor::Bf16, Factor::Int8]
        [FACTORS.iter().position(|x| *x == f).expect("a factor")];
    let rank = o.int("rank", rank, 0, 4096)? as u16;
    let energy = match o.take("energy") {
        None => 0.0,
        Some(v) => match v.parse::<f32>() {
            Ok(e) if e > 0.0 && e <= 1.0 => e,
            _ => {
                return Err(Error::config(format!(
                    "lowrank: energy={v} is not a share in (0, 1]"
                )))
            }
        },
    };
    let importance = o.choice("importance", &["magnitude", "none"])? == "magnitude";
    Ok((factor, rank, energy, importance))
}

fn build(
    id: u16,
    (factor, rank, energy, importance): (Factor, u16, f32, bool),
    vq: Option<(u8, u8, Train)>,
    residual: Option<IntCodec>,
) -> LowRankCodec {
    LowRankCodec {
        id,
        factor,
        rank: if energy > 0.0 && rank == 32 {
            128
        } else {
            rank
        },
        energy,
        importance,
        vq,
        residual,
        cols: 0,
        r: Vec::new(),
        book: None,
        proj: None,
        bound: false,
    }
}

/// `tenpakx` options (also behind `pocketllm`).
fn tenpakx_options(o: &mut Options, rank: i64, d: i64, k: i64, group: i64) -> Result<LowRankCodec> {
    let f = factor_options(o, rank)?;
    let (d, kbits, train) = super::vq::vq_options(o, d, k)?;
    let bits = o.int("bits", 4, 2, 8)? as u8;
    let group = o.int("group", group, 1, 1 << 20)? as u64;
    let fit = match o.choice("fit", &["minmax", "als"])? {
        "als" => Fit::Als(o.int("iters_als", 4, 1, 50)? as u8),
        _ => Fit::MinMax,
    };
    let residual = IntCodec {
        bits,
        asym: true,
        f32_scale: false,
        group: Group::Elems(group),
        fit,
    };
    Ok(build(
        TENPAKX_ID,
        f,
        Some((d, kbits, train)),
        Some(residual),
    ))
}

pub(super) const LOWRANK_ENTRY: CodecEntry = CodecEntry {
    id: LOWRANK_ID,
    name: "lowrank",
    version: 1,
    summary: "importance-weighted truncated SVD, L per row block, R per tensor: rank=R|energy=E, factors=f16|bf16|int8, importance=magnitude|none",
    from_options: |o| {
        let f = factor_options(o, 32)?;
        Ok(Codec::Tensor(Arc::new(build(LOWRANK_ID, f, None, None))))
    },
    from_params: |p| from_params(LOWRANK_ID, p),
};

pub(super) const TENPAKX_ENTRY: CodecEntry = CodecEntry {
    id: TENPAKX_ID,
    name: "tenpakx",
    version: 1,
    summary: "TenPak-X: low-rank + k-means codebook + integer residual (rank=32, d=4, k=256, bits=4, group=32); pocketllm = rank=0,group=16,fit=als",
    from_options: |o| Ok(Codec::Tensor(Arc::new(tenpakx_options(o, 32, 4, 256, 32)?))),
    from_params: |p| from_params(TENPAKX_ID, p),
};

/// `pocketllm`: `tenpakx` without the low-rank part, the seed's PocketLLM v2 settings.
pub fn expand_alias(name: &str) -> Option<(&'static str, String)> {
    (name == "pocketllm").then(|| ("tenpakx", "rank=0,d=4,k=256,group=16,fit=als".to_string()))
}

fn from_params(id: u16, p: &[u8]) -> Result<Codec> {
    let bad = |m: String| Error::bad_params(format!("lowrank parameters: {m}"));
    if p.len() < 14 {
        return Err(bad(format!("{} bytes", p.len())));
    }
    let factor = match p[0] {
        0 => Factor::F16,
        1 => Factor::Bf16,
        2 => Factor::Int8,
        f => return Err(bad(format!("factor format {f}"))),
    };
    let rank = u16::from_le_bytes([p[1], p[2]]) as usize;
    let cols = u64::from_le_bytes(p[3..11].try_into().expect("8 bytes"));
    let (d, kbits, has_res) = (p[11], p[12], p[13]);
    let tb = if d > 0 { super::vq::TRAIN_BYTES } else { 0 };
    if p.len() < 14 + tb {
        return Err(bad(format!("{} bytes", p.len())));
    }
    let train = Train::from_bytes(if d > 0 { &p[14..14 + tb] } else { &[0; 16] });
    if cols == 0
        || cols > 1 << 32
        || (rank > 0 && cols.checked_mul(rank as u64).is_none_or(|x| x > 1 << 28))
    {
        return Err(bad(format!("rank {rank} of rows of {cols}")));
    }
    let vq = match (d, kbits) {
        (0, 0) => None,
        (2 | 4 | 8, 4..=16) => Some((d, kbits)),
        _ => return Err(bad(format!("d {d}, log2 k {kbits}"))),
    };
    if id == LOWRANK_ID && (vq.is_some() || has_res != 0) || has_res > 1 {
        return Err(bad("stages that this codec does not have".into()));
    }
    let rb = factor.bytes(rank, cols as usize);
    let bb = vq.map_or(0, |(d, kb)| (1usize << kb) * d as usize * 2);
    let body = &p[14 + tb..];
    if body.len() < rb + bb || (has_res == 0 && body.len() != rb + bb) {
        return Err(bad(format!("{} bytes after the header", body.len())));
    }
    let r = factor.load(&body[..rb], cols as usize)?;
    let book = match vq {
        Some((d, _)) => Some(Codebook::from_bytes(&body[rb..rb + bb], d as usize)?),
        None => None,
    };
    let residual = if has_res == 1 {
        let inner = super::inner_from_params("tenpakx", &body[rb + bb..])?;
        // The residual stage is an `int` codec by construction; rebuild it from its params.
        Some(
            IntCodec::from_stage(&*inner)
                .ok_or_else(|| bad("the residual is not an int codec".into()))?,
        )
    } else {
        None
    };
    Ok(Codec::Tensor(Arc::new(LowRankCodec {
        id,
        factor,
        rank: rank as u16,
        energy: 0.0,
        importance: true,
        vq: vq.map(|(d, kb)| (d, kb, train)),
        residual,
        cols,
        r,
        book,
        proj: None,
        bound: true,
    })))
}

impl TensorCodec for LowRankCodec {
    fn props(&self) -> Props {
        let mut m = self.cols.max(1);
        if let Some((d, _, _)) = self.vq {
            m = super::lcm(m, d as u64);
        }
        if let Some(Group::Elems(g)) = self.residual.as_ref().map(|c| c.group) {
            m = super::lcm(m, g);
        }
        Props {
            chunk_multiple: m,
            binds: if self.bound {
                Binds::Nothing
            } else {
                Binds::Data
            },
            ..Props::lossy(self.id, self.name())
        }
    }
    fn params(&self) -> Vec<u8> {
        let rank = self.used_rank();
        let mut p = vec![self.factor as u8];
        p.extend_from_slice(&(rank as u16).to_le_bytes());
        p.extend_from_slice(&self.cols.to_le_bytes());
        let (d, kb) = self.vq.map_or((0, 0), |(d, kb, _)| (d, kb));
        p.extend_from_slice(&[d, kb, self.residual.is_some() as u8]);
        if let Some((_, _, t)) = &self.vq {
            p.extend(t.to_bytes());
        }
        let mut r = self.r.clone();
        self.factor.store(&mut r, self.cols as usize, &mut p);
        if let Some(b) = &self.book {
            p.extend(b.to_bytes());
        }
        if let Some(c) = &self.residual {
            p.extend(super::inner_params(c));
        }
        p
    }
    fn spec(&self) -> String {
        let mut o = Vec::new();
        if self.energy > 0.0 {
            o.push(format!("energy={}", self.energy));
            if self.rank != 128 {
                o.push(format!("rank={}", self.rank));
            }
        } else {
            o.push(format!("rank={}", self.rank));
        }
        if self.factor != Factor::F16 {
            o.push(format!("factors={}", FACTORS[self.factor as usize]));
        }
        if !self.importance {
            o.push("importance=none".into());
        }
        if let Some((d, kb, t)) = &self.vq {
            o.push(super::vq::train_spec(*d, *kb, t));
        }
        if let Some(c) = &self.residual {
            if c.bits != 4 {
                o.push(format!("bits={}", c.bits));
            }
            if let Group::Elems(g) = c.group {
                o.push(format!("group={g}"));
            }
            if let Fit::Als(i) = c.fit {
                o.push("fit=als".into());
                if i != 4 {
                    o.push(format!("iters_als={i}"));
                }
            }
        }
        format!("{}:{}", self.name(), o.join(","))
    }
    fn max_encoded_len(&self, _src: DType, n: usize) -> usize {
        let [a, b, c] = self.chunk_stages(n);
        // Unbound (planning), the rank is at most the one asked for.
        let l = if self.bound {
            a
        } else {
            self.factor.bytes(self.rows(n).max(1), self.rank as usize)
        };
        l.saturating_add(b).saturating_add(c)
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        if !self.bound {
            return Err(Error::internal(format!(
                "{} learns its factors in the bind step first",
                self.name()
            )));
        }
        let mut v = Vec::new();
        crate::dtype::to_f32(src, bytes, &mut v);
        if v.len() % self.cols as usize != 0 {
            return Err(Error::bad_length(format!(
                "{}: a chunk of {} elements is not whole rows of {}",
                self.name(),
                v.len(),
                self.cols
            )));
        }
        let mut out = self.strip_lowrank(&mut v)?;
        if let Some(book) = &self.book {
            let idx = book.assign(&v);
            let mut c = vec![0f32; v.len()];
            book.expand(&idx, &mut c);
            v.iter_mut().zip(&c).for_each(|(x, y)| *x -= y);
            out.extend(super::kvq::pack(&idx, self.vq.expect("vq settings").1));
        }
        if let Some(c) = &self.residual {
            let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            out.extend(c.encode(DType::F32, &raw)?);
        }
        Ok(out)
    }
    fn decode(&self, payload: &[u8], _src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let name = self.name();
        super::expect_len(name, payload, self.max_encoded_len(DType::F32, n))?;
        if !n.is_multiple_of(self.cols.max(1) as usize) {
            return Err(Error::bad_length(format!(
                "{name}: a chunk of {n} elements is not whole rows of {}",
                self.cols
            )));
        }
        let [lb, ib, _] = self.chunk_stages(n);
        // The stages are added in the spec's order: L R, then the codebook entries, then the
        // residual (f32 additions in that order, as the encoder subtracted them).
        let mut v = vec![0f32; n];
        let rank = self.used_rank();
        if rank > 0 {
            let l = self.factor.load(&payload[..lb], rank)?;
            add_lr(&l, &self.r, rank, self.cols as usize, &mut v);
        }
        if let (Some(book), Some((d, kb, _))) = (&self.book, self.vq) {
            let stream = &payload[lb..lb + ib];
            let k = n.div_ceil(d as usize);
            super::check_pad_bits(stream, k as u64 * kb as u64, "codebook indices")?;
            let idx = super::kvq::unpack(stream, kb, k);
            book.add_to(&idx, &mut v);
        }
        match &self.residual {
            Some(c) => {
                c.decode(&payload[lb + ib..], DType::F32, n, out)?;
                for (o, x) in out.chunks_exact_mut(4).zip(&v) {
                    let r = f32::from_le_bytes(o[..4].try_into().expect("4 bytes"));
                    o.copy_from_slice(&(x + r).to_le_bytes());
                }
            }
            None => super::int::put_f32(&v, out),
        }
        Ok(())
    }
    fn stage_bytes(&self, chunks: &[u64]) -> Option<Vec<(&'static str, u64)>> {
        let mut t = [
            self.factor.bytes(self.used_rank(), self.cols as usize),
            self.book.as_ref().map_or(0, |b| b.entries.len() * 2),
            0,
        ];
        for &n in chunks {
            let c = self.chunk_stages(n as usize);
            t.iter_mut().zip(c).for_each(|(a, b)| *a += b);
        }
        let names = ["lowrank", "vq", "residual"];
        Some(
            names
                .iter()
                .zip(t)
                .filter(|(n, b)| *b > 0 || **n == "lowrank")
                .map(|(n, b)| (*n, b as u64))
                .collect(),
        )
    }
    fn bind(&self, t: &TensorFacts<'_>) -> Option<Arc<dyn TensorCodec>> {
        if self.bound {
            return None;
        }
        let cols = t.dims.last().copied().filter(|&c| c > 0).unwrap_or(1);
        let Some(a) = t.values else {
            return (self.cols != cols).then(|| {
                Arc::new(LowRankCodec {
                    cols,
                    ..self.clone()
                }) as Arc<dyn TensorCodec>
            });
        };
        let c = cols as usize;
        let rows = a.len() / c;
        let mut me = LowRankCodec {
            cols,
            bound: true,
            ..self.clone()
        };
        let want = (self.rank as usize).min(rows).min(c);
        me.rank = 0;
        me.energy = 0.0;
        if want > 0 {
            let s: Vec<f32> = if self.importance {
                let mut s = vec![0f64; c];
                for row in a.chunks_exact(c) {
                    s.iter_mut()
                        .zip(row)
                        .for_each(|(m, x)| *m += x.abs() as f64);
                }
                // Scaled to a mean of 1 and kept within 1e-3 of it, so that 1 / s stays in
                // the factor formats' range.
                let mean = s.iter().sum::<f64>() / c as f64;
                s.iter()
                    .map(|&m| {
                        if mean > 0.0 {
                            (m / mean).max(1e-3) as f32
                        } else {
                            1.0
                        }
                    })
                    .collect()
            } else {
                vec![1.0; c]
            };
            let aw: Vec<f32> = a.iter().enumerate().map(|(i, x)| x * s[i % c]).collect();
            let (sv, v) = top_singular(&aw, rows, c, want);
            // Components with no energy carry nothing (and would divide by zero below).
            let mut rank = sv.iter().take_while(|&&x| x > sv[0] * 1e-6).count();
            if self.energy > 0.0 {
                let total: f64 = aw.iter().map(|x| (*x as f64).powi(2)).sum();
                let mut acc = 0f64;
                rank = sv
                    .iter()
                    .position(|&x| {
                        acc += (x as f64).powi(2);
                        acc >= self.energy as f64 * total
                    })
                    .map_or(sv.len(), |i| i + 1)
                    .min(rank);
            }
            // The singular values split evenly between the factors (L = U sqrt(S),
            // R = sqrt(S) V^T diag(1/s)) so that both have the weights' square-root scale.
            let mut r = vec![0f32; rank * c];
            let mut p = vec![0f32; c * rank];
            for j in 0..c {
                for k in 0..rank {
                    let h = sv[k].sqrt();
                    r[k * c + j] = v[(j, k)] * h / s[j];
                    p[j * rank + k] = v[(j, k)] * s[j] / h;
                }
            }
            let mut stored = Vec::new();
            me.factor.store(&mut r, c, &mut stored);
            // What is stored: the rank picked (a file does not keep the rule that picked it).
            me.rank = rank as u16;
            me.energy = 0.0;
            me.r = r;
            me.proj = Some(Arc::new(p));
        }
        if let Some((d, kb, train)) = self.vq {
            // The codebook learns what the low-rank part leaves, row block by row block.
            let rows_per = (65536 / c).max(1);
            let res: Vec<f32> = a
                .par_chunks(rows_per * c)
                .map(|blk| {
                    let mut b = blk.to_vec();
                    me.strip_lowrank(&mut b).map(|_| b)
                })
                .collect::<Result<Vec<_>>>()
                .ok()?
                .concat();
            me.book = Some(Codebook::train(&res, d as usize, 1 << kb, train));
        }
        Some(Arc::new(me))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Pipeline;

    /// A low-rank matrix plus noise, with a few heavy columns.
    fn matrix(rows: usize, cols: usize) -> Vec<f32> {
        let mut s = crate::assign::Rng::new(5);
        let mut g = || ((s.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02;
        let u: Vec<f32> = (0..rows * 3).map(|_| g() * 20.0).collect();
        let v: Vec<f32> = (0..3 * cols).map(|_| g() * 20.0).collect();
        (0..rows * cols)
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                let lr: f32 = (0..3).map(|k| u[r * 3 + k] * v[k * cols + c]).sum();
                let heavy = if c % 17 == 0 { 4.0 } else { 1.0 };
                (lr + 0.05 * g()) * heavy
            })
            .collect()
    }

    fn run(spec: &str, dims: &[u64], x: &[f32]) -> (f32, usize, Pipeline) {
        let p = Pipeline::parse(spec).unwrap().bind_values(dims, x);
        assert_eq!(p.tensor_codec().props().binds, Binds::Nothing);
        let b: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let e = p.encode(DType::F32, &b).unwrap();
        let again = Pipeline::from_stages(&p.stages()).unwrap();
        let d = again.decode(&e, DType::F32, x.len(), u64::MAX).unwrap();
        let mse = x
            .iter()
            .zip(d.chunks_exact(4))
            .map(|(a, c)| (a - f32::from_le_bytes(c.try_into().unwrap())).powi(2))
            .sum::<f32>()
            / x.len() as f32;
        (mse, e.len(), p)
    }

    #[test]
    fn blocked_product_has_the_plain_loops_bits() {
        let (rank, cols, rows) = (7, 37, 5);
        let mut s = crate::assign::Rng::new(3);
        let mut g = || ((s.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0;
        let l: Vec<f32> = (0..rows * rank).map(|_| g()).collect();
        let r: Vec<f32> = (0..rank * cols).map(|_| g()).collect();
        let start: Vec<f32> = (0..rows * cols).map(|_| g()).collect();
        let mut plain = start.clone();
        for i in 0..rows {
            for t in 0..rank {
                for j in 0..cols {
                    plain[i * cols + j] += l[i * rank + t] * r[t * cols + j];
                }
            }
        }
        let mut fast = start.clone();
        add_lr(&l, &r, rank, cols, &mut fast);
        assert_eq!(
            plain.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            fast.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn lowrank_recovers_a_low_rank_matrix() {
        let x = matrix(96, 64);
        let var = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let (m3, len, _) = run("lowrank:rank=3", &[96, 64], &x);
        assert_eq!(len, 96 * 3 * 2);
        assert!(m3 < 0.01 * var, "{m3} vs {var}");
        let (me, _, p) = run("lowrank:energy=0.9,importance=none", &[96, 64], &x);
        assert!(me < 0.1 * var);
        let d = p.describe();
        let rank: usize = d["lowrank:rank=".len()..]
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=64).contains(&rank), "{}", p.describe());
        let (mi, leni, _) = run("lowrank:rank=3,factors=int8", &[96, 64], &x);
        assert_eq!(leni, 96 * (3 + 2));
        assert!(mi < 0.02 * var);
    }

    #[test]
    fn tenpakx_stages_add_up_and_beat_the_residual_alone() {
        let x = matrix(64, 128);
        let (mt, lt, p) = run("tenpakx:rank=4,k=16,iters=3", &[64, 128], &x);
        let c = p.tensor_codec();
        assert_eq!(c.name(), "tenpakx");
        let n = x.len();
        assert_eq!(
            lt,
            64 * 4 * 2 + (n / 4 * 4).div_ceil(8) + n / 2 + n / 32 * 4
        );
        let (mi, _, _) = run("int4_g32_asym", &[64, 128], &x);
        assert!(mt < mi, "tenpakx {mt} vs int4 {mi}");
        let (mp, _, pp) = run("pocketllm:k=16,iters=3", &[64, 128], &x);
        assert!(pp
            .describe()
            .starts_with("tenpakx:rank=0,d=4,k=16,iters=3,group=16,fit=als"));
        assert!(mp < mi);
    }

    #[test]
    fn same_bytes_whatever_the_thread_count() {
        let x = matrix(64, 128);
        let enc = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let (_, _, p) = run("tenpakx:rank=4,k=16,iters=3", &[64, 128], &x);
                    let b: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
                    (p.stages(), p.encode(DType::F32, &b).unwrap())
                })
        };
        let (s1, e1) = enc(1);
        let (s3, e3) = enc(3);
        assert_eq!(e1, e3);
        assert_eq!(s1[0].params, s3[0].params);
    }

    #[test]
    fn hostile_params_are_errors() {
        let x = matrix(32, 64);
        let (_, _, p) = run("tenpakx:rank=2,k=16,iters=1", &[32, 64], &x);
        let params = p.stages()[0].params.clone();
        for cut in [0, 5, 13, 20, params.len() - 1] {
            assert!(
                from_params(TENPAKX_ID, &params[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut bad = params.clone();
        bad[3..11].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(from_params(TENPAKX_ID, &bad).is_err());
        assert!(from_params(LOWRANK_ID, &params).is_err());
    }
}
