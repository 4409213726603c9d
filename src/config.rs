//! Compression configs: the JSON files of `compression_configs/` (`--config FILE` on `compress`
//! and `analyze`), validated into a [`Config`] with its seed resolved.
//!
//! Schema (the quantization analyzer's, which tenpak grew from):
//!
//! ```json
//! {
//!   "algorithm": "none",
//!   "quantization_formats": ["mxfp4", "nvfp4", "bf16", "bfp8", "bfp4", "bfp2", "fp0"],
//!   "seed": 123,
//!   "random_seed": false,
//!   "params": {}
//! }
//! ```
//!
//! Every field is optional. `algorithm` defaults to `none`; `quantization_formats` to every lossy
//! format ([`DEFAULT_FORMATS`]); `params` to `{}`. Seed resolution, in order:
//! 1. `seed` a non-zero integer: used (`seed_source: "config"`);
//! 2. `seed` `0` or `"random"`: a fresh random seed (`"random"`);
//! 3. `random_seed: true`: a fresh random seed (`"random"`);
//! 4. `params.seed` an integer: used (`"params"`), `0` meaning a fresh random seed (`"random"`);
//! 5. otherwise: `mixed-tile-greedy` draws a fresh random seed (`"random"`: its documented
//!    default `0` means random), `mixed-tile-random` uses seed 0 (`"default"`: documented as
//!    deterministic), and the other algorithms, which draw no random numbers, have none
//!    (`seed: null`, `seed_source: "none"`).
//!
//! Unknown top-level keys, wrong types, unknown algorithms and unknown formats are errors naming
//! the field; `params` an algorithm does not use are ignored with a warning naming them.

use crate::codec::Pipeline;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// Formats analyzed when a config (or `-c all`) names none: every lossy format of the registry
/// that the analyzer's users know, in its order.
pub const DEFAULT_FORMATS: &[&str] = &["mxfp4", "nvfp4", "bf16", "bfp8", "bfp4", "bfp2", "fp0"];

/// A compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Quantize each tensor as stored.
    None,
    /// Quantize the tensor with its axes reversed (then transpose back on decode).
    Transpose,
    /// Per tile, the cheapest format whose own tile score passes.
    MixedThreshold,
    /// Seeded random-order per-tile replacements under the tensor's metric (alias `mixed-tile`).
    MixedGreedy,
    /// The best of `iters` seeded random assignments.
    MixedRandom,
    /// Moves in order of least added error per byte saved, under a threshold or a budget.
    MixedOptimal,
}

impl Algorithm {
    /// Config name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::None => "none",
            Algorithm::Transpose => "transpose",
            Algorithm::MixedThreshold => "mixed-tile-threshold",
            Algorithm::MixedGreedy => "mixed-tile-greedy",
            Algorithm::MixedRandom => "mixed-tile-random",
            Algorithm::MixedOptimal => "mixed-tile-optimal",
        }
    }

    /// Every algorithm, by config name (`mixed-tile` is an alias of `mixed-tile-greedy`).
    pub fn parse(s: &str) -> Option<Algorithm> {
        Some(match s {
            "none" => Algorithm::None,
            "transpose" => Algorithm::Transpose,
            "mixed-tile-threshold" => Algorithm::MixedThreshold,
            "mixed-tile-greedy" | "mixed-tile" => Algorithm::MixedGreedy,
            "mixed-tile-random" => Algorithm::MixedRandom,
            "mixed-tile-optimal" => Algorithm::MixedOptimal,
            _ => return None,
        })
    }

    /// Whether this is a mixed-tile algorithm.
    pub fn is_mixed(self) -> bool {
        !matches!(self, Algorithm::None | Algorithm::Transpose)
    }

    /// Params this algorithm reads.
    fn known_params(self) -> &'static [&'static str] {
        const BASE: &[&str] = &["metric", "threshold", "formats", "tile_formats"];
        match self {
            Algorithm::None | Algorithm::Transpose => &["prune"],
            Algorithm::MixedThreshold | Algorithm::MixedGreedy => BASE,
            Algorithm::MixedRandom => &["metric", "threshold", "formats", "tile_formats", "iters"],
            Algorithm::MixedOptimal => &[
                "metric",
                "threshold",
                "formats",
                "tile_formats",
                "target_bpw",
                "target_bytes",
                "scope",
            ],
        }
    }
}

const ALGORITHMS: &str = "none, transpose, mixed-tile-threshold, mixed-tile-greedy (mixed-tile), mixed-tile-random, mixed-tile-optimal";

/// Tile formats the seed's mixed-tile algorithms take by default (from `quantization_formats`);
/// `params.formats` may also name the extensions fp0, mxfp4 and nvfp4.
pub const MIXED_DEFAULT_FORMATS: &[&str] = &["bf16", "bfp8", "bfp4", "bfp2"];

/// A budget instead of a threshold (`mixed-tile-optimal`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// Bits per weight (payload bytes x 8 / elements).
    Bpw(f64),
    /// Payload bytes.
    Bytes(u64),
}

/// Whether one threshold or budget holds per tensor or for the whole model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Each tensor on its own.
    Tensor,
    /// Shared across tensors: bytes go where they buy the most.
    Model,
}

/// The resolved parameters of a mixed-tile algorithm.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MixedSpec {
    /// The algorithm.
    #[serde(skip)]
    pub algorithm: Algorithm,
    /// `pcc`, `mae` or `atol`.
    #[serde(serialize_with = "metric_name")]
    pub metric: crate::assign::Metric,
    /// The threshold on `metric`.
    pub threshold: f64,
    /// Candidate tile formats, in order (greedy starts from the first).
    pub formats: Vec<String>,
    /// Samples of `mixed-tile-random`.
    pub iters: usize,
    /// The seed (greedy, random).
    pub seed: u64,
    /// A budget instead of the threshold (`mixed-tile-optimal`).
    pub budget: Option<Budget>,
    /// Per tensor or whole model (`mixed-tile-optimal`).
    pub scope: Scope,
}

fn metric_name<S: serde::Serializer>(
    m: &crate::assign::Metric,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

/// A validated config with its seed resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Formats to quantize with (pipeline specs), in the config's order.
    pub formats: Vec<String>,
    /// The seed in use, if any.
    pub seed: Option<u64>,
    /// Where the seed came from: `config`, `params`, `random` or `none`.
    pub seed_source: &'static str,
    /// The `params` object as given.
    pub params: Map<String, Value>,
    /// Warnings (ignored params).
    pub warnings: Vec<String>,
    /// The mixed-tile algorithm's resolved parameters (mixed-tile algorithms only).
    pub mixed: Option<MixedSpec>,
    /// `params.prune` (algorithms `none` and `transpose`): a pruning rule for `compress`.
    pub prune: Option<crate::prune::Prune>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            algorithm: Algorithm::None,
            formats: DEFAULT_FORMATS.iter().map(|s| s.to_string()).collect(),
            seed: None,
            seed_source: "none",
            params: Map::new(),
            warnings: Vec::new(),
            mixed: None,
            prune: None,
        }
    }
}

fn field_err(file: &str, field: &str, msg: impl std::fmt::Display) -> Error {
    Error::config(format!("{file}: field '{field}': {msg}"))
}

/// A fresh random seed (1..=2^53 - 1, so it survives a JSON round trip through a double).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() & ((1 << 53) - 1)).max(1)
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("read the config", e).with_file(path))?;
        Config::parse(&text, &path.display().to_string()).map_err(|e| e.with_file(path))
    }

    /// Validate config JSON; `file` names it in messages.
    pub fn parse(text: &str, file: &str) -> Result<Config> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(format!("{file}: not valid JSON: {e}")))?;
        let Value::Object(obj) = v else {
            return Err(Error::config(format!("{file}: a config is a JSON object")));
        };
        for k in obj.keys() {
            if ![
                "algorithm",
                "quantization_formats",
                "seed",
                "random_seed",
                "params",
            ]
            .contains(&k.as_str())
            {
                return Err(field_err(
                    file,
                    k,
                    "unknown field (expected algorithm, quantization_formats, seed, random_seed, params)",
                ));
            }
        }
        let algorithm = match obj.get("algorithm") {
            None => Algorithm::None,
            Some(Value::String(s)) => Algorithm::parse(s).ok_or_else(|| {
                field_err(
                    file,
                    "algorithm",
                    format!("unknown algorithm '{s}' (available: {ALGORITHMS})"),
                )
            })?,
            Some(other) => {
                return Err(field_err(
                    file,
                    "algorithm",
                    format!("expected a string, got {other}"),
                ))
            }
        };
        let formats = match obj.get("quantization_formats") {
            None | Some(Value::Null) => DEFAULT_FORMATS.iter().map(|s| s.to_string()).collect(),
            Some(Value::Array(a)) => {
                let mut out = Vec::new();
                for (i, f) in a.iter().enumerate() {
                    let field = format!("quantization_formats[{i}]");
                    let Value::String(name) = f else {
                        return Err(field_err(
                            file,
                            &field,
                            format!("expected a format name, got {f}"),
                        ));
                    };
                    check_format(name).map_err(|m| field_err(file, &field, m))?;
                    if !out.contains(name) {
                        out.push(name.clone());
                    }
                }
                if out.is_empty() {
                    return Err(field_err(file, "quantization_formats", "the list is empty"));
                }
                out
            }
            Some(other) => {
                return Err(field_err(
                    file,
                    "quantization_formats",
                    format!("expected a list of format names, got {other}"),
                ))
            }
        };
        let params = match obj.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(field_err(
                    file,
                    "params",
                    format!("expected an object, got {other}"),
                ))
            }
        };
        let random_flag = match obj.get("random_seed") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(field_err(
                    file,
                    "random_seed",
                    format!("expected true or false, got {other}"),
                ))
            }
        };
        let int = |v: &Value, field: &str| -> Result<u64> {
            v.as_u64().ok_or_else(|| {
                field_err(
                    file,
                    field,
                    format!("expected a non-negative integer or \"random\", got {v}"),
                )
            })
        };
        let (seed, seed_source) = match obj.get("seed") {
            Some(Value::String(s)) if s == "random" => (Some(random_seed()), "random"),
            Some(v @ Value::Number(_)) => match int(v, "seed")? {
                0 => (Some(random_seed()), "random"),
                n => (Some(n), "config"),
            },
            None | Some(Value::Null) if random_flag => (Some(random_seed()), "random"),
            None | Some(Value::Null) => match params.get("seed") {
                None | Some(Value::Null) => match algorithm {
                    Algorithm::MixedGreedy => (Some(random_seed()), "random"),
                    Algorithm::MixedRandom => (Some(0), "default"),
                    _ => (None, "none"),
                },
                Some(v) => match int(v, "params.seed")? {
                    0 => (Some(random_seed()), "random"),
                    n => (Some(n), "params"),
                },
            },
            Some(other) => {
                return Err(field_err(
                    file,
                    "seed",
                    format!("expected an integer or \"random\", got {other}"),
                ))
            }
        };
        let ignored: Vec<&String> = params
            .keys()
            .filter(|k| k.as_str() != "seed" && !algorithm.known_params().contains(&k.as_str()))
            .collect();
        let mut warnings = Vec::new();
        if !ignored.is_empty() {
            warnings.push(format!(
                "{file}: algorithm '{}' ignores params {}",
                algorithm.name(),
                ignored
                    .iter()
                    .map(|k| format!("'{k}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mixed = if algorithm.is_mixed() {
            Some(mixed_spec(
                file,
                algorithm,
                &params,
                &formats,
                seed.unwrap_or(0),
            )?)
        } else {
            None
        };
        let prune = match params.get("prune") {
            Some(Value::String(r)) if algorithm.known_params().contains(&"prune") => Some(
                crate::prune::Prune::parse(r)
                    .map_err(|e| field_err(file, "params.prune", e.message))?,
            ),
            Some(v) if algorithm.known_params().contains(&"prune") && !v.is_null() => {
                return Err(field_err(
                    file,
                    "params.prune",
                    format!("expected a rule such as \"magnitude:0.5\", got {v}"),
                ))
            }
            _ => None,
        };
        Ok(Config {
            algorithm,
            formats,
            seed,
            seed_source,
            params,
            warnings,
            mixed,
            prune,
        })
    }

    /// The resolved config, as written to `compression_config.used.json` and into `.tpk`
    /// metadata (`tenpak.config`).
    pub fn used_json(&self) -> Value {
        let mut v = serde_json::json!({
            "algorithm": self.algorithm.name(),
            "quantization_formats": self.formats,
            "seed": self.seed,
            "seed_source": self.seed_source,
            "params": self.params,
        });
        if let Some(m) = &self.mixed {
            v["mixed_tile"] = serde_json::to_value(m).expect("plain data");
        }
        v
    }
}

/// Validate a mixed-tile algorithm's params (formats-spec/mixed.md §3).
fn mixed_spec(
    file: &str,
    algorithm: Algorithm,
    params: &Map<String, Value>,
    quantization_formats: &[String],
    seed: u64,
) -> Result<MixedSpec> {
    use crate::assign::Metric;
    use crate::codec::mixed::{TileFormat, MAX_FORMATS, TILE_FORMAT_NAMES};
    let perr = |k: &str, m: String| field_err(file, &format!("params.{k}"), m);
    let num = |k: &str| -> Result<Option<f64>> {
        match params.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| perr(k, format!("expected a number, got {v}"))),
        }
    };
    let metric = match params.get("metric") {
        None | Some(Value::Null) => Metric::Pcc,
        Some(Value::String(s)) => Metric::parse(s)
            .ok_or_else(|| perr("metric", format!("'{s}' is not pcc, mae or atol")))?,
        Some(v) => {
            return Err(perr(
                "metric",
                format!("expected pcc, mae or atol, got {v}"),
            ))
        }
    };
    let threshold = num("threshold")?.unwrap_or(0.999);
    match metric {
        Metric::Pcc if !(-1.0..=1.0).contains(&threshold) => {
            return Err(perr(
                "threshold",
                format!("a PCC threshold is in [-1, 1], got {threshold}"),
            ))
        }
        Metric::Mae | Metric::Atol if threshold < 0.0 => {
            return Err(perr(
                "threshold",
                format!("an error threshold is at least 0, got {threshold}"),
            ))
        }
        _ => {}
    }
    let key = ["formats", "tile_formats"]
        .into_iter()
        .find(|k| params.get(*k).is_some_and(|v| !v.is_null()));
    let formats: Vec<String> = match key {
        Some(k) => {
            let names: Vec<String> = match &params[k] {
                Value::String(s) => s.split(',').map(|x| x.trim().to_string()).collect(),
                Value::Array(a) => a
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| perr(k, format!("expected format names, got {v}")))
                    })
                    .collect::<Result<_>>()?,
                v => {
                    return Err(perr(
                        k,
                        format!("expected a list or a comma-separated string, got {v}"),
                    ))
                }
            };
            let mut out: Vec<String> = Vec::new();
            for n in names {
                if TileFormat::parse(&n).is_none() {
                    return Err(perr(
                        k,
                        format!(
                            "'{n}' is not a tile format ({})",
                            TILE_FORMAT_NAMES.join(", ")
                        ),
                    ));
                }
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            out
        }
        None => quantization_formats
            .iter()
            .filter(|f| MIXED_DEFAULT_FORMATS.contains(&f.as_str()))
            .cloned()
            .collect(),
    };
    if formats.is_empty() {
        return Err(field_err(
            file,
            key.map(|k| format!("params.{k}"))
                .as_deref()
                .unwrap_or("quantization_formats"),
            format!(
                "no mixed-tile format ({})",
                MIXED_DEFAULT_FORMATS.join(", ")
            ),
        ));
    }
    if formats.len() > MAX_FORMATS {
        return Err(perr("formats", format!("at most {MAX_FORMATS} formats")));
    }
    let iters = match params.get("iters") {
        None | Some(Value::Null) => 50,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=1_000_000).contains(&n) => n as usize,
            _ => {
                return Err(perr(
                    "iters",
                    format!("expected an integer from 1 to 1000000, got {v}"),
                ))
            }
        },
    };
    let budget = match (num("target_bpw")?, params.get("target_bytes")) {
        (Some(_), Some(b)) if !b.is_null() => {
            return Err(perr(
                "target_bytes",
                "give target_bpw or target_bytes, not both".into(),
            ))
        }
        (Some(b), _) if b > 0.0 => Some(Budget::Bpw(b)),
        (Some(b), _) => {
            return Err(perr(
                "target_bpw",
                format!("expected a positive number, got {b}"),
            ))
        }
        (None, None | Some(Value::Null)) => None,
        (None, Some(v)) => match v.as_u64() {
            Some(n) if n > 0 => Some(Budget::Bytes(n)),
            _ => {
                return Err(perr(
                    "target_bytes",
                    format!("expected a positive integer, got {v}"),
                ))
            }
        },
    };
    if budget.is_some() && algorithm != Algorithm::MixedOptimal {
        return Err(perr(
            "target_bpw",
            "budgets are for mixed-tile-optimal".into(),
        ));
    }
    let scope = match params.get("scope") {
        None | Some(Value::Null) => Scope::Tensor,
        Some(Value::String(s)) if s == "tensor" => Scope::Tensor,
        Some(Value::String(s)) if s == "model" => Scope::Model,
        Some(v) => {
            return Err(perr(
                "scope",
                format!("expected \"tensor\" or \"model\", got {v}"),
            ))
        }
    };
    Ok(MixedSpec {
        algorithm,
        metric,
        threshold,
        formats,
        iters,
        seed,
        budget,
        scope,
    })
}

/// A format name must be a lossy tensor codec spec of the registry (`bfp8`, `bf16:order=tile`).
pub fn check_format(name: &str) -> std::result::Result<(), String> {
    match Pipeline::parse(name) {
        Ok(p) if !p.lossless() => Ok(()),
        Ok(_) => Err(format!(
            "'{name}' is lossless; quantization formats are lossy codecs"
        )),
        Err(e) => Err(e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_resolution_follows_the_schema() {
        let c = |t: &str| Config::parse(t, "c.json").unwrap();
        assert_eq!(c(r#"{"seed": 123}"#).seed, Some(123));
        assert_eq!(c(r#"{"seed": 123}"#).seed_source, "config");
        assert_eq!(c(r#"{"seed": 0}"#).seed_source, "random");
        assert_eq!(c(r#"{"seed": "random"}"#).seed_source, "random");
        assert_eq!(c(r#"{"random_seed": true}"#).seed_source, "random");
        // A config seed wins over random_seed and params.seed.
        let x = c(r#"{"seed": 7, "random_seed": true, "params": {"seed": 9}}"#);
        assert_eq!((x.seed, x.seed_source), (Some(7), "config"));
        let x = c(r#"{"params": {"seed": 9}}"#);
        assert_eq!((x.seed, x.seed_source), (Some(9), "params"));
        assert_eq!(c(r#"{"params": {"seed": 0}}"#).seed_source, "random");
        let x = c("{}");
        assert_eq!((x.seed, x.seed_source), (None, "none"));
        assert_eq!(x.algorithm, Algorithm::None);
        assert_eq!(x.formats.len(), DEFAULT_FORMATS.len());
        let r = c(r#"{"seed": "random"}"#).seed.unwrap();
        assert!(r > 0 && r < 1 << 53);
    }

    #[test]
    fn errors_name_the_field() {
        let e = |t: &str| Config::parse(t, "c.json").unwrap_err().message;
        assert!(e(r#"{"algorithm": "zip"}"#).contains("'algorithm'"));
        assert!(e(r#"{"algorithm": 3}"#).contains("'algorithm'"));
        assert!(
            e(r#"{"quantization_formats": ["bfp8", "bfp3"]}"#).contains("quantization_formats[1]")
        );
        assert!(e(r#"{"quantization_formats": ["byteplane"]}"#).contains("lossless"));
        assert!(e(r#"{"seed": -4}"#).contains("'seed'"));
        assert!(e(r#"{"seed": 1.5}"#).contains("'seed'"));
        assert!(e(r#"{"random_seed": "yes"}"#).contains("'random_seed'"));
        assert!(e(r#"{"params": []}"#).contains("'params'"));
        assert!(e(r#"{"params": {"seed": "x"}}"#).contains("'params.seed'"));
        assert!(e(r#"{"algoritm": "none"}"#).contains("'algoritm'"));
        assert!(e("[1]").contains("JSON object"));
        assert!(
            e(r#"{"algorithm": "mixed-tile-greedy", "params": {"metric": "l2"}}"#)
                .contains("'params.metric'")
        );
        assert!(
            e(r#"{"algorithm": "mixed-tile-greedy", "params": {"threshold": 2}}"#)
                .contains("'params.threshold'")
        );
        assert!(
            e(r#"{"algorithm": "mixed-tile", "params": {"formats": "bfp8,bfp3"}}"#)
                .contains("'bfp3'")
        );
        assert!(
            e(r#"{"algorithm": "mixed-tile-random", "params": {"iters": 0}}"#)
                .contains("'params.iters'")
        );
        assert!(
            e(r#"{"algorithm": "mixed-tile-greedy", "params": {"target_bpw": 4}}"#)
                .contains("mixed-tile-optimal")
        );
        assert!(
            e(r#"{"algorithm": "mixed-tile-threshold", "quantization_formats": ["mxfp4"]}"#)
                .contains("no mixed-tile format")
        );
    }

    #[test]
    fn mixed_params_resolve_as_the_seed_says() {
        let c = |t: &str| Config::parse(t, "c.json").unwrap();
        // Defaults: pcc, 0.999, quantization_formats intersected with the seed's four.
        let m = c(
            r#"{"algorithm": "mixed-tile", "quantization_formats": ["mxfp4", "bfp8", "bf16", "fp0"]}"#,
        );
        assert_eq!(m.algorithm, Algorithm::MixedGreedy);
        let s = m.mixed.unwrap();
        assert_eq!(s.formats, ["bfp8", "bf16"]);
        assert_eq!(
            (s.metric, s.threshold, s.iters),
            (crate::assign::Metric::Pcc, 0.999, 50)
        );
        assert_eq!(m.seed_source, "random");
        // params.formats overrides, as a list or a comma string; tile_formats is the same.
        let s = c(r#"{"algorithm": "mixed-tile-threshold", "params": {"tile_formats": "bfp4, fp0", "metric": "atol", "threshold": 0.1}}"#).mixed.unwrap();
        assert_eq!(s.formats, ["bfp4", "fp0"]);
        let r = c(r#"{"algorithm": "mixed-tile-random"}"#);
        assert_eq!((r.seed, r.seed_source), (Some(0), "default"));
        let o = c(
            r#"{"algorithm": "mixed-tile-optimal", "params": {"target_bpw": 4.5, "scope": "model"}}"#,
        );
        let s = o.mixed.unwrap();
        assert_eq!((s.budget, s.scope), (Some(Budget::Bpw(4.5)), Scope::Model));
        assert_eq!(
            c(r#"{"algorithm": "mixed-tile-threshold"}"#).used_json()["mixed_tile"]["metric"],
            "pcc"
        );
    }

    #[test]
    fn unused_params_warn_by_name() {
        let c = Config::parse(
            r#"{"algorithm": "transpose", "params": {"cluster": "kmeans", "k": 10}}"#,
            "c.json",
        )
        .unwrap();
        assert_eq!(c.algorithm, Algorithm::Transpose);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("'cluster'") && c.warnings[0].contains("'k'"));
        assert_eq!(c.used_json()["algorithm"], "transpose");
    }
}
