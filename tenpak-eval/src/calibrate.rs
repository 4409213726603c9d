//! `tenpak calibrate`: run calibration text through a llama model and keep, for every input of a
//! matrix product, the mean square of each channel and (by default) the whole second moment
//! (the file of [`tenpak::calib`]).
//!
//! The calibration text is never the evaluation text: windows are cut from the corpus tokens
//! after the evaluation slice (the first 64 x 511 tokens, formats-spec/eval.md), so calibrated
//! figures measured on that slice are not fitted to it.

use crate::llama::{Llama, Site};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tenpak::calib::{CalibInfo, InputStats, TokenSlice};
use tenpak::error::{Error, Result};
use tenpak::Context;

/// Corpus tokens the evaluation windows cover (64 windows of 511, formats-spec/eval.md):
/// calibration starts after them.
pub const EVAL_SLICE_TOKENS: usize = 64 * 511;

/// Calibration windows: `[bos] + ctx - 1` corpus tokens each, starting at
/// [`EVAL_SLICE_TOKENS`]. Returns the windows and the slice's description.
pub fn calibration_windows(
    ids: &[u32],
    bos: u32,
    windows: usize,
    ctx: usize,
    corpus: &Path,
) -> Result<(Vec<Vec<u32>>, TokenSlice)> {
    if ctx < 2 || windows == 0 {
        return Err(Error::config(
            "calibration needs at least one window of two tokens",
        ));
    }
    let step = ctx - 1;
    let first = EVAL_SLICE_TOKENS;
    let have = ids.len().saturating_sub(first) / step;
    if windows > have {
        return Err(Error::config(format!(
            "{windows} calibration windows of {ctx} tokens need {} corpus tokens after the \
             {first} of the evaluation slice; the corpus has {} ({have} windows)",
            windows * step,
            ids.len()
        )));
    }
    let slice = &ids[first..first + windows * step];
    let w = slice
        .chunks_exact(step)
        .map(|c| {
            let mut v = Vec::with_capacity(ctx);
            v.push(bos);
            v.extend_from_slice(c);
            v
        })
        .collect();
    Ok((
        w,
        TokenSlice {
            corpus: corpus
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            unit: "tokens".into(),
            first_token: first as u64,
            windows: windows as u64,
            ctx: ctx as u64,
            sha256: crate::tokens_sha256(slice),
            disjoint_from: format!(
                "the evaluation windows (corpus tokens 0..{first}, 64 windows of 511)"
            ),
        },
    ))
}

/// A loaded llama model with its calibration windows (the corpus tokenized by its own
/// tokenizer; [`calibration_windows`]). `path` names the model in errors.
pub fn llama_calibration(
    loaded: crate::model::Model,
    path: &Path,
    corpus: &Path,
    windows: usize,
    ctx: usize,
) -> Result<(Llama, Vec<Vec<u32>>, TokenSlice)> {
    let tok =
        crate::tokenizer::TextTokenizer::from_meta(&loaded.meta).map_err(|e| e.with_file(path))?;
    let model = Llama::new(loaded).map_err(|e| e.with_file(path))?;
    let ids = tok.encode(&crate::read_corpus(corpus)?)?;
    let (w, slice) = calibration_windows(&ids, model.cfg.bos, windows, ctx, corpus)?;
    Ok((model, w, slice))
}

/// Sentences `eval embed` reads by default (the first of the corpus): encoder calibration
/// starts after them.
pub const EVAL_EMBED_SENTENCES: usize = 2000;

/// Calibration sentences for an encoder: word-piece ids of `n` corpus sentences after the
/// first [`EVAL_EMBED_SENTENCES`], with the slice's description.
pub fn calibration_sentences(
    model: &crate::bert::Bert,
    corpus: &Path,
    n: usize,
) -> Result<(Vec<Vec<u32>>, TokenSlice)> {
    let text = crate::read_corpus(corpus)?;
    let all = crate::embed::sentences(&text);
    let first = EVAL_EMBED_SENTENCES;
    let have = all.len().saturating_sub(first);
    if n == 0 || n > have {
        return Err(Error::config(format!(
            "{n} calibration sentences after the {first} of the evaluation: the corpus has {have}"
        )));
    }
    let ids = all[first..first + n]
        .iter()
        .map(|s| model.tokenize(s))
        .collect::<Result<Vec<_>>>()?;
    let flat: Vec<u32> = ids.concat();
    Ok((
        ids,
        TokenSlice {
            corpus: corpus
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            unit: "sentences".into(),
            first_token: first as u64,
            windows: n as u64,
            ctx: model.cfg.max_positions.min(256) as u64,
            sha256: crate::tokens_sha256(&flat),
            disjoint_from: format!(
                "the embedding evaluation's sentences (corpus sentences 0..{first})"
            ),
        },
    ))
}

/// What `calibrate` asks for.
#[derive(Debug, Clone)]
pub struct CalibrateRequest {
    /// The model.
    pub model: PathBuf,
    /// Corpus text file.
    pub corpus: PathBuf,
    /// Calibration windows.
    pub windows: usize,
    /// Tokens per window.
    pub ctx: usize,
    /// Keep the second moments (GPTQ needs them).
    pub hessian: bool,
    /// Output file.
    pub output: PathBuf,
    /// Replace an existing output.
    pub force: bool,
}

/// What `calibrate` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrateReport {
    /// The output file.
    pub output: PathBuf,
    /// Its size.
    pub file_bytes: u64,
    /// Provenance as stored.
    pub info: CalibInfo,
    /// Distinct inputs measured.
    pub inputs: usize,
    /// Seconds of the forward passes and accumulation.
    pub seconds: f64,
}

/// Running sums of one input.
struct Acc {
    cols: usize,
    sq: Vec<f64>,
    xtx: Option<Vec<f64>>,
    rows: u64,
    scratch: Vec<f32>,
}

impl Acc {
    fn add(&mut self, x: &[f32]) {
        let c = self.cols;
        let n = x.len() / c;
        for row in x.chunks_exact(c) {
            for (s, &v) in self.sq.iter_mut().zip(row) {
                *s += (v as f64) * (v as f64);
            }
        }
        self.rows += n as u64;
        if let Some(h) = self.xtx.as_mut() {
            // X^T X of this batch in f32 by the matrix kernel, summed into f64 totals.
            self.scratch.resize(c * c, 0.0);
            // SAFETY: x is [n, c] row-major, read transposed as [c, n]; scratch is [c, c].
            unsafe {
                gemm::gemm(
                    c,
                    c,
                    n,
                    self.scratch.as_mut_ptr(),
                    1,
                    c as isize,
                    false,
                    x.as_ptr(),
                    c as isize,
                    1,
                    x.as_ptr(),
                    1,
                    c as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(rayon::current_num_threads()),
                );
            }
            for (t, &v) in h.iter_mut().zip(&self.scratch) {
                *t += v as f64;
            }
        }
    }
}

/// Windows per forward pass (as `eval ppl`).
const BATCH: usize = 2;

fn new_acc(cols: usize, hessian: bool) -> Acc {
    Acc {
        cols,
        sq: vec![0.0; cols],
        xtx: hessian.then(|| vec![0.0; cols * cols]),
        rows: 0,
        scratch: Vec::new(),
    }
}

/// Statistics of each accumulated input, keyed by its first reader.
fn finish(
    accs: &[Acc],
    readers: impl Fn(usize) -> Vec<String>,
) -> (
    Vec<InputStats>,
    std::collections::BTreeMap<String, String>,
    u64,
) {
    let mut inputs = std::collections::BTreeMap::new();
    let mut stats = Vec::with_capacity(accs.len());
    let mut rows = 0;
    for (k, a) in accs.iter().enumerate() {
        let readers = readers(k);
        let Some(key) = readers.first().cloned() else {
            continue;
        };
        for r in readers {
            inputs.insert(r, key.clone());
        }
        let n = a.rows.max(1) as f64;
        rows = rows.max(a.rows);
        stats.push(InputStats {
            key,
            importance: a.sq.iter().map(|&v| (v / n) as f32).collect(),
            hessian: a
                .xtx
                .as_ref()
                .map(|h| h.iter().map(|&v| (v / n) as f32).collect()),
        });
    }
    (stats, inputs, rows)
}

/// [`collect`] for a BERT encoder over word-piece sequences (one sentence at a time).
pub fn collect_bert(
    model: &crate::bert::Bert,
    sentences: &[Vec<u32>],
    hessian: bool,
    on_window: &mut (dyn FnMut(usize) + Send),
    cx: &Context<'_>,
) -> Result<(
    Vec<InputStats>,
    std::collections::BTreeMap<String, String>,
    u64,
)> {
    let c = &model.cfg;
    let sites = [Site::Attn, Site::AttnOut, Site::Ffn, Site::Down];
    let width = |s: Site| {
        if s == Site::Down {
            c.intermediate
        } else {
            c.hidden
        }
    };
    let mut accs: Vec<Acc> = (0..c.n_layer)
        .flat_map(|_| sites)
        .map(|s| new_acc(width(s), hessian))
        .collect();
    for (done, ids) in sentences.iter().enumerate() {
        cx.check_cancelled()?;
        model.embed_ids_probed(ids, &mut |li, s, x| {
            let k = li * 4 + sites.iter().position(|&t| t == s).unwrap_or(0);
            accs[k].add(x);
            Ok(())
        })?;
        on_window(done + 1);
    }
    Ok(finish(&accs, |k| model.readers(k / 4, sites[k % 4])))
}

/// Run the calibration windows through `model` and return each input's statistics, keyed by
/// the first weight reading it, with the weight -> key map.
pub fn collect(
    model: &Llama,
    windows: &[Vec<u32>],
    hessian: bool,
    on_window: &mut (dyn FnMut(usize) + Send),
    cx: &Context<'_>,
) -> Result<(
    Vec<InputStats>,
    std::collections::BTreeMap<String, String>,
    u64,
)> {
    let c = &model.cfg;
    let sites = [Site::Attn, Site::AttnOut, Site::Ffn, Site::Down];
    let width = |s: Site| if s == Site::Down { c.n_ff } else { c.n_embd };
    let mut accs: Vec<Acc> = (0..c.n_layer)
        .flat_map(|_| sites)
        .chain([Site::Head])
        .map(|s| new_acc(width(s), hessian))
        .collect();
    let slot = |li: usize, s: Site| -> usize {
        match s {
            Site::Head => c.n_layer * 4,
            s => li * 4 + sites.iter().position(|&t| t == s).expect("a layer site"),
        }
    };
    let mut done = 0;
    for pair in windows.chunks(BATCH) {
        cx.check_cancelled()?;
        let seqs: Vec<&[u32]> = pair.iter().map(|w| w.as_slice()).collect();
        model.forward_probed(&seqs, None, &mut |li, s, x| {
            accs[slot(li, s)].add(x);
            Ok(())
        })?;
        done += pair.len();
        on_window(done);
    }
    Ok(finish(&accs, |k| {
        if k == c.n_layer * 4 {
            model.readers(c.n_layer, Site::Head)
        } else {
            model.readers(k / 4, sites[k % 4])
        }
    }))
}

/// `tenpak calibrate`.
pub fn calibrate(
    req: &CalibrateRequest,
    on_window: &mut (dyn FnMut(usize) + Send),
    cx: &Context<'_>,
) -> Result<CalibrateReport> {
    if req.output.exists() && !req.force {
        return Err(
            Error::config("the output exists (use --force to replace it)").with_file(&req.output),
        );
    }
    cx.install(|| {
        let file = crate::model::ModelFile::open(&req.model, None)?;
        crate::model::precheck(&file.meta, "calibrate").map_err(|e| e.with_file(&req.model))?;
        let loaded = file.load()?;
        let desc = loaded.description.clone();
        let arch = loaded
            .meta
            .architecture()
            .map_err(|e| e.with_file(&req.model))?;
        let start = std::time::Instant::now();
        let (slice, (stats, inputs, rows)) = match arch.as_str() {
            "llama" => {
                let (model, windows, slice) =
                    llama_calibration(loaded, &req.model, &req.corpus, req.windows, req.ctx)?;
                (
                    slice,
                    collect(&model, &windows, req.hessian, on_window, cx)?,
                )
            }
            "bert" => {
                let model =
                    crate::bert::Bert::new(loaded, req.ctx).map_err(|e| e.with_file(&req.model))?;
                let (sentences, slice) = calibration_sentences(&model, &req.corpus, req.windows)?;
                (
                    slice,
                    collect_bert(&model, &sentences, req.hessian, on_window, cx)?,
                )
            }
            a => {
                return Err(Error::new(
                    tenpak::ErrorKind::Unsupported,
                    format!("architecture '{a}': calibrate runs llama and bert models"),
                )
                .with_file(&req.model))
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        let info = CalibInfo {
            format: 1,
            model: desc,
            slice,
            rows,
            inputs,
            hessian: req.hessian,
        };
        tenpak::calib::write(&req.output, &info, &stats, req.force)?;
        Ok(CalibrateReport {
            output: req.output.clone(),
            file_bytes: std::fs::metadata(&req.output).map(|m| m.len()).unwrap_or(0),
            inputs: stats.len(),
            info,
            seconds,
        })
    })
}
