//! Bit allocation under a size budget: one codec per tensor, chosen to minimise the output
//! error a sensitivity model predicts (formats-spec/allocation.md).
//!
//! The model is HIGGS's linearity (arXiv 2411.17525): the KL divergence of the model's output
//! grows as `sum_t alpha_t * e_t`, where `e_t = ||W_t - W^_t||^2 / ||W_t||^2` is tensor `t`'s
//! relative squared error and `alpha_t` its sensitivity. `alpha_t` comes from a sensitivity
//! file (`tenpak sensitivity`: measured through the model on calibration text) or, without
//! one, from a documented weight-only proxy ([`proxy_alpha`]): every block matrix's relative
//! error counts the same, and the output head's (a tied embedding's too) counts `2 * n_layer`
//! times as much: its error reaches the logits directly, while a block matrix's is one of
//! `2 * n_layer` contributions (attention and MLP of each block) to the residual stream.
//!
//! Every candidate codec encodes every tensor for real (sizes are the payload and parameter
//! bytes it writes, errors measured against the source), then a dynamic programme over the
//! budget (in 1/[`UNITS`] steps, sizes rounded up so the budget holds) picks one candidate per
//! tensor.

use crate::calib::TokenSlice;
use crate::compress::CompressOptions;
use crate::encode::encode_loaded;
use crate::error::{Error, Result};
use crate::input::TensorSource;
use crate::plan::Plan;
use crate::progress::Event;
use crate::Context;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Budget steps of the dynamic programme.
pub const UNITS: u64 = 20_000;

/// One tensor's measured sensitivity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorSensitivity {
    /// Tensor name, as the model file spells it.
    pub name: String,
    /// Elements.
    pub numel: u64,
    /// ΔKLD per unit of relative squared error (`kld / rel_sq`).
    pub alpha: f64,
    /// The relative squared error injected.
    pub rel_sq: f64,
    /// The output divergence it caused (the file's `measure`): mean KL(P_exact || P_perturbed)
    /// per token, or mean 1 − cosine of sentence embeddings.
    pub kld: f64,
    /// Mean ΔNLL per token it caused (nats); causal LMs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_nll: Option<f64>,
    /// The same measured with candidate codecs' real errors (`--codecs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codecs: Vec<CodecSensitivity>,
}

/// A codec's real error injected into one tensor, and what the output felt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CodecSensitivity {
    /// Codec spec.
    pub codec: String,
    /// Its relative squared error on this tensor.
    pub rel_sq: f64,
    /// The output divergence (the file's `measure`).
    pub kld: f64,
    /// Mean ΔNLL per token (causal LMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_nll: Option<f64>,
}

fn kld_measure() -> String {
    "kld".into()
}

/// A sensitivity file (`tenpak sensitivity -o sens.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sensitivity {
    /// Layout version (1).
    pub format: u32,
    /// The model, as loaded.
    pub model: String,
    /// The calibration tokens (disjoint from the evaluation windows).
    pub slice: TokenSlice,
    /// What `kld` measures: `kld` (causal LMs) or `embedding_drift` (encoders: 1 − cosine).
    #[serde(default = "kld_measure")]
    pub measure: String,
    /// How `alpha` was measured, in words.
    pub method: String,
    /// Seed of the injected noise.
    pub seed: u64,
    /// Mean NLL per token of the exact model on the slice.
    pub reference_nll: f64,
    /// Seconds the measurement took.
    pub seconds: f64,
    /// One entry per matrix the forward pass reads.
    pub tensors: Vec<TensorSensitivity>,
}

impl Sensitivity {
    /// Read and check a sensitivity file.
    pub fn read(path: &Path) -> Result<Sensitivity> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("read the sensitivity file", e).with_file(path))?;
        Self::parse(&text).map_err(|e| e.with_file(path))
    }

    /// Parse and check a sensitivity file's text.
    pub fn parse(text: &str) -> Result<Sensitivity> {
        let s: Sensitivity = serde_json::from_str(text)
            .map_err(|e| Error::input(format!("not a sensitivity file: {e}")))?;
        if s.format != 1 {
            return Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!("sensitivity format {} (this tenpak reads 1)", s.format),
            ));
        }
        if let Some(t) = s
            .tensors
            .iter()
            .find(|t| !(t.alpha.is_finite() && t.alpha >= 0.0))
        {
            return Err(
                Error::input(format!("alpha {} is not a sensitivity", t.alpha))
                    .with_tensor(&t.name),
            );
        }
        Ok(s)
    }
}

/// The size budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Bits per weight of the whole file (every selected tensor's elements).
    Bpw(f64),
    /// Bytes of the whole file.
    Bytes(u64),
}

/// What to allocate.
#[derive(Debug, Clone)]
pub struct AllocOptions {
    /// The budget.
    pub target: Target,
    /// Candidate codec specs.
    pub candidates: Vec<String>,
    /// Measured sensitivities; `None`: the weight-only proxy.
    pub sensitivity: Option<Sensitivity>,
}

/// One tensor's choice.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    /// Tensor name.
    pub tensor: String,
    /// The chosen codec spec.
    pub codec: String,
    /// Its payload and parameter bytes.
    pub bytes: u64,
    /// Its relative squared error.
    pub rel_sq: f64,
    /// The tensor's sensitivity.
    pub alpha: f64,
    /// `alpha * rel_sq`.
    pub predicted_kld: f64,
}

/// One candidate measured on one tensor.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Codec spec.
    pub codec: String,
    /// Payload and parameter bytes.
    pub bytes: u64,
    /// Relative squared error.
    pub rel_sq: f64,
}

/// An allocation: the plan `compress` stores as metadata `tenpak.allocation` and prints.
#[derive(Debug, Clone, Serialize)]
pub struct Allocation {
    /// `sensitivity` (measured) or `proxy` (weight-only).
    pub method: &'static str,
    /// Where the sensitivities came from (model and calibration slice), when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity_source: Option<String>,
    /// The budget of the whole file, in bytes.
    pub target_bytes: u64,
    /// Elements of the selected tensors (the bits-per-weight denominator).
    pub elements: u64,
    /// Bytes outside the allocated tensors: other tensors, index, metadata (estimated).
    pub fixed_bytes: u64,
    /// Bytes of the allocated tensors as chosen.
    pub allocated_bytes: u64,
    /// `fixed_bytes + allocated_bytes`, as bits per weight.
    pub predicted_bpw: f64,
    /// Sum of the choices' predicted KLD.
    pub predicted_kld: f64,
    /// Candidates in the order given.
    pub candidates: Vec<String>,
    /// One per allocated tensor, in name order.
    pub choices: Vec<Choice>,
    /// Candidates that could not encode a tensor: (tensor, codec, why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<(String, String, String)>,
    /// Allocated tensors the sensitivity file does not list (they take its median alpha).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmeasured: Vec<String>,
}

impl Allocation {
    /// The per-tensor codecs as `compress` overrides (exact names).
    pub fn overrides(&self) -> Vec<(String, String)> {
        self.choices
            .iter()
            .map(|c| (c.tensor.clone(), c.codec.clone()))
            .collect()
    }
}

/// The weight-only proxy's sensitivities, by tensor name: 1 for every tensor, `2 * n_layer` for
/// the output head (`output.weight`, `lm_head.weight`) or, when the model has none, for the
/// tied token embedding (`token_embd.weight`, `model.embed_tokens.weight`). `n_layer` is the
/// number of distinct block indices (`blk.N.`, `layers.N.`, `layer.N.`) among the names.
pub fn proxy_alpha(names: &[&str]) -> Vec<f64> {
    let mut blocks = std::collections::BTreeSet::new();
    for n in names {
        for pre in ["blk.", "layers.", "layer."] {
            if let Some(at) = n.find(pre) {
                let rest = &n[at + pre.len()..];
                if let Some(i) = rest.split('.').next().and_then(|d| d.parse::<u32>().ok()) {
                    blocks.insert(i);
                }
            }
        }
    }
    let heads = ["output.weight", "lm_head.weight"];
    let embeds = ["token_embd.weight", "model.embed_tokens.weight"];
    let has_head = names.iter().any(|n| heads.contains(n));
    let head_alpha = 2.0 * blocks.len().max(1) as f64;
    names
        .iter()
        .map(|n| {
            if heads.contains(n) || (!has_head && embeds.contains(n)) {
                head_alpha
            } else {
                1.0
            }
        })
        .collect()
}

/// Relative squared error from a signal-to-noise ratio in dB (exact: 0).
fn rel_sq(sqnr_db: f64) -> f64 {
    if sqnr_db.is_finite() {
        10f64.powf(-sqnr_db / 10.0)
    } else if sqnr_db > 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Bytes of the file beyond its tensors' payloads and parameters: the metadata as stored,
/// plus a per-tensor and per-chunk allowance for the index (each entry is well under these).
fn overhead_estimate(
    source: &dyn TensorSource,
    opts: &CompressOptions,
    tensors: u64,
    chunks: u64,
) -> u64 {
    // A whole model carries the model's own metadata (architecture, tokenizer); a subset does
    // not (as compress decides).
    let meta: u64 = if opts.filter.is_none() && opts.limit.is_none() {
        source
            .model_metadata()
            .iter()
            .map(|(k, v)| (k.len() + v.len() + 16) as u64)
            .sum()
    } else {
        0
    };
    meta + 4096 + tensors * 512 + chunks * 48 + opts.meta.len() as u64 * 64
}

/// Choose a codec per eligible tensor (floats of two or more dimensions) of `source` under
/// `alloc`'s budget; the other tensors are stored as `opts` says.
pub fn allocate(
    source: &dyn TensorSource,
    input: &Path,
    opts: &CompressOptions,
    alloc: &AllocOptions,
    cx: &Context<'_>,
) -> Result<Allocation> {
    cx.install(|| allocate_on_threads(source, input, opts, alloc, cx))
}

fn allocate_on_threads(
    source: &dyn TensorSource,
    input: &Path,
    opts: &CompressOptions,
    alloc: &AllocOptions,
    cx: &Context<'_>,
) -> Result<Allocation> {
    if alloc.candidates.is_empty() {
        return Err(Error::config(
            "--allocate needs at least one candidate codec",
        ));
    }
    if !opts.overrides.is_empty() || opts.mixed.is_some() || opts.base.is_some() {
        return Err(Error::config(
            "--target-bpw/--target-bytes choose every tensor's codec: they do not combine with --override, a mixed-tile config or --base",
        ));
    }
    let base_plan = Plan::new(source, input, opts)?;
    let eligible: Vec<usize> = base_plan
        .tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.info.dtype.is_float() && t.info.dims.len() >= 2)
        .map(|(i, _)| i)
        .collect();
    if eligible.is_empty() {
        return Err(
            Error::input("no float tensor of two or more dimensions to allocate").with_file(input),
        );
    }
    let elements: u64 = base_plan.tensors.iter().map(|t| t.info.numel()).sum();
    let target_bytes = match alloc.target {
        Target::Bytes(b) => b,
        Target::Bpw(b) if b > 0.0 && b.is_finite() => (b * elements as f64 / 8.0) as u64,
        Target::Bpw(b) => return Err(Error::config(format!("--target-bpw {b} is not a size"))),
    };
    let alphas: HashMap<&str, f64> = match &alloc.sensitivity {
        Some(s) => s
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.alpha))
            .collect(),
        None => HashMap::new(),
    };
    // One plan per candidate; each eligible tensor encoded by each.
    let plans = alloc
        .candidates
        .iter()
        .map(|c| {
            Plan::new(
                source,
                input,
                &CompressOptions {
                    codec: c.clone(),
                    ..opts.clone()
                },
            )
            .map_err(|e| Error::config(format!("candidate '{c}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut table: Vec<Vec<Option<Measured>>> = Vec::with_capacity(eligible.len());
    let mut refused = Vec::new();
    let mut chunks = 0u64;
    let total: u64 = eligible
        .iter()
        .map(|&i| base_plan.tensors[i].info.source_bytes)
        .sum();
    cx.event(Event::Start {
        total_bytes: total,
        tensors: eligible.len(),
    });
    for &i in &eligible {
        let info = &base_plan.tensors[i].info;
        cx.event(Event::Tensor { name: &info.name });
        cx.check_cancelled()?;
        let data = source.data(base_plan.tensors[i].index)?;
        let mut row = Vec::with_capacity(plans.len());
        for (plan, spec) in plans.iter().zip(&alloc.candidates) {
            let t = &plan.tensors[i];
            let mut n_chunks = 0u64;
            match encode_loaded(plan, t, &data, None, cx, &mut |_, _, _| {
                n_chunks += 1;
                Ok(())
            }) {
                Ok(e) => {
                    chunks = chunks.max(n_chunks);
                    let params = crate::compress::param_bytes(&e.encoded.pipeline.stages());
                    row.push(Some(Measured {
                        codec: spec.clone(),
                        bytes: e.encoded.encoded_bytes + params,
                        rel_sq: rel_sq(e.encoded.metrics.sqnr_db),
                    }));
                }
                Err(e) if e.kind == crate::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    refused.push((info.name.clone(), spec.clone(), e.to_string()));
                    row.push(None);
                }
            }
        }
        if row.iter().all(Option::is_none) {
            return Err(Error::config("no candidate codec can encode this tensor")
                .with_tensor(&info.name)
                .with_file(input));
        }
        table.push(row);
        cx.event(Event::Advance {
            bytes: info.source_bytes,
        });
    }
    cx.event(Event::Finish);
    // The tensors outside the allocation, through the default pipeline, as planned.
    let mut fixed: u64 = 0;
    for (i, t) in base_plan.tensors.iter().enumerate() {
        if eligible.binary_search(&i).is_err() {
            let data = source.data(t.index)?;
            let e = encode_loaded(&base_plan, t, &data, None, cx, &mut |_, _, _| Ok(()))
                .map_err(|e| e.with_tensor(&t.info.name).with_file(input))?;
            fixed += e.encoded.encoded_bytes
                + crate::compress::param_bytes(&e.encoded.pipeline.stages());
        }
    }
    let total_chunks = (elements / opts.chunk_elems.max(1) + base_plan.tensors.len() as u64) * 2;
    fixed += overhead_estimate(
        source,
        opts,
        base_plan.tensors.len() as u64,
        total_chunks.max(chunks),
    );
    let budget = target_bytes.checked_sub(fixed).ok_or_else(|| {
        Error::config(format!(
            "a budget of {target_bytes} bytes leaves nothing for the allocated tensors: the rest of the file takes about {fixed}"
        ))
    })?;
    let names: Vec<&str> = eligible
        .iter()
        .map(|&i| base_plan.tensors[i].info.name.as_str())
        .collect();
    let all_names: Vec<&str> = base_plan
        .tensors
        .iter()
        .map(|t| t.info.name.as_str())
        .collect();
    let proxy: HashMap<&str, f64> = all_names
        .iter()
        .copied()
        .zip(proxy_alpha(&all_names))
        .collect();
    // A tensor the sensitivity file does not cover counts as a typical one: the median.
    let median = {
        let mut v: Vec<f64> = alphas.values().copied().collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(1.0)
    };
    let unmeasured: Vec<String> = match &alloc.sensitivity {
        Some(_) => names
            .iter()
            .filter(|n| !alphas.contains_key(*n))
            .map(|n| n.to_string())
            .collect(),
        None => Vec::new(),
    };
    let alpha = |k: usize| -> f64 {
        match &alloc.sensitivity {
            Some(_) => alphas.get(names[k]).copied().unwrap_or(median),
            None => proxy[names[k]],
        }
    };
    let pick = knapsack(&table, &(0..names.len()).map(alpha).collect::<Vec<_>>(), budget)
        .ok_or_else(|| {
            let least: u64 = table
                .iter()
                .map(|r| r.iter().flatten().map(|m| m.bytes).min().unwrap_or(0))
                .sum();
            Error::config(format!(
                "the budget of {target_bytes} bytes is below the smallest candidate allocation ({} bytes with the rest of the file): give smaller --candidates (e.g. grid:n=4,group=32)",
                least + fixed
            ))
        })?;
    let choices: Vec<Choice> = pick
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            let m = table[k][c].as_ref().expect("a measured candidate");
            Choice {
                tensor: names[k].to_string(),
                codec: m.codec.clone(),
                bytes: m.bytes,
                rel_sq: m.rel_sq,
                alpha: alpha(k),
                predicted_kld: alpha(k) * m.rel_sq,
            }
        })
        .collect();
    let allocated: u64 = choices.iter().map(|c| c.bytes).sum();
    Ok(Allocation {
        method: if alloc.sensitivity.is_some() {
            "sensitivity"
        } else {
            "proxy"
        },
        sensitivity_source: alloc.sensitivity.as_ref().map(|s| {
            format!(
                "{}; {} windows of {} from corpus token {} of {} ({})",
                s.model,
                s.slice.windows,
                s.slice.ctx,
                s.slice.first_token,
                s.slice.corpus,
                s.method
            )
        }),
        target_bytes,
        elements,
        fixed_bytes: fixed,
        allocated_bytes: allocated,
        predicted_bpw: (fixed + allocated) as f64 * 8.0 / elements as f64,
        predicted_kld: choices.iter().map(|c| c.predicted_kld).sum(),
        candidates: alloc.candidates.clone(),
        choices,
        refused,
        unmeasured,
    })
}

/// Multiple-choice knapsack: one option per row minimising `sum alpha * rel_sq` with
/// `sum bytes <= budget`; sizes rounded up to budget / [`UNITS`] steps. Ties go to the smaller
/// option. `None` when even the smallest options do not fit.
fn knapsack(table: &[Vec<Option<Measured>>], alpha: &[f64], budget: u64) -> Option<Vec<usize>> {
    let unit = (budget / UNITS).max(1);
    let cap = (budget / unit) as usize;
    let cost = |m: &Measured| m.bytes.div_ceil(unit) as usize;
    const INF: f64 = f64::INFINITY;
    // best[c] = least error of the rows so far within c units.
    let mut best = vec![0f64; cap + 1];
    let mut choice = vec![vec![u8::MAX; cap + 1]; table.len()];
    for (r, row) in table.iter().enumerate() {
        let mut next = vec![INF; cap + 1];
        for (k, m) in row.iter().enumerate() {
            let Some(m) = m else { continue };
            let w = cost(m);
            if w > cap {
                continue;
            }
            let v = alpha[r] * m.rel_sq;
            for c in w..=cap {
                let cand = best[c - w] + v;
                if cand < next[c] {
                    next[c] = cand;
                    choice[r][c] = k as u8;
                }
            }
        }
        best = next;
    }
    let mut c = (0..=cap)
        .min_by(|&a, &b| best[a].total_cmp(&best[b]).then(a.cmp(&b)))
        .filter(|&c| best[c].is_finite())?;
    let mut out = vec![0usize; table.len()];
    for r in (0..table.len()).rev() {
        let k = choice[r][c];
        debug_assert_ne!(k, u8::MAX);
        out[r] = k as usize;
        let m = table[r][k as usize].as_ref().expect("chosen");
        c -= cost(m);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(bytes: u64, rel_sq: f64) -> Option<Measured> {
        Some(Measured {
            codec: String::new(),
            bytes,
            rel_sq,
        })
    }

    #[test]
    fn proxy_weights_the_head() {
        let tied = [
            "blk.0.attn_q.weight",
            "blk.1.attn_q.weight",
            "token_embd.weight",
        ];
        assert_eq!(proxy_alpha(&tied), vec![1.0, 1.0, 4.0]);
        let untied = ["blk.0.ffn_up.weight", "output.weight", "token_embd.weight"];
        assert_eq!(proxy_alpha(&untied), vec![1.0, 2.0, 1.0]);
        let bert = [
            "encoder.layer.0.attention.self.query.weight",
            "embeddings.word_embeddings.weight",
        ];
        assert_eq!(proxy_alpha(&bert), vec![1.0, 1.0]);
    }

    #[test]
    fn knapsack_spends_bytes_where_alpha_is() {
        // Two tensors, two options each (small and lossy, big and exact-ish).
        let t = vec![vec![m(10, 1.0), m(20, 0.1)], vec![m(10, 1.0), m(20, 0.1)]];
        // Room for one upgrade: it goes to the sensitive tensor.
        assert_eq!(knapsack(&t, &[1.0, 5.0], 30), Some(vec![0, 1]));
        assert_eq!(knapsack(&t, &[5.0, 1.0], 30), Some(vec![1, 0]));
        // Room for both, and for neither.
        assert_eq!(knapsack(&t, &[1.0, 1.0], 40), Some(vec![1, 1]));
        assert_eq!(knapsack(&t, &[1.0, 1.0], 19), None);
        // A refused candidate is never chosen.
        let t = vec![vec![None, m(20, 0.1)], vec![m(10, 1.0), m(20, 0.1)]];
        assert_eq!(knapsack(&t, &[1.0, 1.0], 30), Some(vec![1, 0]));
    }

    #[test]
    fn knapsack_is_exact_on_small_cases() {
        // Brute force over 3 rows x 3 options.
        let t: Vec<Vec<Option<Measured>>> = (0..3)
            .map(|r| {
                (0..3)
                    .map(|k| {
                        m(
                            5 + 7 * k as u64 + r as u64,
                            1.0 / (1.0 + k as f64 * (r + 1) as f64),
                        )
                    })
                    .collect()
            })
            .collect();
        let alpha = [1.0, 3.0, 0.5];
        for budget in [15u64, 25, 33, 40, 60] {
            let mut best = (f64::INFINITY, None);
            for a in 0..3 {
                for b in 0..3 {
                    for c in 0..3 {
                        let pick = [a, b, c];
                        let bytes: u64 =
                            (0..3).map(|r| t[r][pick[r]].as_ref().unwrap().bytes).sum();
                        let v: f64 = (0..3)
                            .map(|r| alpha[r] * t[r][pick[r]].as_ref().unwrap().rel_sq)
                            .sum();
                        if bytes <= budget && v < best.0 {
                            best = (v, Some(pick.to_vec()));
                        }
                    }
                }
            }
            let got = knapsack(&t, &alpha, budget);
            match (&best.1, &got) {
                (None, None) => {}
                (Some(_), Some(g)) => {
                    let v: f64 = (0..3)
                        .map(|r| alpha[r] * t[r][g[r]].as_ref().unwrap().rel_sq)
                        .sum();
                    assert!(
                        (v - best.0).abs() < 1e-12,
                        "budget {budget}: {v} vs {}",
                        best.0
                    );
                }
                _ => panic!("budget {budget}: {best:?} vs {got:?}"),
            }
        }
    }
}
