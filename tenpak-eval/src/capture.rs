//! Real KV caches from a real model: during the forward pass over the evaluation windows, each
//! layer's keys (after RoPE, as attention reads them) and values are written in the reference
//! dump layout (`formats-spec/kv-dump.md`): `<root>/<run_id>/layer_<i>/k_t<s>_<e>.bin`,
//! `v_t<s>_<e>.bin` and `meta_t<s>_<e>.json`, `[seq_len, kv_heads, head_dim]` little-endian.

use crate::ppl::PplOptions;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tenpak::error::{Error, Result};
use tenpak::Context;

/// Element type of the dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpDType {
    /// 4-byte floats, as the forward pass computes them.
    Fp32,
    /// 2-byte halves, rounded to nearest even (|x| > 65504 becomes ±inf, as numpy's astype).
    Fp16,
}

impl DumpDType {
    fn bytes(self) -> usize {
        match self {
            DumpDType::Fp32 => 4,
            DumpDType::Fp16 => 2,
        }
    }
    fn name(self) -> &'static str {
        match self {
            DumpDType::Fp32 => "fp32",
            DumpDType::Fp16 => "fp16",
        }
    }
}

/// What to capture.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Dump root; each window becomes run `<prefix>w<NNN>` under it.
    pub root: PathBuf,
    /// Prefix of the run ids.
    pub run_prefix: String,
    /// Windows and context, as `eval ppl` cuts them.
    pub windows: PplOptions,
    /// One-token decode steps after each prefill (greedy: each step feeds the arg-max token).
    pub decode_steps: usize,
    /// Element type of the files.
    pub dtype: DumpDType,
    /// Replace runs that exist.
    pub force: bool,
}

/// What a capture wrote.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    /// The model, as loaded.
    pub model: String,
    /// Dump root.
    pub root: PathBuf,
    /// Run ids written, one per window.
    pub runs: Vec<String>,
    /// Layers per run.
    pub layers: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
    /// Element type.
    pub dtype: DumpDType,
    /// Dumps written (one per layer and step; each is a k, a v and a meta file).
    pub dumps: usize,
    /// Bytes of k and v files.
    pub bytes: u64,
}

fn encode(vals: &[f32], dtype: DumpDType) -> Vec<u8> {
    match dtype {
        DumpDType::Fp32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DumpDType::Fp16 => vals
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

struct Dump<'a> {
    run_dir: &'a Path,
    run_id: &'a str,
    layer: usize,
    start: usize,
    len: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DumpDType,
}

impl Dump<'_> {
    fn write(&self, k: &[f32], v: &[f32]) -> Result<u64> {
        let dir = self.run_dir.join(format!("layer_{}", self.layer));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("create a dump folder", e).with_file(&dir))?;
        let end = self.start + self.len;
        let k_file = format!("k_t{}_{end}.bin", self.start);
        let v_file = format!("v_t{}_{end}.bin", self.start);
        let (kb, vb) = (encode(k, self.dtype), encode(v, self.dtype));
        // Plain writes: the run's folder is what appears atomically (renamed from `.partial`
        // when complete), so a file needs neither its own temporary copy nor an fsync each.
        let put = |path: std::path::PathBuf, b: &[u8]| {
            std::fs::write(&path, b).map_err(|e| Error::io("write a dump", e).with_file(&path))
        };
        put(dir.join(&k_file), &kb)?;
        put(dir.join(&v_file), &vb)?;
        let meta = serde_json::json!({
            "layer_id": self.layer,
            "seq_start": self.start,
            "seq_len": self.len,
            "seq_end_exclusive": end,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "bytes_per_elem": self.dtype.bytes(),
            "dtype": self.dtype.name(),
            "add": self.len,
            "tensor_seq_len": self.len,
            "quant_key": false,
            "quant_value": false,
            "flash_attention": false,
            "stage": if self.len == 1 { "decode" } else { "prefill" },
            "run_id": self.run_id,
            "k_file": k_file,
            "v_file": v_file,
        });
        let text = serde_json::to_string_pretty(&meta).expect("json") + "\n";
        put(
            dir.join(format!("meta_t{}_{end}.json", self.start)),
            text.as_bytes(),
        )?;
        Ok((kb.len() + vb.len()) as u64)
    }
}

/// Run the model over the evaluation windows and write every layer's keys and values.
/// A run is written into a hidden temporary folder and renamed into place when complete.
pub fn capture(
    model: &Path,
    base: Option<&Path>,
    corpus: &Path,
    opts: &CaptureOptions,
    on_window: crate::ppl::OnWindow,
    cx: &Context<'_>,
) -> Result<CaptureReport> {
    cx.install(|| capture_on_threads(model, base, corpus, opts, on_window, cx))
}

fn capture_on_threads(
    model: &Path,
    base: Option<&Path>,
    corpus: &Path,
    opts: &CaptureOptions,
    on_window: crate::ppl::OnWindow,
    cx: &Context<'_>,
) -> Result<CaptureReport> {
    let (desc, llama, tok) = crate::load_llama(model, base)?;
    let (_, _, windows) = crate::corpus_windows(&tok, corpus, llama.cfg.bos, &opts.windows)?;
    let (kvh, hd) = (llama.cfg.n_kv_head, llama.cfg.head_dim());
    std::fs::create_dir_all(&opts.root)
        .map_err(|e| Error::io("create the dump root", e).with_file(&opts.root))?;
    let mut report = CaptureReport {
        model: desc,
        root: opts.root.clone(),
        runs: Vec::new(),
        layers: llama.cfg.n_layer,
        kv_heads: kvh,
        head_dim: hd,
        dtype: opts.dtype,
        dumps: 0,
        bytes: 0,
    };
    let mut logits = Vec::new();
    let mut tokens_run = 0;
    for (w, win) in windows.iter().enumerate() {
        // Between runs: every finished run is in place, no partial one exists yet.
        cx.check_cancelled()?;
        let run_id = format!("{}w{w:03}", opts.run_prefix);
        let dest = opts.root.join(&run_id);
        if dest.exists() {
            if !opts.force {
                return Err(Error::input(format!(
                    "run '{run_id}' exists already (pass --force to replace it)"
                ))
                .with_file(&dest));
            }
            std::fs::remove_dir_all(&dest)
                .map_err(|e| Error::io("remove the old run", e).with_file(&dest))?;
        }
        let tmp = opts.root.join(format!(".{run_id}.partial"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(|e| Error::io("remove a stale partial run", e).with_file(&tmp))?;
        }
        let mut seq = win.clone();
        for step in 0..=opts.decode_steps {
            // Step 0 is the prefill of the whole window; each decode step adds one token, whose
            // keys and values are the last row of a pass over the longer sequence (exactly what
            // a cache would hold: row p depends on tokens 0..=p only).
            let (start, len) = if step == 0 {
                (0, seq.len())
            } else {
                (seq.len() - 1, 1)
            };
            let mut sink = |layer: usize, k: &[f32], v: &[f32]| -> Result<()> {
                let rows = k.len() / (kvh * hd);
                let from = (rows - len) * kvh * hd;
                let d = Dump {
                    run_dir: &tmp,
                    run_id: &run_id,
                    layer,
                    start,
                    len,
                    kv_heads: kvh,
                    head_dim: hd,
                    dtype: opts.dtype,
                };
                report.bytes += d.write(&k[from..], &v[from..])?;
                report.dumps += 1;
                Ok(())
            };
            llama.forward(&seq, &mut logits, Some(&mut sink))?;
            tokens_run += seq.len();
            if step < opts.decode_steps {
                let v = llama.cfg.vocab;
                let last = &logits[(seq.len() - 1) * v..seq.len() * v];
                seq.push(crate::ppl::argmax(last) as u32);
            }
        }
        std::fs::rename(&tmp, &dest)
            .map_err(|e| Error::io("rename the run into place", e).with_file(&dest))?;
        report.runs.push(run_id);
        on_window(w + 1, tokens_run);
    }
    Ok(report)
}
