//! The llama architecture (SmolLM2 is one), forward pass in f32 with candle.
//!
//! GGUF files store `attn_q`/`attn_k` rows permuted for llama.cpp's interleaved rotary
//! embedding; they are put back in Hugging Face order on load, so one forward pass (rotation
//! of halves) serves both sources and captured keys look as a Hugging Face model makes them.

use super::model::{Meta, Model};
use crate::error::{Error, Result};
use candle_core::{DType as CDType, Device, Tensor};

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
                crate::ErrorKind::Unsupported,
                format!("architecture '{arch}': tenpak eval ppl runs llama models"),
            ));
        }
        let int = |g: &str, h: &str| -> Result<usize> {
            let v = meta.num(&format!("llama.{g}"), h)?;
            if v < 1.0 || v > 1e9 || v.fract() != 0.0 {
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

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    ffn_norm: Tensor,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
}

/// A llama model ready to run.
pub struct Llama {
    /// Hyperparameters.
    pub cfg: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    head: Tensor,
    dev: Device,
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
    Error::new(crate::ErrorKind::Io, format!("forward pass: {e}"))
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
        let mat = |model: &mut Model, name: &str, r: usize, c: usize| -> Result<Tensor> {
            let mut v = model.take(name, &[r, c])?;
            if gguf && name.ends_with("attn_q.weight") {
                v = unpermute(&v, cfg.n_head, c);
            } else if gguf && name.ends_with("attn_k.weight") {
                v = unpermute(&v, cfg.n_kv_head, c);
            }
            Tensor::from_vec(v, (r, c), &dev).map_err(cerr)
        };
        let vec1 = |model: &mut Model, name: &str, r: usize| -> Result<Tensor> {
            Tensor::from_vec(model.take(name, &[r])?, r, &Device::Cpu).map_err(cerr)
        };
        let embed = mat(&mut model, n.embed(), cfg.vocab, e)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            layers.push(Layer {
                attn_norm: vec1(&mut model, &n.layer(i, "attn_norm"), e)?,
                wq: mat(&mut model, &n.layer(i, "attn_q"), e, e)?,
                wk: mat(&mut model, &n.layer(i, "attn_k"), kv, e)?,
                wv: mat(&mut model, &n.layer(i, "attn_v"), kv, e)?,
                wo: mat(&mut model, &n.layer(i, "attn_output"), e, e)?,
                ffn_norm: vec1(&mut model, &n.layer(i, "ffn_norm"), e)?,
                w_gate: mat(&mut model, &n.layer(i, "ffn_gate"), f, e)?,
                w_up: mat(&mut model, &n.layer(i, "ffn_up"), f, e)?,
                w_down: mat(&mut model, &n.layer(i, "ffn_down"), e, f)?,
            });
        }
        let norm = vec1(&mut model, n.norm(), e)?;
        // Tied embeddings: no output matrix means the embedding is the head.
        let head = if model.has(n.head()) {
            mat(&mut model, n.head(), cfg.vocab, e)?
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
        })
    }

    fn rope_tables(&self, t: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim();
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| (1.0 / self.cfg.rope_theta.powf(2.0 * i as f64 / hd as f64)) as f32)
            .collect();
        let mut cos = Vec::with_capacity(t * hd / 2);
        let mut sin = Vec::with_capacity(t * hd / 2);
        for p in 0..t {
            for &f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (t, hd / 2), &self.dev)?,
            Tensor::from_vec(sin, (t, hd / 2), &self.dev)?,
        ))
    }

    /// Logits `[tokens.len(), vocab]` (row-major) for one sequence from an empty cache.
    /// `kv` sees each layer's keys (after RoPE) and values as `[T, kv_heads, head_dim]`.
    pub fn forward(
        &self,
        tokens: &[u32],
        kv: Option<&mut dyn FnMut(usize, &Tensor, &Tensor) -> Result<()>>,
    ) -> Result<Vec<f32>> {
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(Error::input(format!(
                "token id {bad} is outside the {}-token vocabulary",
                self.cfg.vocab
            )));
        }
        self.forward_inner(tokens, kv)
    }

    fn forward_inner(
        &self,
        tokens: &[u32],
        mut kv: Option<&mut dyn FnMut(usize, &Tensor, &Tensor) -> Result<()>>,
    ) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let t = tokens.len();
        let (h, kvh, hd) = (c.n_head, c.n_kv_head, c.head_dim());
        let g = h / kvh;
        let eps = c.rms_eps as f32;
        let mut run = || -> candle_core::Result<Tensor> {
            let ids = Tensor::new(tokens, &self.dev)?;
            let mut x = self.embed.index_select(&ids, 0)?;
            let (cos, sin) = self.rope_tables(t)?;
            let mask: Vec<f32> = (0..t * t)
                .map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 })
                .collect();
            let mask = Tensor::from_vec(mask, (t, t), &self.dev)?;
            let scale = 1.0 / (hd as f64).sqrt();
            for (li, l) in self.layers.iter().enumerate() {
                let a = candle_nn::ops::rms_norm(&x, &l.attn_norm, eps)?;
                let q = a.matmul(&l.wq.t()?)?.reshape((1, t, h, hd))?;
                let k = a.matmul(&l.wk.t()?)?.reshape((1, t, kvh, hd))?;
                let v = a.matmul(&l.wv.t()?)?.reshape((t, kvh, hd))?;
                let q = candle_nn::rotary_emb::rope_thd(&q, &cos, &sin)?;
                let k = candle_nn::rotary_emb::rope_thd(&k, &cos, &sin)?.reshape((t, kvh, hd))?;
                if let Some(f) = kv.as_mut() {
                    f(li, &k, &v).map_err(candle_core::Error::wrap)?;
                }
                // Heads h = kv_head * g + j share key/value head kv_head: group the g query
                // heads of one key/value head into one [g*T, hd] matrix.
                let q = q
                    .reshape((t, h, hd))?
                    .transpose(0, 1)?
                    .contiguous()?
                    .reshape((kvh, g * t, hd))?;
                let k = k.transpose(0, 1)?.contiguous()?;
                let v = v.transpose(0, 1)?.contiguous()?;
                let s = (q.matmul(&k.t()?)? * scale)?
                    .reshape((kvh, g, t, t))?
                    .broadcast_add(&mask)?;
                let p = candle_nn::ops::softmax_last_dim(&s)?.reshape((kvh, g * t, t))?;
                let o = p
                    .matmul(&v)?
                    .reshape((h, t, hd))?
                    .transpose(0, 1)?
                    .contiguous()?
                    .reshape((t, h * hd))?;
                x = (x + o.matmul(&l.wo.t()?)?)?;
                let a = candle_nn::ops::rms_norm(&x, &l.ffn_norm, eps)?;
                let gate = candle_nn::ops::silu(&a.matmul(&l.w_gate.t()?)?)?;
                let up = a.matmul(&l.w_up.t()?)?;
                x = (x + (gate * up)?.matmul(&l.w_down.t()?)?)?;
            }
            let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
            x.matmul(&self.head.t()?)
        };
        let logits = run().map_err(cerr)?;
        let logits = logits.to_dtype(CDType::F32).map_err(cerr)?;
        logits
            .flatten_all()
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(cerr)
            .map(|v| {
                debug_assert_eq!(v.len(), t * self.cfg.vocab);
                v
            })
    }
}
