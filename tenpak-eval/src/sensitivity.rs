//! `tenpak sensitivity`: how much the output of a llama model feels an error in each of its
//! matrices. For each matrix, seeded Gaussian noise of a fixed relative size (per group of 32
//! along the row, scaled to the group's RMS, the way group-wise quantizers err) replaces the
//! matrix, the calibration windows run through the model from the first layer it acts in, and
//! the mean KL divergence from the exact model's next-token distribution is measured:
//! `alpha = KLD / (||dW||^2 / ||W||^2)` is the tensor's sensitivity in the linear model of
//! [`tenpak::allocate`]. With `--codecs`, each candidate's real error is injected the same way.
//!
//! The exact model's residual stream entering each layer is kept from one traced pass, so a
//! perturbed matrix of layer `k` costs only layers `k..` (half the model on average).

use crate::kernels::{kl_row, lse};
use crate::llama::{Llama, Trace};
use rayon::prelude::*;
use std::path::PathBuf;
use tenpak::allocate::{CodecSensitivity, Sensitivity, TensorSensitivity};
use tenpak::error::{Error, Result};
use tenpak::Context;

/// Default relative squared error of the injected noise: between what 4-bit (~1e-2) and
/// 6-bit (~5e-4) codecs leave, where the response is still quadratic.
pub const DEFAULT_NOISE: f64 = 2e-3;

/// What `sensitivity` asks for.
#[derive(Debug, Clone)]
pub struct SensitivityRequest {
    /// The model (GGUF or Hugging Face folder).
    pub model: PathBuf,
    /// Corpus text file.
    pub corpus: PathBuf,
    /// Calibration windows (after the evaluation slice).
    pub windows: usize,
    /// Tokens per window.
    pub ctx: usize,
    /// Relative squared error of the injected noise.
    pub noise: f64,
    /// Seed of the noise.
    pub seed: u64,
    /// Only matrices matching (as `compress --filter`).
    pub filter: Option<String>,
    /// Also inject these codecs' real errors.
    pub codecs: Vec<String>,
}

/// One batch of the exact model's run: its windows, the residual stream entering each layer,
/// the logits, and each scored position's NLL.
type RefBatch = (Vec<Vec<u32>>, Trace, Vec<f32>, Vec<f64>);

/// The exact model's run over the calibration windows.
struct Reference {
    batches: Vec<RefBatch>,
}

const BATCH: usize = 2;

/// Per-token NLL of a window's rows (row p predicts token p + 1).
fn nlls(logits: &[f32], win: &[u32], vocab: usize) -> Vec<f64> {
    (0..win.len() - 1)
        .into_par_iter()
        .map(|p| {
            let row = &logits[p * vocab..(p + 1) * vocab];
            lse(row) - row[win[p + 1] as usize] as f64
        })
        .collect()
}

/// Mean KLD and ΔNLL per token of a perturbed model against the reference.
fn response(m: &Llama, from: usize, r: &Reference, cx: &Context<'_>) -> Result<(f64, f64)> {
    let vocab = m.cfg.vocab;
    let (mut kl, mut dn, mut n) = (0f64, 0f64, 0usize);
    let mut logits = Vec::new();
    for (wins, trace, rl, rn) in &r.batches {
        cx.check_cancelled()?;
        let seqs: Vec<&[u32]> = wins.iter().map(|w| w.as_slice()).collect();
        if from == 0 {
            m.forward_many(&seqs, &mut logits, None)?;
        } else {
            m.forward_from(&seqs, trace, from, &mut logits)?;
        }
        let mut at = 0;
        let mut k = 0;
        for w in wins {
            let rows = w.len() - 1;
            let (kls, nl): (f64, Vec<f64>) = {
                let t = &logits[at * vocab..(at + w.len()) * vocab];
                let refl = &rl[at * vocab..(at + w.len()) * vocab];
                let kls: f64 = (0..rows)
                    .into_par_iter()
                    .map(|p| {
                        let a = &refl[p * vocab..(p + 1) * vocab];
                        let b = &t[p * vocab..(p + 1) * vocab];
                        kl_row(a, lse(a), b, lse(b)).max(0.0)
                    })
                    .sum();
                (kls, nlls(t, w, vocab))
            };
            kl += kls;
            dn += nl
                .iter()
                .zip(&rn[k..k + rows])
                .map(|(a, b)| a - b)
                .sum::<f64>();
            k += rows;
            n += rows;
            at += w.len();
        }
    }
    Ok((kl / n.max(1) as f64, dn / n.max(1) as f64))
}

/// Gaussian noise of relative squared error `rel` per group of 32 along each row, seeded.
fn noisy(w: &[f32], cols: usize, rel: f64, seed: u64) -> Vec<f32> {
    let mut s = tenpak::assign::Rng::new(seed);
    let mut normal = || {
        let u = ((s.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let v = ((s.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let mut out = w.to_vec();
    let eps = rel.sqrt();
    for row in out.chunks_mut(cols) {
        for g in row.chunks_mut(32) {
            let rms = (g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
            for x in g.iter_mut() {
                *x += (eps * rms * normal()) as f32;
            }
        }
    }
    out
}

fn rel_sq(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += ((x - y) as f64).powi(2);
        den += (x as f64).powi(2);
    }
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

/// `tenpak sensitivity`; `on_tensor(done, total, name)` reports progress.
pub fn sensitivity(
    req: &SensitivityRequest,
    on_tensor: &mut (dyn FnMut(usize, usize, &str) + Send),
    cx: &Context<'_>,
) -> Result<Sensitivity> {
    cx.install(|| run(req, on_tensor, cx))
}

fn run(
    req: &SensitivityRequest,
    on_tensor: &mut (dyn FnMut(usize, usize, &str) + Send),
    cx: &Context<'_>,
) -> Result<Sensitivity> {
    if !(req.noise > 0.0 && req.noise < 1.0) {
        return Err(Error::config(format!(
            "--noise {}: a relative squared error between 0 and 1",
            req.noise
        )));
    }
    let start = std::time::Instant::now();
    let file = crate::model::ModelFile::open(&req.model, None)?;
    crate::model::precheck(&file.meta, "sensitivity").map_err(|e| e.with_file(&req.model))?;
    let loaded = file.load()?;
    let desc = loaded.description.clone();
    let arch = loaded
        .meta
        .architecture()
        .map_err(|e| e.with_file(&req.model))?;
    let source = tenpak::input::open(&req.model)?;
    let mut s = match arch.as_str() {
        "llama" => run_llama(req, loaded, &*source, on_tensor, cx)?,
        "bert" => run_bert(req, loaded, &*source, on_tensor, cx)?,
        a => {
            return Err(Error::new(
                tenpak::ErrorKind::Unsupported,
                format!("architecture '{a}': sensitivity runs llama and bert models"),
            )
            .with_file(&req.model))
        }
    };
    s.model = desc;
    s.seconds = start.elapsed().as_secs_f64();
    Ok(s)
}

/// What one perturbed model gives: the divergence and, for causal LMs, ΔNLL.
type Respond<'a> = dyn FnMut(&str, usize, Vec<f32>) -> Result<(f64, Option<f64>)> + 'a;

/// Perturb every matrix (noise, then each codec) and measure through `respond`.
fn measure_all(
    req: &SensitivityRequest,
    matrices: &[(usize, (String, usize))],
    source: &dyn tenpak::input::TensorSource,
    on_tensor: &mut (dyn FnMut(usize, usize, &str) + Send),
    respond: &mut Respond<'_>,
    cx: &Context<'_>,
) -> Result<Vec<TensorSensitivity>> {
    if matrices.is_empty() {
        return Err(Error::input("no matrix of the model matches the filter").with_file(&req.model));
    }
    let pipelines = req
        .codecs
        .iter()
        .map(|c| tenpak::codec::Pipeline::parse(c))
        .collect::<Result<Vec<_>>>()?;
    let infos = source.tensors();
    let mut out = Vec::with_capacity(matrices.len());
    for (done, (k, (name, from))) in matrices.iter().enumerate() {
        on_tensor(done, matrices.len(), name);
        cx.check_cancelled()?;
        let i = infos
            .iter()
            .position(|t| &t.name == name)
            .ok_or_else(|| Error::input("the model file has no such tensor").with_tensor(name))?;
        let info = &infos[i];
        let data = source.data(i)?;
        let mut w = Vec::new();
        tenpak::dtype::to_f32(info.dtype, &data, &mut w);
        let cols = info.dims.last().copied().unwrap_or(1).max(1) as usize;
        let seed = req.seed ^ (*k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let wn = noisy(&w, cols, req.noise, seed);
        let rel = rel_sq(&w, &wn);
        let (kld, delta_nll) = respond(name, *from, wn).map_err(|e| e.with_tensor(name))?;
        let mut codecs = Vec::new();
        for (spec, p) in req.codecs.iter().zip(&pipelines) {
            let f32_info = tenpak::input::TensorInfo {
                dtype: tenpak::dtype::DType::F32,
                ..info.clone()
            };
            let (pl, layout) = tenpak::plan::tensor_plan(p, &f32_info, &Default::default());
            let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            let (_, rec) = tenpak::encode::reconstruct(
                &f32_info,
                &bytes,
                &pl,
                layout,
                tenpak::compress::DEFAULT_CHUNK_ELEMS,
                cx,
            )
            .map_err(|e| e.with_tensor(name))?;
            let rel = rel_sq(&w, &rec);
            let (kld, delta_nll) = respond(name, *from, rec).map_err(|e| e.with_tensor(name))?;
            codecs.push(CodecSensitivity {
                codec: spec.clone(),
                rel_sq: rel,
                kld,
                delta_nll,
            });
        }
        out.push(TensorSensitivity {
            name: name.clone(),
            numel: w.len() as u64,
            alpha: if rel > 0.0 { kld / rel } else { 0.0 },
            rel_sq: rel,
            kld,
            delta_nll,
            codecs,
        });
    }
    on_tensor(matrices.len(), matrices.len(), "");
    Ok(out)
}

/// Number matrices in the model's order before filtering, so that a matrix gets the same noise
/// whatever the filter.
fn select(all: Vec<(String, usize)>, filter: Option<&str>) -> Vec<(usize, (String, usize))> {
    all.into_iter()
        .enumerate()
        .filter(|(_, (n, _))| filter.is_none_or(|f| tenpak::input::name_matches(n, f)))
        .collect()
}

fn run_llama(
    req: &SensitivityRequest,
    loaded: crate::model::Model,
    source: &dyn tenpak::input::TensorSource,
    on_tensor: &mut (dyn FnMut(usize, usize, &str) + Send),
    cx: &Context<'_>,
) -> Result<Sensitivity> {
    let (model, windows, slice) =
        crate::calibrate::llama_calibration(loaded, &req.model, &req.corpus, req.windows, req.ctx)?;
    let vocab = model.cfg.vocab;
    let mut reference = Reference {
        batches: Vec::new(),
    };
    let (mut nll_sum, mut nll_n) = (0f64, 0usize);
    for pair in windows.chunks(BATCH) {
        cx.check_cancelled()?;
        let seqs: Vec<&[u32]> = pair.iter().map(|w| w.as_slice()).collect();
        let mut logits = Vec::new();
        let trace = model.forward_traced(&seqs, &mut logits)?;
        let mut rn = Vec::new();
        let mut at = 0;
        for w in pair {
            rn.extend(nlls(&logits[at * vocab..(at + w.len()) * vocab], w, vocab));
            at += w.len();
        }
        nll_sum += rn.iter().sum::<f64>();
        nll_n += rn.len();
        reference.batches.push((pair.to_vec(), trace, logits, rn));
    }
    let matrices = select(model.matrices(), req.filter.as_deref());
    let tensors = measure_all(
        req,
        &matrices,
        source,
        on_tensor,
        &mut |name, from, values| {
            let m = model.with_matrix(name, values)?;
            let (k, d) = response(&m, from, &reference, cx)?;
            Ok((k, Some(d)))
        },
        cx,
    )?;
    Ok(Sensitivity {
        format: 1,
        model: String::new(),
        slice,
        measure: "kld".into(),
        method: format!(
            "seeded Gaussian noise of relative squared error {} per group of 32 along each row, one matrix at a time; alpha = mean KLD per token / relative squared error",
            req.noise
        ),
        seed: req.seed,
        reference_nll: nll_sum / nll_n.max(1) as f64,
        seconds: 0.0,
        tensors,
    })
}

fn run_bert(
    req: &SensitivityRequest,
    loaded: crate::model::Model,
    source: &dyn tenpak::input::TensorSource,
    on_tensor: &mut (dyn FnMut(usize, usize, &str) + Send),
    cx: &Context<'_>,
) -> Result<Sensitivity> {
    let model = crate::bert::Bert::new(loaded, req.ctx).map_err(|e| e.with_file(&req.model))?;
    let (sentences, slice) =
        crate::calibrate::calibration_sentences(&model, &req.corpus, req.windows)?;
    let embed = |m: &crate::bert::Bert| -> Result<Vec<Vec<f32>>> {
        sentences.par_iter().map(|ids| m.embed_ids(ids)).collect()
    };
    let reference = embed(&model)?;
    let all: Vec<(String, usize)> = model.matrices().into_iter().map(|n| (n, 0)).collect();
    let matrices = select(all, req.filter.as_deref());
    let tensors = measure_all(
        req,
        &matrices,
        source,
        on_tensor,
        &mut |name, _, values| {
            cx.check_cancelled()?;
            let m = model.with_matrix(name, values)?;
            let got = embed(&m)?;
            let drift = got
                .iter()
                .zip(&reference)
                .map(|(a, b)| 1.0 - a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>())
                .sum::<f64>()
                / got.len().max(1) as f64;
            Ok((drift, None))
        },
        cx,
    )?;
    Ok(Sensitivity {
        format: 1,
        model: String::new(),
        slice,
        measure: "embedding_drift".into(),
        method: format!(
            "seeded Gaussian noise of relative squared error {} per group of 32 along each row, one matrix at a time; alpha = mean (1 - cosine) of the sentence embeddings / relative squared error",
            req.noise
        ),
        seed: req.seed,
        reference_nll: 0.0,
        seconds: 0.0,
        tensors,
    })
}
