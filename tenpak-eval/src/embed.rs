//! Sentence-embedding drift of an encoder against its reference (`formats-spec/eval.md` §5):
//! cosine between the two models' embeddings of each corpus sentence, and nearest-neighbour
//! agreement.

use crate::bert::Bert;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tenpak::error::{Error, Result};
use tenpak::Context;

/// The corpus cut into sentences: each line split after `.`, `!` or `?` followed by whitespace,
/// sentences of at least 5 words kept, in order.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let mut start = 0;
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        let mut i = 0;
        while i < chars.len() {
            let (at, c) = chars[i];
            if matches!(c, '.' | '!' | '?') && i + 1 < chars.len() && chars[i + 1].1.is_whitespace()
            {
                push(&mut out, &line[start..at + c.len_utf8()]);
                let mut j = i + 1;
                while j < chars.len() && chars[j].1.is_whitespace() {
                    j += 1;
                }
                start = chars.get(j).map_or(line.len(), |p| p.0);
                i = j;
                continue;
            }
            i += 1;
        }
        push(&mut out, &line[start..]);
    }
    out
}

fn push(out: &mut Vec<String>, s: &str) {
    let s = s.trim();
    if s.split_whitespace().count() >= 5 {
        out.push(s.to_string());
    }
}

/// What `eval embed` asks for.
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    /// The model.
    pub model: PathBuf,
    /// The reference.
    pub reference: PathBuf,
    /// Base model of a delta `.tpk`.
    pub base: Option<PathBuf>,
    /// Corpus text.
    pub corpus: PathBuf,
    /// Sentences to embed (the first N).
    pub lines: usize,
    /// Truncation, in word pieces.
    pub max_tokens: usize,
}

/// Embedding drift figures.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EmbedFigures {
    /// Sentences embedded.
    pub sentences: usize,
    /// Mean cosine between the two embeddings of a sentence.
    pub mean_cos: f64,
    /// 1st percentile of those cosines (linear interpolation).
    pub p1_cos: f64,
    /// Smallest.
    pub min_cos: f64,
    /// Share of sentences whose nearest neighbour among the others is the same, percent.
    pub nn_agree_pct: f64,
}

/// The result of `eval embed`.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedResult {
    /// The model, as loaded.
    pub model: String,
    /// The reference, as loaded.
    pub reference: String,
    /// The figures.
    #[serde(flatten)]
    pub figures: EmbedFigures,
    /// Seconds spent embedding (both models).
    pub seconds: f64,
    /// Sentences per second per model.
    pub sentences_per_s: f64,
}

/// Load an encoder.
pub fn load_bert(path: &Path, base: Option<&Path>, max_tokens: usize) -> Result<(String, Bert)> {
    let file = crate::model::ModelFile::open(path, base)?;
    crate::bert::BertConfig::from_meta(&file.meta).map_err(|e| e.with_file(path))?;
    crate::model::precheck(&file.meta, "eval embed").map_err(|e| e.with_file(path))?;
    let m = file.load()?;
    let d = m.description.clone();
    Ok((d, Bert::new(m, max_tokens).map_err(|e| e.with_file(path))?))
}

/// Embed every text (in parallel over texts); `on_done` sees the count done.
pub fn embed_all(
    m: &Bert,
    texts: &[String],
    on_done: &(dyn Fn(usize) + Sync),
    cx: &Context<'_>,
) -> Result<Vec<Vec<f32>>> {
    let done = std::sync::atomic::AtomicUsize::new(0);
    texts
        .par_iter()
        .map(|t| {
            cx.check_cancelled()?;
            let e = m.embed(t);
            on_done(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            e
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn nearest(e: &[Vec<f32>]) -> Vec<usize> {
    (0..e.len())
        .into_par_iter()
        .map(|i| {
            let mut best = (f64::NEG_INFINITY, usize::MAX);
            for (j, f) in e.iter().enumerate() {
                if j != i {
                    let s = dot(&e[i], f);
                    if s > best.0 {
                        best = (s, j);
                    }
                }
            }
            best.1
        })
        .collect()
}

/// Compare two sets of embeddings of the same texts.
pub fn compare(a: &[Vec<f32>], b: &[Vec<f32>]) -> EmbedFigures {
    let n = a.len();
    let mut cos: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (dot(x, x) * dot(y, y)).sqrt();
            if d > 0.0 {
                dot(x, y) / d
            } else {
                0.0
            }
        })
        .collect();
    cos.sort_by(|x, y| x.total_cmp(y));
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return f64::NAN;
        }
        let h = (n - 1) as f64 * p / 100.0;
        let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
        cos[lo] + (cos[hi] - cos[lo]) * (h - lo as f64)
    };
    let (na, nb) = (nearest(a), nearest(b));
    let agree = na.iter().zip(&nb).filter(|(x, y)| x == y).count();
    EmbedFigures {
        sentences: n,
        mean_cos: cos.iter().sum::<f64>() / n.max(1) as f64,
        p1_cos: pct(1.0),
        min_cos: cos.first().copied().unwrap_or(f64::NAN),
        nn_agree_pct: if n > 1 {
            100.0 * agree as f64 / n as f64
        } else {
            f64::NAN
        },
    }
}

/// The first `lines` sentences of the corpus.
pub fn corpus_sentences(corpus: &Path, lines: usize) -> Result<Vec<String>> {
    let text = crate::read_corpus(corpus)?;
    let mut s = sentences(&text);
    if lines == 0 {
        return Err(Error::config("--lines must be at least 1"));
    }
    s.truncate(lines);
    Ok(s)
}

/// `tenpak eval embed`.
pub fn eval_embed(
    req: &EmbedRequest,
    on_done: &(dyn Fn(usize) + Sync),
    cx: &Context<'_>,
) -> Result<EmbedResult> {
    cx.install(|| eval_embed_on_threads(req, on_done, cx))
}

fn eval_embed_on_threads(
    req: &EmbedRequest,
    on_done: &(dyn Fn(usize) + Sync),
    cx: &Context<'_>,
) -> Result<EmbedResult> {
    let texts = corpus_sentences(&req.corpus, req.lines)?;
    let (rd, r) = load_bert(&req.reference, None, req.max_tokens)?;
    let t0 = std::time::Instant::now();
    let eb = embed_all(&r, &texts, on_done, cx)?;
    drop(r);
    let (md, m) = load_bert(&req.model, req.base.as_deref(), req.max_tokens)?;
    let t1 = std::time::Instant::now();
    let ea = embed_all(&m, &texts, on_done, cx)?;
    let seconds = (t1.elapsed() + (t1 - t0)).as_secs_f64();
    Ok(EmbedResult {
        model: md,
        reference: rd,
        figures: compare(&ea, &eb),
        seconds,
        sentences_per_s: 2.0 * texts.len() as f64 / seconds.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_split() {
        let s = sentences("One two three four five. Six seven. Eight nine ten eleven twelve! x\nA b c d e?f g h i j");
        assert_eq!(
            s,
            vec![
                "One two three four five.",
                "Eight nine ten eleven twelve!",
                "A b c d e?f g h i j"
            ]
        );
    }

    #[test]
    fn compare_identical_and_swapped() {
        let a = vec![vec![1.0, 0.0], vec![0.9, 0.1], vec![0.0, 1.0]];
        let f = compare(&a, &a);
        assert!((f.mean_cos - 1.0).abs() < 1e-12 && f.nn_agree_pct == 100.0);
        let b = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.9, 0.1]];
        let f = compare(&a, &b);
        assert!(f.min_cos < 0.2 && f.nn_agree_pct < 100.0);
    }
}
