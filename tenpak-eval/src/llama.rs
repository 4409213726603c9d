//! The llama architecture (SmolLM2 is one), forward pass in f32 with candle.
//!
//! GGUF files store `attn_q`/`attn_k` rows permuted for llama.cpp's interleaved rotary
//! embedding; they are put back in Hugging Face order on load, so one forward pass (rotation
//! of halves) serves both sources and captured keys look as a Hugging Face model makes them.

use crate::model::{Meta, Model};
use candle_core::{Device, Tensor};
use tenpak::error::{Error, Result};

/// Hyperparameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden width.
    pub n_embd: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Vocabulary (rows of the embedding).
    pub vocab: usize,
    /// RMS norm epsilon.
    pub rms_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Beginning-of-sequence token id.
    pub bos: u32,
}

impl LlamaConfig {
    /// Read from GGUF metadata (`llama.*`) or `config.json`.
    pub fn from_meta(meta: &Meta) -> Result<LlamaConfig> {
        let arch = meta.architecture()?;
        if arch != "llama" {
            return Err(Error::new(
                tenpak::ErrorKind::Unsupported,
                format!("architecture '{arch}': tenpak eval ppl runs llama models"),
            ));
        }
        let int = |g: &str, h: &str| -> Result<usize> {
            let v = meta.num(&format!("llama.{g}"), h)?;
            if !(1.0..=1e9).contains(&v) || v.fract() != 0.0 {
                return Err(Error::input(format!("{h} = {v} is not a valid count")));
            }
            Ok(v as usize)
        };
        let n_embd = int("embedding_length", "hidden_size")?;
        let n_head = int("attention.head_count", "num_attention_heads")?;
        let n_kv_head = int("attention.head_count_kv", "num_key_value_heads").unwrap_or(n_head);
        let vocab = match meta {
            Meta::Gguf(_) => meta.strings("tokenizer.ggml.tokens")?.len(),
            Meta::Hf { .. } => int("vocab_size", "vocab_size")?,
        };
        let cfg = LlamaConfig {
            n_layer: int("block_count", "num_hidden_layers")?,
            n_embd,
            n_ff: int("feed_forward_length", "intermediate_size")?,
            n_head,
            n_kv_head,
            vocab,
            rms_eps: meta.num("llama.attention.layer_norm_rms_epsilon", "rms_norm_eps")?,
            rope_theta: meta
                .num("llama.rope.freq_base", "rope_theta")
                .unwrap_or(10_000.0),
            bos: meta
                .num("tokenizer.ggml.bos_token_id", "bos_token_id")
                .map(|v| v as u32)
                .unwrap_or(1),
        };
        if n_embd % n_head != 0 || n_head % n_kv_head != 0 || (n_embd / n_head) % 2 != 0 {
            return Err(Error::input(format!(
                "{n_embd} wide with {n_head} heads and {n_kv_head} key/value heads is not a llama shape"
            )));
        }
        Ok(cfg)
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

#[derive(Clone)]
struct Layer {
    attn_norm: Tensor,
    /// Query, key and value projections stacked: one product per layer.
    wqkv: Tensor,
    wo: Tensor,
    ffn_norm: Tensor,
    /// Gate and up projections stacked.
    w_gate_up: Tensor,
    w_down: Tensor,
}

/// Runs on each sequence's keys (after RoPE) and values of one layer before attention reads
/// them, in place: `(layer, k, v)`, each `[T, kv_heads, head_dim]` row-major. A KV cache stored
/// in a lossy format is simulated by encoding and decoding here.
pub type KvFilter = dyn Fn(usize, &mut [f32], &mut [f32]) -> Result<()> + Send + Sync;

/// A llama model ready to run.
#[derive(Clone)]
pub struct Llama {
    /// Hyperparameters.
    pub cfg: LlamaConfig,
    embed: std::sync::Arc<Vec<f32>>,
    layers: Vec<Layer>,
    norm: Tensor,
    /// The output head `[vocab, n_embd]`, row-major.
    head: std::sync::Arc<Vec<f32>>,
    dev: Device,
    kv_filter: Option<std::sync::Arc<KvFilter>>,
    names: Names,
    /// No output matrix: the embedding is the head.
    tied: bool,
}

/// Tensor names in GGUF and Hugging Face spelling.
#[derive(Debug, Clone, Copy)]
struct Names {
    gguf: bool,
}

impl Names {
    fn embed(&self) -> &'static str {
        if self.gguf {
            "token_embd.weight"
        } else {
            "model.embed_tokens.weight"
        }
    }
    fn norm(&self) -> &'static str {
        if self.gguf {
            "output_norm.weight"
        } else {
            "model.norm.weight"
        }
    }
    fn head(&self) -> &'static str {
        if self.gguf {
            "output.weight"
        } else {
            "lm_head.weight"
        }
    }
    fn layer(&self, i: usize, what: &str) -> String {
        if self.gguf {
            format!("blk.{i}.{what}.weight")
        } else {
            let hf = match what {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_norm" => "post_attention_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                _ => "mlp.down_proj",
            };
            format!("model.layers.{i}.{hf}.weight")
        }
    }
}

/// Undo llama.cpp's q/k row permutation: within each head, GGUF row `2j + h` is Hugging Face
/// row `h * hd/2 + j`.
fn unpermute(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / heads;
    let mut out = vec![0f32; w.len()];
    for head in 0..heads {
        for j in 0..hd / 2 {
            for h in 0..2 {
                let src = head * hd + 2 * j + h;
                let dst = head * hd + h * (hd / 2) + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn cerr(e: candle_core::Error) -> Error {
    Error::new(tenpak::ErrorKind::Io, format!("forward pass: {e}"))
}

impl Llama {
    /// Build from a loaded model (its tensors are moved out).
    pub fn new(mut model: Model) -> Result<Llama> {
        let cfg = LlamaConfig::from_meta(&model.meta)?;
        let gguf = matches!(model.meta, Meta::Gguf(_));
        let n = Names { gguf };
        let dev = Device::Cpu;
        let (e, f, hd) = (cfg.n_embd, cfg.n_ff, cfg.head_dim());
        let kv = cfg.n_kv_head * hd;
        let take = |model: &mut Model, name: &str, r: usize, c: usize| -> Result<Vec<f32>> {
            let v = model.take(name, &[r, c])?;
            Ok(if gguf && name.ends_with("attn_q.weight") {
                unpermute(&v, cfg.n_head, c)
            } else if gguf && name.ends_with("attn_k.weight") {
                unpermute(&v, cfg.n_kv_head, c)
            } else {
                v
            })
        };
        // Weights are kept transposed, [in, out] row-major: the products then read them as a
        // row-major right-hand side, which gemm packs with plain copies (measured a few percent
        // faster per window than packing the [out, in] rows transposed).
        let stack = |parts: Vec<Vec<f32>>, c: usize| -> Result<Tensor> {
            let v = parts.concat();
            let r = v.len() / c;
            Tensor::from_vec(v, (r, c), &Device::Cpu)
                .and_then(|t| t.t()?.contiguous())
                .map_err(cerr)
        };
        let vec1 = |model: &mut Model, name: &str, r: usize| -> Result<Tensor> {
            Tensor::from_vec(model.take(name, &[r])?, r, &Device::Cpu).map_err(cerr)
        };
        let embed_v = take(&mut model, n.embed(), cfg.vocab, e)?;
        let mut layers = Vec::with_capacity(cfg.n_layer.min(1024));
        for i in 0..cfg.n_layer {
            let q = take(&mut model, &n.layer(i, "attn_q"), e, e)?;
            let k = take(&mut model, &n.layer(i, "attn_k"), kv, e)?;
            let v = take(&mut model, &n.layer(i, "attn_v"), kv, e)?;
            let gate = take(&mut model, &n.layer(i, "ffn_gate"), f, e)?;
            let up = take(&mut model, &n.layer(i, "ffn_up"), f, e)?;
            layers.push(Layer {
                attn_norm: vec1(&mut model, &n.layer(i, "attn_norm"), e)?,
                wqkv: stack(vec![q, k, v], e)?,
                wo: stack(vec![take(&mut model, &n.layer(i, "attn_output"), e, e)?], e)?,
                ffn_norm: vec1(&mut model, &n.layer(i, "ffn_norm"), e)?,
                w_gate_up: stack(vec![gate, up], e)?,
                w_down: stack(vec![take(&mut model, &n.layer(i, "ffn_down"), e, f)?], f)?,
            });
        }
        let norm = vec1(&mut model, n.norm(), e)?;
        // Tied embeddings: no output matrix means the embedding is the head.
        let tied = !model.has(n.head());
        // The head stays [vocab, e]: read transposed it measured faster than a transposed copy.
        // A tied head is the embedding itself, shared, not a second copy.
        let embed = std::sync::Arc::new(embed_v);
        let head = if !tied {
            std::sync::Arc::new(take(&mut model, n.head(), cfg.vocab, e)?)
        } else {
            embed.clone()
        };
        Ok(Llama {
            cfg,
            embed,
            layers,
            norm,
            head,
            dev,
            kv_filter: None,
            names: n,
            tied,
        })
    }

    /// This model with every layer's keys and values passed through `f` before attention (the
    /// weights are shared, not copied).
    pub fn with_kv_filter(&self, f: std::sync::Arc<KvFilter>) -> Llama {
        Llama {
            kv_filter: Some(f),
            ..self.clone()
        }
    }

    /// cos and sin of position p times each frequency, `[t, head_dim / 2]` each.
    fn rope_tables(&self, t: usize) -> (Vec<f32>, Vec<f32>) {
        let hd = self.cfg.head_dim();
        let inv: Vec<f64> = (0..hd / 2)
            .map(|i| 1.0 / self.cfg.rope_theta.powf(2.0 * i as f64 / hd as f64))
            .collect();
        let mut cos = Vec::with_capacity(t * hd / 2);
        let mut sin = Vec::with_capacity(t * hd / 2);
        for p in 0..t {
            for &f in &inv {
                // As Hugging Face computes it: the angle in f32.
                let a = p as f32 * f as f32;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        (cos, sin)
    }

    /// Logits `[tokens.len(), vocab]` (row-major, into `logits`) for one sequence from an
    /// empty cache. `kv` sees each layer's keys (after RoPE) and values as
    /// `[T, kv_heads, head_dim]` row-major.
    pub fn forward(&self, tokens: &[u32], logits: &mut Vec<f32>, kv: Option<KvSink>) -> Result<()> {
        self.forward_many(&[tokens], logits, kv)
    }

    /// As [`Llama::forward`] for several independent sequences at once (each from an empty
    /// cache): their rows share the dense products, so the weights are packed once per call
    /// instead of once per sequence. `logits` holds the sequences' rows one after the other;
    /// `kv` sees the rows of all sequences in order.
    pub fn forward_many(
        &self,
        seqs: &[&[u32]],
        logits: &mut Vec<f32>,
        kv: Option<KvSink>,
    ) -> Result<()> {
        self.check_tokens(seqs)?;
        let x = self.hidden(seqs, 0, None, kv, None, None)?;
        self.head_logits(&x, logits);
        Ok(())
    }

    /// Run `seqs` through the model showing `probe` every matrix product's input (the head's
    /// included); logits only when asked for.
    pub fn forward_probed(
        &self,
        seqs: &[&[u32]],
        logits: Option<&mut Vec<f32>>,
        probe: Probe,
    ) -> Result<()> {
        self.check_tokens(seqs)?;
        let x = self.hidden(seqs, 0, None, None, Some(probe), None)?;
        if let Some(l) = logits {
            self.head_logits(&x, l);
        }
        Ok(())
    }

    /// [`Llama::forward_many`], also keeping the residual stream entering each layer, so that
    /// a model differing from layer `k` on can start there ([`Llama::forward_from`]).
    pub fn forward_traced(&self, seqs: &[&[u32]], logits: &mut Vec<f32>) -> Result<Trace> {
        self.check_tokens(seqs)?;
        let mut keep = Vec::with_capacity(self.cfg.n_layer + 1);
        let x = self.hidden(seqs, 0, None, None, None, Some(&mut keep))?;
        self.head_logits(&x, logits);
        Ok(Trace(keep))
    }

    /// Logits of `seqs` computed from layer `from` on, starting from the residual stream a
    /// [`Trace`] of the same sequences kept there (`from` = `n_layer`: the head only).
    pub fn forward_from(
        &self,
        seqs: &[&[u32]],
        trace: &Trace,
        from: usize,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let x0 = trace.0.get(from).ok_or_else(|| {
            Error::internal(format!(
                "a trace of {} states has no layer {from}",
                trace.0.len()
            ))
        })?;
        let x = if from == self.cfg.n_layer {
            let x =
                candle_nn::ops::rms_norm(x0, &self.norm, self.cfg.rms_eps as f32).map_err(cerr)?;
            x.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(cerr)?
        } else {
            self.hidden(seqs, from, Some(x0), None, None, None)?
        };
        self.head_logits(&x, logits);
        Ok(())
    }

    /// The weight matrices the forward pass reads, with the first layer each acts in
    /// (`n_layer`: the head).
    pub fn matrices(&self) -> Vec<(String, usize)> {
        let n = &self.names;
        let mut out = vec![(n.embed().to_string(), 0)];
        for li in 0..self.cfg.n_layer {
            for p in PARTS {
                out.push((n.layer(li, p), li));
            }
        }
        if !self.tied {
            out.push((n.head().to_string(), self.cfg.n_layer));
        }
        out
    }

    /// Shape `[rows, cols]` of matrix `name` as the model file stores it.
    pub fn matrix_dims(&self, name: &str) -> Option<[usize; 2]> {
        let c = &self.cfg;
        let (e, f, kv) = (c.n_embd, c.n_ff, c.n_kv_head * c.head_dim());
        if name == self.names.embed() || (!self.tied && name == self.names.head()) {
            return Some([c.vocab, e]);
        }
        let (_, part) = self.locate(name)?;
        Some(match part {
            "attn_q" | "attn_output" => [e, e],
            "attn_k" | "attn_v" => [kv, e],
            "ffn_gate" | "ffn_up" => [f, e],
            _ => [e, f],
        })
    }

    /// The matrices that read input `site` of layer `li` (the head: `li` = `n_layer`), in the
    /// file's names; the first names the input in calibration files.
    pub fn readers(&self, li: usize, site: Site) -> Vec<String> {
        let n = &self.names;
        let parts: &[&str] = match site {
            Site::Attn => &PARTS[..3],
            Site::AttnOut => &PARTS[3..4],
            Site::Ffn => &PARTS[4..6],
            Site::Down => &PARTS[6..],
            Site::Head => {
                return vec![if self.tied { n.embed() } else { n.head() }.to_string()];
            }
        };
        parts.iter().map(|p| n.layer(li, p)).collect()
    }

    fn locate(&self, name: &str) -> Option<(usize, &'static str)> {
        (0..self.cfg.n_layer)
            .flat_map(|li| PARTS.iter().map(move |&p| (li, p)))
            .find(|&(li, p)| self.names.layer(li, p) == name)
    }

    /// This model with matrix `name` replaced by `values` (the file's layout and shape, as
    /// [`Llama::matrix_dims`] gives it); the other weights are shared, not copied. A tied
    /// embedding changes the head too.
    pub fn with_matrix(&self, name: &str, values: Vec<f32>) -> Result<Llama> {
        let dims = self
            .matrix_dims(name)
            .ok_or_else(|| Error::input(format!("the model reads no matrix '{name}'")))?;
        if values.len() != dims[0] * dims[1] {
            return Err(Error::input(format!(
                "{} values for matrix '{name}' of shape {dims:?}",
                values.len()
            )));
        }
        let mut m = self.clone();
        let (gguf, c) = (self.names.gguf, &self.cfg);
        if name == self.names.embed() {
            m.embed = std::sync::Arc::new(values);
            if self.tied {
                m.head = m.embed.clone();
            }
            return Ok(m);
        }
        if !self.tied && name == self.names.head() {
            m.head = std::sync::Arc::new(values);
            return Ok(m);
        }
        let (li, part) = self.locate(name).expect("matrix_dims found it");
        let values = match part {
            "attn_q" if gguf => unpermute(&values, c.n_head, dims[1]),
            "attn_k" if gguf => unpermute(&values, c.n_kv_head, dims[1]),
            _ => values,
        };
        // Stored transposed, [in, out], stacked along the output columns.
        let t = Tensor::from_vec(values, (dims[0], dims[1]), &self.dev)
            .and_then(|t| t.t()?.contiguous())
            .map_err(cerr)?;
        let l = &mut m.layers[li];
        let (e, kv) = (c.n_embd, c.n_kv_head * c.head_dim());
        let splice = |whole: &Tensor, at: usize, width: usize| -> Result<Tensor> {
            let total = whole.dim(1).map_err(cerr)?;
            let mut parts = Vec::new();
            if at > 0 {
                parts.push(whole.narrow(1, 0, at).map_err(cerr)?);
            }
            parts.push(t.clone());
            if at + width < total {
                parts.push(
                    whole
                        .narrow(1, at + width, total - at - width)
                        .map_err(cerr)?,
                );
            }
            Tensor::cat(&parts, 1)
                .and_then(|t| t.contiguous())
                .map_err(cerr)
        };
        match part {
            "attn_q" => l.wqkv = splice(&l.wqkv, 0, e)?,
            "attn_k" => l.wqkv = splice(&l.wqkv, e, kv)?,
            "attn_v" => l.wqkv = splice(&l.wqkv, e + kv, kv)?,
            "attn_output" => l.wo = t,
            "ffn_gate" => l.w_gate_up = splice(&l.w_gate_up, 0, c.n_ff)?,
            "ffn_up" => l.w_gate_up = splice(&l.w_gate_up, c.n_ff, c.n_ff)?,
            _ => l.w_down = t,
        }
        Ok(m)
    }

    fn check_tokens(&self, seqs: &[&[u32]]) -> Result<()> {
        for tokens in seqs {
            if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab) {
                return Err(Error::input(format!(
                    "token id {bad} is outside the {}-token vocabulary",
                    self.cfg.vocab
                )));
            }
            if tokens.is_empty() {
                return Err(Error::input("nothing to evaluate: no tokens"));
            }
        }
        Ok(())
    }

    /// Logits `[rows, vocab]` of final normed hidden states `x` `[rows, n_embd]`.
    fn head_logits(&self, x: &[f32], logits: &mut Vec<f32>) {
        let (t, e, v) = (x.len() / self.cfg.n_embd, self.cfg.n_embd, self.cfg.vocab);
        // Every element is written by the product (no read of the old contents): reusing the
        // buffer spares a page-faulted 100 MB allocation per window.
        logits.resize(t * v, 0.0);
        logits.truncate(t * v);
        // SAFETY: x is [t, e], head is [v, e] (read transposed), logits is [t, v].
        unsafe {
            gemm::gemm(
                t,
                v,
                e,
                logits.as_mut_ptr(),
                1,
                v as isize,
                false,
                x.as_ptr(),
                1,
                e as isize,
                self.head.as_ptr(),
                e as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
    }

    /// The final normed hidden states `[rows of all sequences, n_embd]`, running layers
    /// `from..` on `x0` (the residual stream entering layer `from`; the embeddings when
    /// `from` is 0 and `x0` is absent). `probe` sees every matrix product's input; `keep`
    /// receives the residual stream entering each layer run and, last, leaving the last one.
    fn hidden(
        &self,
        seqs: &[&[u32]],
        from: usize,
        x0: Option<&Tensor>,
        mut kv: Option<KvSink>,
        mut probe: Option<Probe>,
        mut keep: Option<&mut Vec<Tensor>>,
    ) -> Result<Vec<f32>> {
        use crate::kernels;
        use rayon::prelude::*;
        let c = &self.cfg;
        let tokens: Vec<u32> = seqs.concat();
        let t = tokens.len();
        // Position of each row within its own sequence.
        let pos: Vec<usize> = seqs.iter().flat_map(|s| 0..s.len()).collect();
        let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let (h, kvh, hd, f) = (c.n_head, c.n_kv_head, c.head_dim(), c.n_ff);
        let w = (h + 2 * kvh) * hd;
        let eps = c.rms_eps as f32;
        let (cos, sin) = self.rope_tables(longest);
        let mut x = match x0 {
            Some(x) => x.clone(),
            None => {
                // Rows of the embedding, gathered (out-of-range ids refused as a lookup would).
                let e = c.n_embd;
                let mut rows = Vec::with_capacity(t * e);
                for &id in &tokens {
                    let at = id as usize * e;
                    let row = self.embed.get(at..at + e).ok_or_else(|| {
                        Error::input(format!("token id {id} is outside the vocabulary"))
                    })?;
                    rows.extend_from_slice(row);
                }
                Tensor::from_vec(rows, (t, e), &self.dev).map_err(cerr)?
            }
        };
        let vec = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
        let mut look = |li: usize, site: Site, t: &Tensor| -> Result<()> {
            match probe.as_mut() {
                Some(p) => p(li, site, &vec(t).map_err(cerr)?),
                None => Ok(()),
            }
        };
        for (li, l) in self.layers.iter().enumerate().skip(from) {
            if let Some(k) = keep.as_mut() {
                k.push(x.clone());
            }
            let a = candle_nn::ops::rms_norm(&x, &l.attn_norm, eps).map_err(cerr)?;
            look(li, Site::Attn, &a)?;
            let mut qkv = a.matmul(&l.wqkv).and_then(|q| vec(&q)).map_err(cerr)?;
            let hd2 = hd / 2;
            qkv.par_chunks_mut(w).zip(&pos).for_each(|(row, &p)| {
                let (cs, sn) = (&cos[p * hd2..(p + 1) * hd2], &sin[p * hd2..(p + 1) * hd2]);
                kernels::rope_row(&mut row[..(h + kvh) * hd], cs, sn);
            });
            if let Some(f) = &self.kv_filter {
                // Per sequence: a cache belongs to one sequence.
                let (mut k, mut v) = (Vec::new(), Vec::new());
                let mut at = 0;
                for sq in seqs {
                    let rows = &mut qkv[at * w..(at + sq.len()) * w];
                    k.clear();
                    v.clear();
                    for row in rows.chunks_exact(w) {
                        k.extend_from_slice(&row[h * hd..(h + kvh) * hd]);
                        v.extend_from_slice(&row[(h + kvh) * hd..]);
                    }
                    f(li, &mut k, &mut v)?;
                    for ((row, kr), vr) in rows
                        .chunks_exact_mut(w)
                        .zip(k.chunks_exact(kvh * hd))
                        .zip(v.chunks_exact(kvh * hd))
                    {
                        row[h * hd..(h + kvh) * hd].copy_from_slice(kr);
                        row[(h + kvh) * hd..].copy_from_slice(vr);
                    }
                    at += sq.len();
                }
            }
            if let Some(sink) = kv.as_mut() {
                let mut k = Vec::with_capacity(t * kvh * hd);
                let mut v = Vec::with_capacity(t * kvh * hd);
                for row in qkv.chunks_exact(w) {
                    k.extend_from_slice(&row[h * hd..(h + kvh) * hd]);
                    v.extend_from_slice(&row[(h + kvh) * hd..]);
                }
                sink(li, &k, &v)?;
            }
            let mut o = Vec::with_capacity(t * h * hd);
            let mut at = 0;
            for sq in seqs {
                let rows = &qkv[at * w..(at + sq.len()) * w];
                o.extend(kernels::causal_attention(rows, sq.len(), h, kvh, hd));
                at += sq.len();
            }
            let o = Tensor::from_vec(o, (t, h * hd), &self.dev).map_err(cerr)?;
            look(li, Site::AttnOut, &o)?;
            x = (x + o.matmul(&l.wo).map_err(cerr)?).map_err(cerr)?;
            let a = candle_nn::ops::rms_norm(&x, &l.ffn_norm, eps).map_err(cerr)?;
            look(li, Site::Ffn, &a)?;
            let gu = a.matmul(&l.w_gate_up).and_then(|g| vec(&g)).map_err(cerr)?;
            let mut act = vec![0f32; t * f];
            act.par_chunks_mut(f)
                .zip(gu.par_chunks(2 * f))
                .for_each(|(o, g)| kernels::silu_mul_row(g, o));
            let act = Tensor::from_vec(act, (t, f), &self.dev).map_err(cerr)?;
            look(li, Site::Down, &act)?;
            x = (x + act.matmul(&l.w_down).map_err(cerr)?).map_err(cerr)?;
        }
        if let Some(k) = keep.as_mut() {
            k.push(x.clone());
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps).map_err(cerr)?;
        let x = vec(&x).map_err(cerr)?;
        if let Some(p) = probe.as_mut() {
            p(self.cfg.n_layer, Site::Head, &x)?;
        }
        Ok(x)
    }
}

/// Receives one layer's keys and values: `(layer, k, v)`, each `[T, kv_heads, head_dim]`.
pub type KvSink<'a> = &'a mut dyn FnMut(usize, &[f32], &[f32]) -> Result<()>;

/// The matrices of a layer, in the names' GGUF spelling.
const PARTS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// The residual stream entering each layer of one forward pass (and leaving the last).
pub struct Trace(Vec<Tensor>);

/// The input of a matrix product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The normed residual stream the query, key and value projections read.
    Attn,
    /// The attention output the output projection reads.
    AttnOut,
    /// The normed residual stream the gate and up projections read.
    Ffn,
    /// The gated activation the down projection reads.
    Down,
    /// The final normed hidden state the output head reads (layer = `n_layer`).
    Head,
}

/// Receives each matrix product's input: `(layer, site, rows)`, rows of the input width.
pub type Probe<'a> = &'a mut dyn FnMut(usize, Site, &[f32]) -> Result<()>;
