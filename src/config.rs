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
//! 5. otherwise no seed (`seed: null`, `seed_source: "none"`); the algorithms of this version
//!    draw no random numbers.
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
}

impl Algorithm {
    /// Config name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::None => "none",
            Algorithm::Transpose => "transpose",
        }
    }

    /// Params this algorithm reads.
    fn known_params(self) -> &'static [&'static str] {
        &[]
    }
}

/// Algorithms of the config schema that a later version implements.
const NOT_YET: &[&str] = &[
    "mixed-tile-threshold",
    "mixed-tile-greedy",
    "mixed-tile-random",
    "mixed-tile",
];

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
            Some(Value::String(s)) => match s.as_str() {
                "none" => Algorithm::None,
                "transpose" => Algorithm::Transpose,
                s if NOT_YET.contains(&s) => {
                    return Err(Error::new(
                        crate::error::ErrorKind::Unsupported,
                        format!(
                            "{file}: field 'algorithm': '{s}' is not supported yet by this tenpak (available: none, transpose)"
                        ),
                    ))
                }
                s => {
                    return Err(field_err(
                        file,
                        "algorithm",
                        format!("unknown algorithm '{s}' (available: none, transpose)"),
                    ))
                }
            },
            Some(other) => return Err(field_err(file, "algorithm", format!("expected a string, got {other}"))),
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
                None | Some(Value::Null) => (None, "none"),
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
        Ok(Config {
            algorithm,
            formats,
            seed,
            seed_source,
            params,
            warnings,
        })
    }

    /// The resolved config, as written to `compression_config.used.json` and into `.tpk`
    /// metadata (`tenpak.config`).
    pub fn used_json(&self) -> Value {
        serde_json::json!({
            "algorithm": self.algorithm.name(),
            "quantization_formats": self.formats,
            "seed": self.seed,
            "seed_source": self.seed_source,
            "params": self.params,
        })
    }
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
        let u = Config::parse(r#"{"algorithm": "mixed-tile-greedy"}"#, "c.json").unwrap_err();
        assert_eq!(u.kind, crate::error::ErrorKind::Unsupported);
        assert!(u.message.contains("not supported yet"));
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
