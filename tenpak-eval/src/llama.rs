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
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// The output head `[vocab, n_embd]`, row-major.
    head: std::sync::Arc<Vec<f32>>,
    dev: Device,
    kv_filter: Option<std::sync::Arc<KvFilter>>,
}

/// Tensor names in GGUF and Hugging Face spelling.
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
        let head = if model.has(n.head()) {
            take(&mut model, n.head(), cfg.vocab, e)?
        } else {
            embed_v.clone()
        };
        // The head stays [vocab, e]: read transposed it measured faster than a transposed copy.
        let embed = Tensor::from_vec(embed_v, (cfg.vocab, e), &dev).map_err(cerr)?;
        Ok(Llama {
            cfg,
            embed,
            layers,
            norm,
            head: std::sync::Arc::new(head),
            dev,
            kv_filter: None,
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
        let x = self.hidden(seqs, kv)?;
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
        Ok(())
    }

    /// The final normed hidden states `[rows of all sequences, n_embd]`.
    fn hidden(&self, seqs: &[&[u32]], mut kv: Option<KvSink>) -> Result<Vec<f32>> {
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
        let ids = Tensor::new(tokens.as_slice(), &self.dev).map_err(cerr)?;
        let mut x = self.embed.index_select(&ids, 0).map_err(cerr)?;
        let vec = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
        for (li, l) in self.layers.iter().enumerate() {
            let a = candle_nn::ops::rms_norm(&x, &l.attn_norm, eps).map_err(cerr)?;
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
            x = (x + o.matmul(&l.wo).map_err(cerr)?).map_err(cerr)?;
            let a = candle_nn::ops::rms_norm(&x, &l.ffn_norm, eps).map_err(cerr)?;
            let gu = a.matmul(&l.w_gate_up).and_then(|g| vec(&g)).map_err(cerr)?;
            let mut act = vec![0f32; t * f];
            act.par_chunks_mut(f)
                .zip(gu.par_chunks(2 * f))
                .for_each(|(o, g)| kernels::silu_mul_row(g, o));
            let act = Tensor::from_vec(act, (t, f), &self.dev).map_err(cerr)?;
            x = (x + act.matmul(&l.w_down).map_err(cerr)?).map_err(cerr)?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps).map_err(cerr)?;
        vec(&x).map_err(cerr)
    }
}

/// Receives one layer's keys and values: `(layer, k, v)`, each `[T, kv_heads, head_dim]`.
pub type KvSink<'a> = &'a mut dyn FnMut(usize, &[f32], &[f32]) -> Result<()>;
