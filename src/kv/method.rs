//! KV methods and policies: what `--lossy kivi:bits=4`, `--lossless gear-auto`, `eval ppl --kv
//! SPEC` and a policy file mean, as codec pipelines per (layer, K/V) and the reference's
//! value transforms (clip, truncate, fake quant) that run before a pipeline.
//!
//! Method syntax: `NAME[:key=value,...]`. Lossless: `zstd[:level=L]`, `gear[:level=L]`,
//! `gear-delta`, `gear-auto`, `byteplane`, `raw`. Lossy with real codes (codec `kvq`): `quant:bits=B` (the
//! reference's per-tensor symmetric quantizer), `kivi:bits=B[,group=G]` (keys per channel over G
//! tokens, values per G elements of a token, asymmetric), `blocknorm:bits=B[,block=S]`,
//! `bound:abs=E` or `bound:rel=R` (guaranteed error bound). Every kvq method takes
//! `outliers=F` (fraction kept exact), `eb=E` (an absolute bound checked after decoding) and
//! `rot=hadamard` (each head's vector rotated by a Walsh-Hadamard transform before quantizing).
//! Reference transforms stored through a lossless method (`store=`, default `gear-delta`):
//! `truncate:keep=K`, `clip[:method=percentile|sigma,lo=1,hi=99,sigma=3]`, `fake-quant:bits=B`;
//! `clip-quant:bits=B[,...clip options]` clips, then quantizes with real codes.
//! `blocknorm-ref:block=S,bits=B,topk=R[,scale-bytes=2,topk-extra=4,index-bytes=4]` is the
//! reference's block-norm analysis, for `kv analyze` and `kv sweep` only.
//! Any codec pipeline of the registry (`kvq:group=token,bits=4`) is accepted as is.

use crate::codec::Pipeline;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// K or V.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    /// Keys.
    K,
    /// Values.
    V,
}

/// How clip bounds are found (the reference's `--clip-method`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clip {
    /// `[P(lo), P(hi)]` of the finite values, numpy's linear interpolation.
    Percentile {
        /// Lower percentile (0-100).
        lo: f64,
        /// Upper percentile.
        hi: f64,
    },
    /// `mean ± k·std` of the finite values (population std).
    Sigma {
        /// Standard deviations either side of the mean.
        k: f64,
    },
}

/// A value transform that runs before the pipeline (the reference's lossy steps whose result is
/// stored losslessly).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// Keep `keep` mantissa bits, rounding toward zero; NaN and inf pass unchanged.
    Truncate {
        /// Mantissa bits kept.
        keep: u32,
    },
    /// Clip to the bounds.
    Clip(Clip),
    /// The reference's fake quant: per-tensor symmetric codes, dequantized to the dtype.
    FakeQuant {
        /// Code width.
        bits: u32,
    },
    /// The reference's block-norm analysis (normalized codes stored losslessly plus side
    /// metadata counted raw): `kv analyze` and `kv sweep` only, as the stored values are not
    /// the reconstruction.
    BlockNormRef {
        /// Elements per block along head_dim.
        block: usize,
        /// Code width.
        bits: u32,
        /// Share of blocks (by energy) restored with an f32 scale.
        topk: f64,
        /// Bytes per stored scale (2: f16, 4: f32).
        scale_bytes: u32,
        /// Extra bytes per top-k block for its f32 scale (0: top-k off).
        topk_extra_bytes: u32,
        /// Bytes per top-k block index.
        index_bytes: u32,
    },
}

/// One method resolved for one tensor kind: optional transforms, then a pipeline.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Applied in order to the values before encoding.
    pub transforms: Vec<Transform>,
    /// The codec pipeline (not yet bound to a tensor).
    pub pipeline: Pipeline,
}

impl Resolved {
    /// Whether the stored values are the dump's exactly.
    pub fn lossless(&self) -> bool {
        self.transforms.is_empty() && self.pipeline.lossless()
    }
}

/// A parsed method, for K and for V (they differ for `kivi` only).
#[derive(Debug, Clone)]
pub struct Method {
    /// As written.
    pub spec: String,
    k: Resolved,
    v: Resolved,
}

impl Method {
    /// Parse a method spec (see the module docs).
    pub fn parse(spec: &str) -> Result<Method> {
        let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let mut opts = BTreeMap::new();
        for kv in rest.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Error::config(format!(
                    "KV method '{spec}': option '{kv}' is not key=value"
                ))
            })?;
            opts.insert(k.to_string(), v.to_string());
        }
        let mut o = Opts { spec, map: opts };
        let both = |p: Pipeline, t: Vec<Transform>| {
            let r = Resolved {
                transforms: t,
                pipeline: p,
            };
            (r.clone(), r)
        };
        let (k, v) = match name {
            "raw" | "byteplane" => both(Pipeline::parse(name)?, vec![]),
            "gear" | "gear-delta" | "gear-auto" => {
                let level = o.int("level", 3, -7, 22)?;
                let delta = match name {
                    "gear-delta" => "token",
                    "gear-auto" => "auto",
                    _ => "none",
                };
                both(
                    Pipeline::parse(&format!("gear:delta={delta},level={level}"))?,
                    vec![],
                )
            }
            "zstd" => {
                // One frame of the raw bytes (kv.md §3.1), stored raw when it would not shrink.
                let level = o.int("level", 3, -7, 22)?;
                both(
                    Pipeline::parse(&format!("gear:split=none,level={level}"))?,
                    vec![],
                )
            }
            "quant" => {
                let bits = o.int("bits", 8, 1, 16)?;
                let extra = o.kvq_extra()?;
                both(
                    Pipeline::parse(&format!("kvq:group=tensor,bits={bits}{extra}"))?,
                    vec![],
                )
            }
            "kivi" => {
                let bits = o.int("bits", 4, 1, 16)?;
                let g = o.int("group", 64, 1, 1 << 20)?;
                let extra = o.kvq_extra()?;
                (
                    Resolved {
                        transforms: vec![],
                        pipeline: Pipeline::parse(&format!(
                            "kvq:group=channel,bits={bits},size={g}{extra}"
                        ))?,
                    },
                    Resolved {
                        transforms: vec![],
                        pipeline: Pipeline::parse(&format!(
                            "kvq:group=token,bits={bits},size={g}{extra}"
                        ))?,
                    },
                )
            }
            "blocknorm" => {
                let bits = o.int("bits", 10, 2, 16)?;
                let b = o.int("block", 64, 1, 1 << 20)?;
                let extra = o.kvq_extra()?;
                both(
                    Pipeline::parse(&format!("kvq:group=block,bits={bits},size={b}{extra}"))?,
                    vec![],
                )
            }
            "bound" => {
                let abs = o.float("abs")?;
                let rel = o.float("rel")?;
                let extra = o.kvq_extra()?;
                let b = match (abs, rel) {
                    (Some(a), None) if a > 0.0 => format!("eb={a}"),
                    (None, Some(r)) if r > 0.0 => format!("rel-eb={r}"),
                    _ => {
                        return Err(Error::config(format!(
                            "KV method '{spec}': bound needs one of abs=E or rel=R, positive"
                        )))
                    }
                };
                both(
                    Pipeline::parse(&format!("kvq:group=step,{b}{extra}"))?,
                    vec![],
                )
            }
            "truncate" => {
                let keep = o.int("keep", 6, 0, 23)? as u32;
                let store = o.store()?;
                both(store, vec![Transform::Truncate { keep }])
            }
            "fake-quant" => {
                let bits = o.int("bits", 8, 2, 16)? as u32;
                let store = o.store()?;
                both(store, vec![Transform::FakeQuant { bits }])
            }
            "clip" => {
                let c = o.clip()?;
                let store = o.store()?;
                both(store, vec![Transform::Clip(c)])
            }
            "blocknorm-ref" => {
                let block = o.int("block", 64, 1, 1 << 20)? as usize;
                let bits = o.int("bits", 10, 2, 16)? as u32;
                let topk = o.float("topk")?.unwrap_or(0.8);
                let scale_bytes = o.int("scale-bytes", 2, 2, 4)? as u32;
                let topk_extra_bytes = o.int("topk-extra", 4, 0, 8)? as u32;
                let index_bytes = o.int("index-bytes", 4, 0, 8)? as u32;
                if topk > 1.0 || (scale_bytes != 2 && scale_bytes != 4) {
                    return Err(Error::config(format!(
                        "KV method '{spec}': topk is a share in 0..=1 and scale-bytes 2 or 4"
                    )));
                }
                let store = o.store()?;
                both(
                    store,
                    vec![Transform::BlockNormRef {
                        block,
                        bits,
                        topk,
                        scale_bytes,
                        topk_extra_bytes,
                        index_bytes,
                    }],
                )
            }
            "clip-quant" => {
                let c = o.clip()?;
                let bits = o.int("bits", 8, 1, 16)?;
                let extra = o.kvq_extra()?;
                both(
                    Pipeline::parse(&format!("kvq:group=tensor,bits={bits}{extra}"))?,
                    vec![Transform::Clip(c)],
                )
            }
            _ => {
                if crate::codec::entry_by_name(name).is_none() {
                    return Err(Error::config(format!(
                        "KV method '{name}' is unknown: zstd, gear, gear-delta, gear-auto, byteplane, raw, quant, kivi, blocknorm, bound, truncate, clip, clip-quant, fake-quant, or a codec pipeline"
                    )));
                }
                o.map.clear();
                both(Pipeline::parse(spec)?, vec![])
            }
        };
        o.finish()?;
        Ok(Method {
            spec: spec.to_string(),
            k,
            v,
        })
    }

    /// The resolution for keys or values.
    pub fn for_kind(&self, w: Which) -> &Resolved {
        match w {
            Which::K => &self.k,
            Which::V => &self.v,
        }
    }

    /// This method with `key=value` added unless the spec sets `key` already (the command
    /// line's `--bits` and `--zstd-level` fill in what a method leaves out).
    pub fn with_default(&self, key: &str, value: &str) -> Result<Method> {
        let name = self.spec.split(':').next().unwrap_or_default();
        let has = self
            .spec
            .split_once(':')
            .is_some_and(|(_, o)| o.split(',').any(|kv| kv.split('=').next() == Some(key)));
        if has {
            return Ok(self.clone());
        }
        let spec = if self.spec.contains(':') {
            format!("{},{key}={value}", self.spec)
        } else {
            format!("{name}:{key}={value}")
        };
        Method::parse(&spec)
    }

    /// The reference's block-norm analysis parameters, when this is `blocknorm-ref`.
    pub fn blocknorm_ref(&self) -> Option<Transform> {
        self.k
            .transforms
            .iter()
            .find(|t| matches!(t, Transform::BlockNormRef { .. }))
            .copied()
    }

    /// Whether both K and V are stored exactly.
    pub fn lossless(&self) -> bool {
        self.k.lossless() && self.v.lossless()
    }
}

struct Opts<'a> {
    spec: &'a str,
    map: BTreeMap<String, String>,
}

impl Opts<'_> {
    fn int(&mut self, key: &str, default: i64, lo: i64, hi: i64) -> Result<i64> {
        match self.map.remove(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|x| (lo..=hi).contains(x))
                .ok_or_else(|| {
                    Error::config(format!(
                        "KV method '{}': {key}={v} is not an integer in {lo}..={hi}",
                        self.spec
                    ))
                }),
        }
    }

    fn float(&mut self, key: &str) -> Result<Option<f64>> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(Some)
                .ok_or_else(|| {
                    Error::config(format!(
                        "KV method '{}': {key}={v} is not a non-negative number",
                        self.spec
                    ))
                }),
        }
    }

    /// `outliers=` and `eb=`, as kvq options.
    fn kvq_extra(&mut self) -> Result<String> {
        let mut s = String::new();
        if let Some(f) = self.float("outliers")? {
            s.push_str(&format!(",outliers={f}"));
        }
        if let Some(e) = self.float("eb")? {
            s.push_str(&format!(",eb={e}"));
        }
        match self.map.remove("rot").as_deref() {
            None | Some("none") => {}
            Some("hadamard") => s.push_str(",rot=hadamard"),
            Some(r) => {
                return Err(Error::config(format!(
                    "KV method '{}': rot={r} (none or hadamard)",
                    self.spec
                )))
            }
        }
        Ok(s)
    }

    fn store(&mut self) -> Result<Pipeline> {
        let s = self
            .map
            .remove("store")
            .unwrap_or_else(|| "gear-delta".into());
        let m = Method::parse(&s)?;
        if !m.lossless() {
            return Err(Error::config(format!(
                "KV method '{}': store={s} is not a lossless method",
                self.spec
            )));
        }
        Ok(m.k.pipeline)
    }

    fn clip(&mut self) -> Result<Clip> {
        let method = self
            .map
            .remove("method")
            .unwrap_or_else(|| "percentile".into());
        match method.as_str() {
            "percentile" => {
                let lo = self.float("lo")?.unwrap_or(1.0);
                let hi = self.float("hi")?.unwrap_or(99.0);
                if !(lo < hi && hi <= 100.0) {
                    return Err(Error::config(format!(
                        "KV method '{}': percentiles lo={lo} hi={hi} need lo < hi <= 100",
                        self.spec
                    )));
                }
                Ok(Clip::Percentile { lo, hi })
            }
            "sigma" => Ok(Clip::Sigma {
                k: self.float("sigma")?.unwrap_or(3.0),
            }),
            m => Err(Error::config(format!(
                "KV method '{}': clip method '{m}' (percentile or sigma)",
                self.spec
            ))),
        }
    }

    fn finish(self) -> Result<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(Error::config(format!(
                "KV method '{}' has no option '{k}'",
                self.spec
            ))),
        }
    }
}

/// Which method each (layer, K/V) gets: the reference's "first N layers lossless, the rest
/// lossy", with per-layer rules on top (a policy file).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Layers `< lossless_first_n` use `lossless`.
    pub lossless_first_n: u32,
    /// The lossless method.
    pub lossless: Method,
    /// The method of the other layers; `None`: every layer lossless.
    pub lossy: Option<Method>,
    /// Per-layer rules (K, V), taking precedence.
    pub layers: BTreeMap<u32, (Method, Method)>,
    /// Tokens at positions `< sink_tokens` are kept exact in lossy layers (attention sinks).
    pub sink_tokens: u64,
    /// The last `recent_tokens` tokens of a run are kept exact in lossy layers.
    pub recent_tokens: u64,
}

/// A policy file (JSON): `{"lossless": "gear-auto", "lossless_first_n": 2, "lossy":
/// "kivi:bits=4", "layers": {"5": "kivi:bits=8", "6-9": {"k": "kivi:bits=8", "v": "kivi:bits=4"}},
/// "sink_tokens": 4, "recent_tokens": 0}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    lossless: Option<String>,
    lossless_first_n: Option<u32>,
    lossy: Option<String>,
    #[serde(default)]
    layers: BTreeMap<String, LayerRule>,
    sink_tokens: Option<u64>,
    recent_tokens: Option<u64>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum LayerRule {
    Both(String),
    Split { k: String, v: String },
}

impl Policy {
    /// The policy of the command-line flags.
    pub fn new(lossless: &str, lossless_first_n: u32, lossy: Option<&str>) -> Result<Policy> {
        let lossless = Method::parse(lossless)?;
        if !lossless.lossless() {
            return Err(Error::config(format!(
                "--lossless {}: not a lossless method",
                lossless.spec
            )));
        }
        Ok(Policy {
            lossless_first_n,
            lossless,
            lossy: lossy.map(Method::parse).transpose()?,
            layers: BTreeMap::new(),
            sink_tokens: 0,
            recent_tokens: 0,
        })
    }

    /// Token ranges of a tensor kept exact when its method is lossy: the sinks and the recent
    /// window, for a tensor holding positions `seq_start .. seq_start + seq_len` of a run whose
    /// last position is `run_end - 1`. Relative to the tensor, sorted, disjoint.
    pub fn kept(&self, seq_start: u64, seq_len: u64, run_end: u64) -> Vec<(u64, u64)> {
        let end = seq_start.saturating_add(seq_len);
        let mut r: Vec<(u64, u64)> = Vec::new();
        let sink = self.sink_tokens.min(end);
        if sink > seq_start {
            r.push((0, sink - seq_start));
        }
        let recent = run_end.saturating_sub(self.recent_tokens).max(seq_start);
        if self.recent_tokens > 0 && recent < end {
            let a = recent - seq_start;
            match r.last_mut() {
                Some(last) if last.1 >= a => last.1 = last.1.max(seq_len),
                _ => r.push((a, seq_len)),
            }
        }
        r
    }

    /// Read a policy file; its fields override the flags' values passed in `base`.
    pub fn from_json(text: &str, base: Policy) -> Result<Policy> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let f: PolicyFile = serde_path_to_error::deserialize(de)
            .map_err(|e| Error::config(format!("KV policy: {e}")))?;
        let mut p = base;
        if let Some(l) = f.lossless {
            p = Policy {
                lossless: Policy::new(&l, 0, None)?.lossless,
                ..p
            };
        }
        if let Some(n) = f.lossless_first_n {
            p.lossless_first_n = n;
        }
        if let Some(l) = f.lossy {
            p.lossy = Some(Method::parse(&l)?);
        }
        if let Some(n) = f.sink_tokens {
            p.sink_tokens = n;
        }
        if let Some(n) = f.recent_tokens {
            p.recent_tokens = n;
        }
        for (range, rule) in f.layers {
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (a, b),
                None => (range.as_str(), range.as_str()),
            };
            let (a, b): (u32, u32) = match (a.trim().parse(), b.trim().parse()) {
                (Ok(a), Ok(b)) if a <= b && b - a < 1 << 16 => (a, b),
                _ => {
                    return Err(Error::config(format!(
                        "KV policy: layer range '{range}' is not N or A-B"
                    )))
                }
            };
            let (k, v) = match rule {
                LayerRule::Both(s) => (Method::parse(&s)?, Method::parse(&s)?),
                LayerRule::Split { k, v } => (Method::parse(&k)?, Method::parse(&v)?),
            };
            for l in a..=b {
                p.layers.insert(l, (k.clone(), v.clone()));
            }
        }
        Ok(p)
    }

    /// The method of one layer's keys or values.
    pub fn method(&self, layer: u32, w: Which) -> &Resolved {
        if let Some((k, v)) = self.layers.get(&layer) {
            return match w {
                Which::K => k.for_kind(Which::K),
                Which::V => v.for_kind(Which::V),
            };
        }
        match &self.lossy {
            Some(m) if layer >= self.lossless_first_n => m.for_kind(w),
            _ => self.lossless.for_kind(w),
        }
    }

    /// The method spec of one layer's keys or values, as written.
    pub fn spec(&self, layer: u32, w: Which) -> &str {
        if let Some((k, v)) = self.layers.get(&layer) {
            return match w {
                Which::K => &k.spec,
                Which::V => &v.spec,
            };
        }
        match &self.lossy {
            Some(m) if layer >= self.lossless_first_n => &m.spec,
            _ => &self.lossless.spec,
        }
    }

    /// The policy as JSON, for the `.tpk`'s metadata and reports.
    pub fn to_json(&self) -> serde_json::Value {
        let layers: BTreeMap<String, serde_json::Value> = self
            .layers
            .iter()
            .map(|(l, (k, v))| (l.to_string(), serde_json::json!({"k": k.spec, "v": v.spec})))
            .collect();
        serde_json::json!({
            "lossless": self.lossless.spec,
            "lossless_first_n": self.lossless_first_n,
            "lossy": self.lossy.as_ref().map(|m| m.spec.clone()),
            "layers": layers,
            "sink_tokens": self.sink_tokens,
            "recent_tokens": self.recent_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_ranges() {
        let mut p = Policy::new("gear-auto", 2, Some("kivi:bits=4")).unwrap();
        p.sink_tokens = 4;
        assert_eq!(p.kept(0, 512, 514), [(0, 4)]);
        assert_eq!(p.kept(512, 1, 514), []);
        p.recent_tokens = 2;
        assert_eq!(p.kept(0, 512, 514), [(0, 4)]);
        assert_eq!(p.kept(512, 1, 514), [(0, 1)]);
        assert_eq!(p.kept(0, 512, 512), [(0, 4), (510, 512)]);
        assert_eq!(p.kept(0, 5, 5), [(0, 5)]);
        assert_eq!(p.kept(2, 3, 5), [(0, 3)]);
    }

    #[test]
    fn policies_parse_and_refuse_nonsense() {
        let base = Policy::new("gear-auto", 2, None).unwrap();
        let p = Policy::from_json(
            r#"{"lossy": "kivi:bits=4", "layers": {"5": "quant:bits=8", "6-7": {"k": "kivi:bits=8", "v": "bound:rel=0.01"}}, "sink_tokens": 4}"#,
            base.clone(),
        )
        .unwrap();
        assert_eq!(
            p.spec(0, Which::K),
            "gear-auto:level=3".replace(":level=3", "")
        );
        assert_eq!(p.spec(3, Which::V), "kivi:bits=4");
        assert_eq!(p.spec(5, Which::K), "quant:bits=8");
        assert_eq!(p.spec(7, Which::V), "bound:rel=0.01");
        assert!(!p.method(3, Which::K).lossless());
        assert!(p.method(1, Which::K).lossless());
        for bad in [
            r#"{"lossy": "kivi:bits=99"}"#,
            r#"{"layers": {"9-3": "quant"}}"#,
            r#"{"layers": {"x": "quant"}}"#,
            r#"{"lossles": "gear"}"#,
            r#"{"lossless": "quant:bits=8"}"#,
            r#"{"lossy": "nope"}"#,
            r#"{"lossy": "kivi:bitz=4"}"#,
        ] {
            assert!(Policy::from_json(bad, base.clone()).is_err(), "{bad}");
        }
        assert!(Method::parse("truncate:keep=6,store=kivi").is_err());
        assert!(Method::parse("clip:method=percentile,lo=99,hi=1").is_err());
    }
}
