//! Perplexity, KL divergence and top-1 agreement by the procedure of `formats-spec/eval.md`:
//! non-overlapping windows of `[BOS]` + (ctx - 1) corpus tokens, a fresh cache per window,
//! log-softmax in f64 over the whole vocabulary.

use crate::llama::Llama;
use rayon::prelude::*;
use serde::Serialize;
use tenpak::error::{Error, Result};
use tenpak::Context;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct PplOptions {
    /// Window length, BOS included.
    pub ctx: usize,
    /// Windows to evaluate (taken from the start of the corpus).
    pub windows: usize,
    /// Windows, from the first, that KLD and top-1 agreement cover.
    pub kld_windows: usize,
}

impl Default for PplOptions {
    fn default() -> Self {
        PplOptions {
            ctx: 512,
            windows: 64,
            kld_windows: 32,
        }
    }
}

/// Per-window figures of one model.
#[derive(Debug, Clone, Serialize)]
pub struct WindowNll {
    /// Sum of NLL over every scored token.
    pub sum: f64,
    /// Tokens scored.
    pub n: usize,
    /// Sum over the second half (window positions ctx/2 .. ctx-1).
    pub sum_second: f64,
    /// Tokens in the second half.
    pub n_second: usize,
}

/// Perplexity of one model.
#[derive(Debug, Clone, Serialize)]
pub struct Perplexity {
    /// exp(mean NLL) over every scored token.
    pub ppl: f64,
    /// exp(mean NLL) over the second half of each window.
    pub ppl_second_half: f64,
    /// Mean NLL in nats.
    pub mean_nll: f64,
    /// Tokens scored.
    pub tokens: usize,
}

/// A model against its reference, paired window by window.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The reference's perplexity.
    pub reference_perplexity: Perplexity,
    /// PPL(model) / PPL(reference) - 1, in percent.
    pub delta_ppl_pct: f64,
    /// Its standard error from the per-window paired NLL differences, in percent.
    pub delta_ppl_se_pct: f64,
    /// Mean NLL difference (nats) and its paired standard error.
    pub delta_nll: f64,
    /// Standard error of `delta_nll`.
    pub delta_nll_se: f64,
    /// Mean KL(P_ref || P_model) per token, over the KLD windows.
    pub kld: f64,
    /// Share of KLD-window positions whose arg-max token agrees, in percent.
    pub top1_agree_pct: f64,
    /// Tokens that KLD and top-1 cover.
    pub kld_tokens: usize,
}

/// Everything one evaluation measured.
#[derive(Debug, Clone, Serialize)]
pub struct PplReport {
    /// The model.
    pub perplexity: Perplexity,
    /// Against the reference, when one was given.
    pub comparison: Option<Comparison>,
    /// Windows evaluated.
    pub windows: usize,
    /// Window length.
    pub ctx: usize,
    /// Wall-clock seconds of the forward passes and scoring.
    pub seconds: f64,
    /// Tokens per second through the model (reference passes counted too).
    pub tokens_per_s: f64,
    /// Per-window NLL of the model.
    pub per_window: Vec<WindowNll>,
}

/// The evaluation windows: `[bos] + tokens[w*(ctx-1) .. (w+1)*(ctx-1)]`.
pub fn windows(tokens: &[u32], bos: u32, opts: &PplOptions) -> Result<Vec<Vec<u32>>> {
    if opts.ctx < 2 {
        return Err(Error::config("--ctx must be at least 2"));
    }
    let step = opts.ctx - 1;
    let have = tokens.len() / step;
    if opts.windows == 0 || opts.windows > have {
        return Err(Error::config(format!(
            "{} windows of {} tokens need {} corpus tokens; the corpus has {} ({have} windows)",
            opts.windows,
            opts.ctx,
            opts.windows * step,
            tokens.len()
        )));
    }
    Ok((0..opts.windows)
        .map(|w| {
            let mut v = Vec::with_capacity(opts.ctx);
            v.push(bos);
            v.extend_from_slice(&tokens[w * step..(w + 1) * step]);
            v
        })
        .collect())
}

use crate::kernels::{kl_row, lse};

/// Index of the largest logit (the first, on ties).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// NLL of each next token: row p of `logits` predicts `window[p + 1]`.
fn nll_rows(logits: &[f32], window: &[u32], vocab: usize) -> Vec<f64> {
    (0..window.len() - 1)
        .into_par_iter()
        .map(|p| {
            let row = &logits[p * vocab..(p + 1) * vocab];
            lse(row) - row[window[p + 1] as usize] as f64
        })
        .collect()
}

/// KL(P_ref || P_test) and whether the arg-max agrees, for every scored row.
fn kld_rows(reference: &[f32], test: &[f32], rows: usize, vocab: usize) -> Vec<(f64, bool)> {
    (0..rows)
        .into_par_iter()
        .map(|p| {
            let r = &reference[p * vocab..(p + 1) * vocab];
            let t = &test[p * vocab..(p + 1) * vocab];
            let kl = kl_row(r, lse(r), t, lse(t));
            (kl.max(0.0), argmax(r) == argmax(t))
        })
        .collect()
}

fn window_nll(nll: &[f64], ctx: usize) -> WindowNll {
    // Row p predicts window position p + 1; the second half is positions ctx/2 .. ctx-1.
    let half = ctx / 2;
    let second: Vec<f64> = nll.iter().skip(half - 1).copied().collect();
    WindowNll {
        sum: nll.iter().sum(),
        n: nll.len(),
        sum_second: second.iter().sum(),
        n_second: second.len(),
    }
}

fn perplexity(w: &[WindowNll]) -> Perplexity {
    let (s, n): (f64, usize) = w.iter().fold((0.0, 0), |a, x| (a.0 + x.sum, a.1 + x.n));
    let (s2, n2): (f64, usize) = w
        .iter()
        .fold((0.0, 0), |a, x| (a.0 + x.sum_second, a.1 + x.n_second));
    Perplexity {
        ppl: (s / n as f64).exp(),
        ppl_second_half: (s2 / n2 as f64).exp(),
        mean_nll: s / n as f64,
        tokens: n,
    }
}

/// Mean and standard error of the per-window paired differences of mean NLL.
fn paired(model: &[WindowNll], reference: &[WindowNll]) -> (f64, f64) {
    let d: Vec<f64> = model
        .iter()
        .zip(reference)
        .map(|(m, r)| m.sum / m.n as f64 - r.sum / r.n as f64)
        .collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    if d.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// Windows per forward pass: their rows share the dense products, so each weight matrix is
/// packed for the matrix kernel once per two windows (measured 3-5 % faster than one; four
/// were no faster than two). The logits of two windows take 200 MB.
const BATCH: usize = 2;

/// Progress of an evaluation: windows done and tokens run through a model so far.
pub type OnWindow<'a> = &'a mut (dyn FnMut(usize, usize) + Send);

/// Cached figures of a reference model, reusable across many compared models (`eval sweep`).
pub struct ReferenceRun {
    /// Per-window NLL.
    pub per_window: Vec<WindowNll>,
    /// Logits of the KLD windows (one `Vec` per window).
    pub kld_logits: Vec<Vec<f32>>,
}

/// Run the reference once and keep what comparisons need.
pub fn reference_run(
    reference: &Llama,
    windows: &[Vec<u32>],
    opts: &PplOptions,
    on_window: OnWindow,
    cx: &Context<'_>,
) -> Result<ReferenceRun> {
    let vocab = reference.cfg.vocab;
    let mut per_window = Vec::with_capacity(windows.len());
    let mut kld_logits = Vec::new();
    let mut logits = Vec::new();
    let mut done = 0;
    for pair in windows.chunks(BATCH) {
        cx.check_cancelled()?;
        let seqs: Vec<&[u32]> = pair.iter().map(|w| w.as_slice()).collect();
        reference.forward_many(&seqs, &mut logits, None)?;
        let mut at = 0;
        for win in pair {
            let l = &logits[at * vocab..(at + win.len()) * vocab];
            at += win.len();
            per_window.push(window_nll(&nll_rows(l, win, vocab), opts.ctx));
            if done < opts.kld_windows {
                kld_logits.push(l.to_vec());
            }
            done += 1;
            on_window(done, win.len());
        }
    }
    Ok(ReferenceRun {
        per_window,
        kld_logits,
    })
}

/// The reference's own perplexity from its cached run.
pub fn evaluate_cached_self(run: &ReferenceRun) -> Perplexity {
    perplexity(&run.per_window)
}

/// Evaluate `model` on `windows`; with a reference, also paired ΔPPL, KLD and top-1. The
/// reference is either run alongside window by window or given as a cached [`ReferenceRun`].
pub fn evaluate(
    model: &Llama,
    reference: Option<RefSource>,
    windows: &[Vec<u32>],
    opts: &PplOptions,
    on_window: OnWindow,
    cx: &Context<'_>,
) -> Result<PplReport> {
    let vocab = model.cfg.vocab;
    let ref_vocab = match &reference {
        Some(RefSource::Model(r)) => Some(r.cfg.vocab),
        Some(RefSource::Cached(run)) => run
            .kld_logits
            .first()
            .zip(windows.first())
            .map(|(l, w)| l.len() / w.len().max(1)),
        None => None,
    };
    if let Some(rv) = ref_vocab.filter(|&rv| rv != vocab) {
        return Err(Error::input(format!(
            "the reference has a {rv}-token vocabulary, the model {vocab}"
        )));
    }
    let start = std::time::Instant::now();
    let mut per_window = Vec::with_capacity(windows.len());
    let mut ref_windows = Vec::new();
    let (mut kl_sum, mut agree, mut kl_n) = (0.0, 0usize, 0usize);
    let mut tokens_run = 0usize;
    let (mut logits, mut rl) = (Vec::new(), Vec::new());
    let mut w = 0;
    for batch in windows.chunks(BATCH) {
        cx.check_cancelled()?;
        let seqs: Vec<&[u32]> = batch.iter().map(|w| w.as_slice()).collect();
        model.forward_many(&seqs, &mut logits, None)?;
        tokens_run += seqs.iter().map(|s| s.len()).sum::<usize>();
        if let Some(RefSource::Model(r)) = &reference {
            r.forward_many(&seqs, &mut rl, None)?;
            tokens_run += seqs.iter().map(|s| s.len()).sum::<usize>();
        }
        let mut at = 0;
        for win in batch {
            let n = win.len();
            let ml = &logits[at * vocab..(at + n) * vocab];
            per_window.push(window_nll(&nll_rows(ml, win, vocab), opts.ctx));
            let rows = n - 1;
            match &reference {
                None => {}
                Some(RefSource::Model(_)) => {
                    let r = &rl[at * vocab..(at + n) * vocab];
                    ref_windows.push(window_nll(&nll_rows(r, win, vocab), opts.ctx));
                    if w < opts.kld_windows {
                        for (k, a) in kld_rows(r, ml, rows, vocab) {
                            kl_sum += k;
                            agree += a as usize;
                            kl_n += 1;
                        }
                    }
                }
                Some(RefSource::Cached(run))
                    if w < run.kld_logits.len() && w < opts.kld_windows =>
                {
                    for (k, a) in kld_rows(&run.kld_logits[w], ml, rows, vocab) {
                        kl_sum += k;
                        agree += a as usize;
                        kl_n += 1;
                    }
                }
                Some(RefSource::Cached(_)) => {}
            }
            at += n;
            w += 1;
            on_window(w, tokens_run);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let ref_per_window = match &reference {
        None => None,
        Some(RefSource::Model(_)) => Some(ref_windows.as_slice()),
        Some(RefSource::Cached(run)) => {
            if run.per_window.len() < windows.len() {
                return Err(Error::config(
                    "the cached reference covers fewer windows than asked for",
                ));
            }
            Some(&run.per_window[..windows.len()])
        }
    };
    let comparison = ref_per_window.map(|rw| {
        let rp = perplexity(rw);
        let mp = perplexity(&per_window);
        let (d, se) = paired(&per_window, rw);
        let ratio = (mp.mean_nll - rp.mean_nll).exp();
        Comparison {
            reference_perplexity: rp,
            delta_ppl_pct: (ratio - 1.0) * 100.0,
            delta_ppl_se_pct: ratio * se * 100.0,
            delta_nll: d,
            delta_nll_se: se,
            kld: if kl_n > 0 {
                kl_sum / kl_n as f64
            } else {
                f64::NAN
            },
            top1_agree_pct: if kl_n > 0 {
                100.0 * agree as f64 / kl_n as f64
            } else {
                f64::NAN
            },
            kld_tokens: kl_n,
        }
    });
    Ok(PplReport {
        perplexity: perplexity(&per_window),
        comparison,
        windows: windows.len(),
        ctx: opts.ctx,
        seconds,
        tokens_per_s: tokens_run as f64 / seconds.max(1e-9),
        per_window,
    })
}

/// The reference an evaluation compares against.
pub enum RefSource<'a> {
    /// Run it alongside.
    Model(&'a Llama),
    /// Figures from an earlier [`reference_run`].
    Cached(&'a ReferenceRun),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lse_and_kl_by_hand() {
        let row = [0.0f32, (2.0f32).ln()];
        assert!((lse(&row) - 3f64.ln()).abs() < 1e-6);
        // Same distribution: KL 0, agreement.
        let k = kld_rows(&row, &row, 1, 2);
        assert!(k[0].0.abs() < 1e-12 && k[0].1);
        // P = (1/3, 2/3), Q = (1/2, 1/2): KL = 1/3 ln(2/3) + 2/3 ln(4/3).
        let k = kld_rows(&row, &[0.0, 0.0], 1, 2);
        let want = (1.0 / 3.0) * (2.0f64 / 3.0).ln() + (2.0 / 3.0) * (4.0f64 / 3.0).ln();
        assert!((k[0].0 - want).abs() < 1e-7, "{} vs {want}", k[0].0);
    }

    #[test]
    fn windows_and_halves() {
        let toks: Vec<u32> = (10..40).collect();
        let o = PplOptions {
            ctx: 8,
            windows: 4,
            kld_windows: 2,
        };
        let w = windows(&toks, 1, &o).unwrap();
        assert_eq!(w.len(), 4);
        assert_eq!(w[1], vec![1, 17, 18, 19, 20, 21, 22, 23]);
        assert!(windows(
            &toks,
            1,
            &PplOptions {
                windows: 5,
                ..o.clone()
            }
        )
        .is_err());
        // 7 scored rows; positions 4..7 are the second half: rows 3..6.
        let nll = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0];
        let wn = window_nll(&nll, 8);
        assert_eq!((wn.n, wn.n_second), (7, 4));
        assert_eq!(wn.sum_second, 8.0);
    }
}
