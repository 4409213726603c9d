//! Model-quality evaluation in Rust: perplexity, KL divergence and top-1 agreement of causal
//! LMs (`ppl`), with the corpus and procedure of `formats-spec/eval.md`.
//!
//! Models are GGUF files, Hugging Face folders or `.tpk` files made from either (decoded in
//! memory). The forward pass is candle's, in f32. Every entry point takes a
//! [`tenpak::Context`]: it runs on the context's threads and stops at the next window when the
//! context is cancelled.

#![warn(missing_docs)]

pub mod bert;
pub mod calibrate;
pub mod capture;
pub mod embed;
#[doc(hidden)]
pub mod fuzz_api;
pub mod kernels;
pub mod kvsim;
pub mod llama;
pub mod model;
pub mod ppl;
pub mod sensitivity;
pub mod sweep;
pub mod tokenizer;

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tenpak::error::{Error, Result};
use tenpak::Context;

/// Where `scripts/fetch-corpus.sh` puts the evaluation corpus, below the models folder.
pub const DEFAULT_CORPUS: &str = "models/corpus/cfi-en.txt";

/// The default corpus: `$TENPAK_MODELS/corpus/cfi-en.txt` when `TENPAK_MODELS` is set (the
/// scripts' models folder), else [`DEFAULT_CORPUS`].
pub fn default_corpus() -> PathBuf {
    match std::env::var_os("TENPAK_MODELS") {
        Some(m) if !m.is_empty() => PathBuf::from(m).join("corpus").join("cfi-en.txt"),
        _ => PathBuf::from(DEFAULT_CORPUS),
    }
}

/// Read the corpus, with a hint to fetch it when it is missing.
pub fn read_corpus(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (run scripts/fetch-corpus.sh to build the evaluation corpus)"
        } else {
            ""
        };
        Error::io(format!("read corpus{hint}"), e).with_file(path)
    })
}

/// SHA-256 (hex) of token ids written as little-endian i32.
pub fn tokens_sha256(ids: &[u32]) -> String {
    let mut h = Sha256::new();
    for &t in ids {
        h.update((t as i32).to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What `eval ppl` asks for.
#[derive(Debug, Clone)]
pub struct PplRequest {
    /// The model.
    pub model: PathBuf,
    /// The reference model, if any.
    pub reference: Option<PathBuf>,
    /// Base model for delta `.tpk` files.
    pub base: Option<PathBuf>,
    /// Corpus text file.
    pub corpus: PathBuf,
    /// Windows and context.
    pub opts: ppl::PplOptions,
    /// Read the KV cache through this policy (`--kv`); without a reference, the same model
    /// with an exact cache is the reference.
    pub kv: Option<tenpak::kv::method::Policy>,
}

/// The KV cache of an `eval ppl --kv` run.
#[derive(Debug, Clone, Serialize)]
pub struct KvCacheReport {
    /// The policy, as JSON.
    pub policy: serde_json::Value,
    /// Bits per cached value, from the encoded chunks (codes, scales and outliers).
    pub bits_per_value: f64,
}

/// The result of `eval ppl`.
#[derive(Debug, Clone, Serialize)]
pub struct PplResult {
    /// The model, as loaded.
    pub model: String,
    /// The reference, as loaded.
    pub reference: Option<String>,
    /// Corpus file name.
    pub corpus: String,
    /// Tokens in the whole corpus.
    pub corpus_tokens: usize,
    /// Tokens the windows cover (BOS not counted).
    pub slice_tokens: usize,
    /// SHA-256 of the slice's ids as little-endian i32.
    pub slice_sha256: String,
    /// Seconds to load and prepare the models.
    pub load_seconds: f64,
    /// The simulated KV cache, with `--kv`.
    pub kv: Option<KvCacheReport>,
    /// The figures.
    #[serde(flatten)]
    pub report: ppl::PplReport,
}

/// Load a llama model for evaluation.
pub fn load_llama(
    path: &Path,
    base: Option<&Path>,
) -> Result<(String, llama::Llama, tokenizer::TextTokenizer)> {
    // The architecture and the tokenizer are checked before any weight is decoded.
    let file = model::ModelFile::open(path, base)?;
    llama::LlamaConfig::from_meta(&file.meta).map_err(|e| e.with_file(path))?;
    let tok = tokenizer::TextTokenizer::from_meta(&file.meta).map_err(|e| e.with_file(path))?;
    let desc = file.description.clone();
    let model = file.load()?;
    let llama = llama::Llama::new(model).map_err(|e| e.with_file(path))?;
    Ok((desc, llama, tok))
}

/// Tokenize the corpus and cut the evaluation windows.
pub fn corpus_windows(
    tok: &tokenizer::TextTokenizer,
    corpus: &Path,
    bos: u32,
    opts: &ppl::PplOptions,
) -> Result<(usize, Vec<u32>, Vec<Vec<u32>>)> {
    let text = read_corpus(corpus)?;
    let ids = tok.encode(&text)?;
    let windows = ppl::windows(&ids, bos, opts)?;
    let slice = ids[..opts.windows * (opts.ctx - 1)].to_vec();
    Ok((ids.len(), slice, windows))
}

/// `tenpak eval ppl`: load, tokenize, run every window, score.
pub fn eval_ppl(req: &PplRequest, on_window: ppl::OnWindow, cx: &Context<'_>) -> Result<PplResult> {
    cx.install(|| eval_ppl_on_threads(req, on_window, cx))
}

fn eval_ppl_on_threads(
    req: &PplRequest,
    on_window: ppl::OnWindow,
    cx: &Context<'_>,
) -> Result<PplResult> {
    let t0 = std::time::Instant::now();
    let (desc, exact, tok) = load_llama(&req.model, req.base.as_deref())?;
    let (corpus_tokens, slice, windows) =
        corpus_windows(&tok, &req.corpus, exact.cfg.bos, &req.opts)?;
    let sim = req
        .kv
        .as_ref()
        .map(|p| kvsim::KvSim::new(p.clone(), exact.cfg.n_kv_head, exact.cfg.head_dim()));
    let model = match &sim {
        Some(s) => exact.with_kv_filter(s.filter()),
        None => exact.clone(),
    };
    let reference = match &req.reference {
        None if sim.is_some() => Some((format!("{desc} (exact KV cache)"), exact)),
        None => None,
        Some(p) => {
            let (rdesc, r, rtok) = load_llama(p, None)?;
            let (_, rslice, _) = corpus_windows(&rtok, &req.corpus, r.cfg.bos, &req.opts)?;
            if rslice != slice || r.cfg.bos != model.cfg.bos {
                return Err(Error::input(
                    "the model and the reference tokenize the corpus differently: they are not comparable",
                ));
            }
            Some((rdesc, r))
        }
    };
    let load_seconds = t0.elapsed().as_secs_f64();
    let report = ppl::evaluate(
        &model,
        reference.as_ref().map(|(_, r)| ppl::RefSource::Model(r)),
        &windows,
        &req.opts,
        on_window,
        cx,
    )?;
    Ok(PplResult {
        model: desc,
        reference: reference.map(|(d, _)| d),
        corpus: req
            .corpus
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        corpus_tokens,
        slice_tokens: slice.len(),
        slice_sha256: tokens_sha256(&slice),
        load_seconds,
        kv: req
            .kv
            .as_ref()
            .zip(sim.as_ref())
            .map(|(p, s)| KvCacheReport {
                policy: p.to_json(),
                bits_per_value: s.bits_per_value(),
            }),
        report,
    })
}
