//! BERT-family sentence embeddings (all-MiniLM-L6-v2's pipeline): WordPiece from
//! `tokenizer.json` truncated at 256 word pieces, BERT encoder in f32 (candle products and
//! norms, tenpak's attention kernel), mean pooling over the tokens, L2 normalisation.

use crate::model::{Meta, Model};
use candle_core::{Device, Tensor};
use tenpak::error::{Error, Result};

/// Hyperparameters from `config.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BertConfig {
    /// Encoder layers.
    pub n_layer: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Vocabulary.
    pub vocab: usize,
    /// Position embeddings.
    pub max_positions: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
}

impl BertConfig {
    /// Read from `config.json` (`model_type` bert).
    pub fn from_meta(meta: &Meta) -> Result<BertConfig> {
        let arch = meta.architecture()?;
        if arch != "bert" {
            return Err(Error::new(
                tenpak::ErrorKind::Unsupported,
                format!("architecture '{arch}': tenpak eval embed runs BERT encoders"),
            ));
        }
        let int = |k: &str| -> Result<usize> {
            let v = meta.num(k, k)?;
            if !(1.0..=1e9).contains(&v) || v.fract() != 0.0 {
                return Err(Error::input(format!(
                    "config.json {k} = {v} is not a count"
                )));
            }
            Ok(v as usize)
        };
        if let Meta::Hf { config, .. } = meta {
            let act = config
                .get("hidden_act")
                .and_then(|v| v.as_str())
                .unwrap_or("gelu");
            if act != "gelu" {
                return Err(Error::new(
                    tenpak::ErrorKind::Unsupported,
                    format!("hidden_act '{act}' (gelu is supported)"),
                ));
            }
        }
        let c = BertConfig {
            n_layer: int("num_hidden_layers")?,
            hidden: int("hidden_size")?,
            heads: int("num_attention_heads")?,
            intermediate: int("intermediate_size")?,
            vocab: int("vocab_size")?,
            max_positions: int("max_position_embeddings")?,
            eps: meta
                .num("layer_norm_eps", "layer_norm_eps")
                .unwrap_or(1e-12),
        };
        if !c.hidden.is_multiple_of(c.heads) {
            return Err(Error::input(
                "hidden_size is not a multiple of num_attention_heads",
            ));
        }
        Ok(c)
    }
}

#[derive(Clone)]
struct Layer {
    wqkv: Tensor,
    bqkv: Tensor,
    wo: Tensor,
    bo: Tensor,
    ln1: (Tensor, Tensor),
    wi: Tensor,
    bi: Tensor,
    wout: Tensor,
    bout: Tensor,
    ln2: (Tensor, Tensor),
}

/// A BERT encoder with its tokenizer, ready to embed text.
#[derive(Clone)]
pub struct Bert {
    /// Hyperparameters.
    pub cfg: BertConfig,
    word: Tensor,
    pos: Tensor,
    type0: Tensor,
    ln: (Tensor, Tensor),
    layers: Vec<Layer>,
    tok: tokenizers::Tokenizer,
    dev: Device,
    /// Name prefix of the export (`""` or `"bert."`).
    pre: &'static str,
}

/// A layer's matrices, in the names' Hugging Face spelling.
const PARTS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

fn cerr(e: candle_core::Error) -> Error {
    Error::new(tenpak::ErrorKind::Io, format!("forward pass: {e}"))
}

/// The word-piece tokenizer of `tokenizer.json`, truncating at `max` tokens, unpadded.
pub fn tokenizer(meta: &Meta, max: usize) -> Result<tokenizers::Tokenizer> {
    let tok_json = match meta {
        Meta::Hf {
            tokenizer: Some(t), ..
        } => t,
        _ => return Err(Error::input("the model has no tokenizer.json")),
    };
    let mut tok = crate::tokenizer::parse_json(tok_json)?;
    tok.with_padding(None);
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max,
        ..Default::default()
    }))
    .map_err(|e| Error::input(format!("tokenizer.json: {e}")))?;
    Ok(tok)
}

impl Bert {
    /// Build from a loaded model; `max_tokens` is the truncation length (word pieces, special
    /// tokens included).
    pub fn new(mut model: Model, max_tokens: usize) -> Result<Bert> {
        let cfg = BertConfig::from_meta(&model.meta)?;
        let tok = tokenizer(&model.meta, max_tokens.min(cfg.max_positions))?;
        let dev = Device::Cpu;
        let (e, f) = (cfg.hidden, cfg.intermediate);
        // Some exports prefix every name with "bert.".
        let pre: &'static str = if model.has("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let mut t = |name: &str, dims: &[usize]| -> Result<Tensor> {
            let v = model.take(&format!("{pre}{name}"), dims)?;
            Tensor::from_vec(v, dims, &Device::Cpu).map_err(cerr)
        };
        let word = t("embeddings.word_embeddings.weight", &[cfg.vocab, e])?;
        let pos = t(
            "embeddings.position_embeddings.weight",
            &[cfg.max_positions, e],
        )?;
        let types = t("embeddings.token_type_embeddings.weight", &[2, e])?;
        let type0 = types.get(0).map_err(cerr)?;
        let ln = (
            t("embeddings.LayerNorm.weight", &[e])?,
            t("embeddings.LayerNorm.bias", &[e])?,
        );
        let mut layers = Vec::with_capacity(cfg.n_layer.min(1024));
        for i in 0..cfg.n_layer {
            let p = format!("encoder.layer.{i}.");
            let cat = |v: Vec<Tensor>| Tensor::cat(&v, 0).map_err(cerr);
            let wqkv = cat(vec![
                t(&format!("{p}attention.self.query.weight"), &[e, e])?,
                t(&format!("{p}attention.self.key.weight"), &[e, e])?,
                t(&format!("{p}attention.self.value.weight"), &[e, e])?,
            ])?;
            let bqkv = cat(vec![
                t(&format!("{p}attention.self.query.bias"), &[e])?,
                t(&format!("{p}attention.self.key.bias"), &[e])?,
                t(&format!("{p}attention.self.value.bias"), &[e])?,
            ])?;
            layers.push(Layer {
                wqkv,
                bqkv,
                wo: t(&format!("{p}attention.output.dense.weight"), &[e, e])?,
                bo: t(&format!("{p}attention.output.dense.bias"), &[e])?,
                ln1: (
                    t(&format!("{p}attention.output.LayerNorm.weight"), &[e])?,
                    t(&format!("{p}attention.output.LayerNorm.bias"), &[e])?,
                ),
                wi: t(&format!("{p}intermediate.dense.weight"), &[f, e])?,
                bi: t(&format!("{p}intermediate.dense.bias"), &[f])?,
                wout: t(&format!("{p}output.dense.weight"), &[e, f])?,
                bout: t(&format!("{p}output.dense.bias"), &[e])?,
                ln2: (
                    t(&format!("{p}output.LayerNorm.weight"), &[e])?,
                    t(&format!("{p}output.LayerNorm.bias"), &[e])?,
                ),
            });
        }
        Ok(Bert {
            cfg,
            word,
            pos,
            type0,
            ln,
            layers,
            tok,
            dev,
            pre,
        })
    }

    /// The weight matrices of two or more dimensions the encoder reads, in the file's names:
    /// the three embedding tables, then each layer's six.
    pub fn matrices(&self) -> Vec<String> {
        let p = self.pre;
        let mut v: Vec<String> = [
            "word_embeddings",
            "position_embeddings",
            "token_type_embeddings",
        ]
        .iter()
        .map(|n| format!("{p}embeddings.{n}.weight"))
        .collect();
        for i in 0..self.cfg.n_layer {
            for part in PARTS {
                v.push(format!("{p}encoder.layer.{i}.{part}.weight"));
            }
        }
        v
    }

    /// The matrices reading input `site` of layer `li`; the first names it.
    pub fn readers(&self, li: usize, site: crate::llama::Site) -> Vec<String> {
        use crate::llama::Site;
        let parts: &[&str] = match site {
            Site::Attn => &PARTS[..3],
            Site::AttnOut => &PARTS[3..4],
            Site::Ffn => &PARTS[4..5],
            Site::Down => &PARTS[5..],
            Site::Head => &[],
        };
        parts
            .iter()
            .map(|part| format!("{}encoder.layer.{li}.{part}.weight", self.pre))
            .collect()
    }

    /// This encoder with matrix `name` replaced by `values` (the file's layout, `[out, in]`).
    pub fn with_matrix(&self, name: &str, values: Vec<f32>) -> Result<Bert> {
        let (e, f) = (self.cfg.hidden, self.cfg.intermediate);
        let mut m = self.clone();
        let p = self.pre;
        let tensor = |v: Vec<f32>, r: usize, c: usize| -> Result<Tensor> {
            if v.len() != r * c {
                return Err(Error::input(format!(
                    "{} values for matrix '{name}' of shape [{r}, {c}]",
                    v.len()
                )));
            }
            Tensor::from_vec(v, (r, c), &self.dev).map_err(cerr)
        };
        let emb = |n: &str| format!("{p}embeddings.{n}.weight");
        if name == emb("word_embeddings") {
            m.word = tensor(values, self.cfg.vocab, e)?;
            return Ok(m);
        }
        if name == emb("position_embeddings") {
            m.pos = tensor(values, self.cfg.max_positions, e)?;
            return Ok(m);
        }
        if name == emb("token_type_embeddings") {
            m.type0 = tensor(values, 2, e)?.get(0).map_err(cerr)?;
            return Ok(m);
        }
        let found = (0..self.cfg.n_layer)
            .flat_map(|li| {
                PARTS
                    .iter()
                    .enumerate()
                    .map(move |(k, part)| (li, k, *part))
            })
            .find(|(li, _, part)| format!("{p}encoder.layer.{li}.{part}.weight") == name);
        let Some((li, k, _)) = found else {
            return Err(Error::input(format!(
                "the encoder reads no matrix '{name}'"
            )));
        };
        let l = &mut m.layers[li];
        match k {
            0..=2 => {
                let t = tensor(values, e, e)?;
                let mut parts: Vec<Tensor> = (0..3)
                    .map(|j| l.wqkv.narrow(0, j * e, e).map_err(cerr))
                    .collect::<Result<_>>()?;
                parts[k] = t;
                l.wqkv = Tensor::cat(&parts, 0).map_err(cerr)?;
            }
            3 => l.wo = tensor(values, e, e)?,
            4 => l.wi = tensor(values, f, e)?,
            _ => l.wout = tensor(values, e, f)?,
        }
        Ok(m)
    }

    /// Word-piece ids of `text` (`[CLS] ... [SEP]`, truncated).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tok
            .encode(text, true)
            .map_err(|e| Error::input(format!("tokenize: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The L2-normalised mean-pooled embedding of `text`.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.tokenize(text)?;
        self.embed_ids(&ids)
    }

    /// As [`Bert::embed`], from word-piece ids.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.check_ids(ids)?;
        self.forward(ids, None)
    }

    /// As [`Bert::embed_ids`], showing `probe` every matrix product's input.
    pub fn embed_ids_probed(&self, ids: &[u32], probe: crate::llama::Probe) -> Result<Vec<f32>> {
        self.check_ids(ids)?;
        self.forward(ids, Some(probe))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() || ids.len() > self.cfg.max_positions {
            return Err(Error::input(format!(
                "{} word pieces: 1 to {} fit",
                ids.len(),
                self.cfg.max_positions
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab) {
            return Err(Error::input(format!(
                "word piece {bad} is outside the vocabulary"
            )));
        }
        Ok(())
    }

    fn forward(&self, ids: &[u32], mut probe: Option<crate::llama::Probe>) -> Result<Vec<f32>> {
        use crate::llama::Site;
        let mut look = |li: usize, site: Site, t: &Tensor| -> Result<()> {
            match probe.as_mut() {
                Some(p) => p(
                    li,
                    site,
                    &t.flatten_all()
                        .and_then(|t| t.to_vec1::<f32>())
                        .map_err(cerr)?,
                ),
                None => Ok(()),
            }
        };
        self.forward_inner(ids, &mut look)
    }

    fn forward_inner(
        &self,
        ids: &[u32],
        look: &mut dyn FnMut(usize, crate::llama::Site, &Tensor) -> Result<()>,
    ) -> Result<Vec<f32>> {
        use crate::llama::Site;
        let (t, e, h) = (ids.len(), self.cfg.hidden, self.cfg.heads);
        let eps = self.cfg.eps as f32;
        let lin = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
            x.matmul(&w.t().map_err(cerr)?)
                .and_then(|y| y.broadcast_add(b))
                .map_err(cerr)
        };
        let ln = |x: &Tensor, g: &(Tensor, Tensor)| -> Result<Tensor> {
            candle_nn::ops::layer_norm(x, &g.0, &g.1, eps).map_err(cerr)
        };
        let ids_t = Tensor::new(ids, &self.dev).map_err(cerr)?;
        let x = self
            .word
            .index_select(&ids_t, 0)
            .and_then(|x| x.add(&self.pos.narrow(0, 0, t)?))
            .and_then(|x| x.broadcast_add(&self.type0))
            .map_err(cerr)?;
        let mut x = ln(&x, &self.ln)?;
        for (li, l) in self.layers.iter().enumerate() {
            look(li, Site::Attn, &x)?;
            let qkv = lin(&x, &l.wqkv, &l.bqkv)?
                .flatten_all()
                .and_then(|q| q.to_vec1::<f32>())
                .map_err(cerr)?;
            let o = crate::kernels::full_attention(&qkv, t, h, h, e / h);
            let o = Tensor::from_vec(o, (t, e), &self.dev).map_err(cerr)?;
            look(li, Site::AttnOut, &o)?;
            x = ln(&(lin(&o, &l.wo, &l.bo)? + &x).map_err(cerr)?, &l.ln1)?;
            look(li, Site::Ffn, &x)?;
            let i = lin(&x, &l.wi, &l.bi)?.gelu_erf().map_err(cerr)?;
            look(li, Site::Down, &i)?;
            x = ln(&(lin(&i, &l.wout, &l.bout)? + &x).map_err(cerr)?, &l.ln2)?;
        }
        let mut v = x.mean(0).and_then(|m| m.to_vec1::<f32>()).map_err(cerr)?;
        let n = v
            .iter()
            .map(|&a| (a as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        for a in &mut v {
            *a = (*a as f64 / n) as f32;
        }
        Ok(v)
    }
}
