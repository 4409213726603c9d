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
//! the field's path (`params.threshold`, `quantization_formats[1]`); `params` an algorithm does
//! not use are ignored with a warning naming them. The file is read into serde-derived types
//! (`deny_unknown_fields`), with `serde_path_to_error` for the paths; the params an algorithm
//! reads have a typed struct of their own.

use crate::codec::Pipeline;
use crate::error::{Error, Result};
use serde::Deserialize;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
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
    /// Output-aware weights of the whole-model search: each tensor's sensitivity
    /// (`compress --sensitivity`); not part of the config file.
    #[serde(skip)]
    pub alphas: Option<std::sync::Arc<std::collections::BTreeMap<String, f64>>>,
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
    Error::config(format!("{}field '{field}': {msg}", named(file)))
}

/// `"FILE: "`, or nothing for a config whose file the error will carry anyway.
fn named(file: &str) -> String {
    if file.is_empty() {
        String::new()
    } else {
        format!("{file}: ")
    }
}

/// A config file as written. Serde checks the shape and the types (unknown top-level keys are
/// refused); [`Config::parse`] then checks the values and resolves the seed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default, deserialize_with = "algorithm_name")]
    algorithm: Option<Algorithm>,
    #[serde(default)]
    quantization_formats: Option<Vec<String>>,
    #[serde(default)]
    seed: Option<SeedField>,
    #[serde(default)]
    random_seed: Option<bool>,
    #[serde(default)]
    params: Option<Map<String, Value>>,
}

/// `seed`: a non-negative integer, or `"random"`.
#[derive(Debug, Clone, Copy)]
enum SeedField {
    Number(u64),
    Random,
}

impl<'de> Deserialize<'de> for SeedField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SeedField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a non-negative integer or \"random\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<SeedField, E> {
                Ok(SeedField::Number(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<SeedField, E> {
                match v {
                    "random" => Ok(SeedField::Random),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

fn algorithm_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Algorithm>, D::Error> {
    let s = String::deserialize(d)?;
    Algorithm::parse(&s).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!("unknown algorithm '{s}' (available: {ALGORITHMS})"))
    })
}

/// Every param of the mixed-tile algorithms ([`MixedParams`]).
const MIXED_PARAMS: &[&str] = &[
    "metric",
    "threshold",
    "formats",
    "tile_formats",
    "iters",
    "target_bpw",
    "target_bytes",
    "scope",
];

/// The params of the mixed-tile algorithms, typed. Those the config's algorithm does not read
/// are checked too, and ignored with a warning.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MixedParams {
    #[serde(default, deserialize_with = "metric_of")]
    metric: Option<crate::assign::Metric>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    formats: Option<FormatList>,
    #[serde(default)]
    tile_formats: Option<FormatList>,
    #[serde(default)]
    iters: Option<u64>,
    #[serde(default)]
    target_bpw: Option<f64>,
    #[serde(default)]
    target_bytes: Option<u64>,
    #[serde(default)]
    scope: Option<Scope>,
}

/// The params of `none` and `transpose`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainParams {
    #[serde(default)]
    prune: Option<String>,
}

/// Tile formats: a list, or one comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a list or a comma-separated string of format names"
)]
enum FormatList {
    List(Vec<String>),
    Csv(String),
}

impl FormatList {
    fn names(self) -> Vec<String> {
        match self {
            FormatList::List(v) => v,
            FormatList::Csv(s) => s.split(',').map(|x| x.trim().to_string()).collect(),
        }
    }
}

fn metric_of<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<crate::assign::Metric>, D::Error> {
    let s = String::deserialize(d)?;
    crate::assign::Metric::parse(&s)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not pcc, mae or atol")))
}

/// Deserialize `v` as `T`; an error names the file and the field's path under `prefix`.
fn typed<T: serde::de::DeserializeOwned>(file: &str, prefix: &str, v: Value) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        let path = match (prefix, path.as_str()) {
            ("", p) => p.to_string(),
            (pre, ".") => pre.to_string(),
            (pre, p) => format!("{pre}.{p}"),
        };
        field_err(file, &path, inner)
    })
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
            // A config that cannot be read is a configuration error like one that does not
            // parse: one exit code for every fault of the config (README "Exit codes").
            .map_err(|e| Error::config(format!("read the config: {e}")).with_file(path))?;
        // The error carries the path; the messages do not repeat it.
        let mut c = Config::parse(&text, "").map_err(|e| e.with_file(path))?;
        for w in &mut c.warnings {
            *w = format!("{}: {w}", path.display());
        }
        Ok(c)
    }

    /// Validate config JSON; `file` names it in messages (empty: the caller attaches the file).
    pub fn parse(text: &str, file: &str) -> Result<Config> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(format!("{}not valid JSON: {e}", named(file))))?;
        if !v.is_object() {
            return Err(Error::config(format!(
                "{}a config is a JSON object",
                named(file)
            )));
        }
        let raw: ConfigFile = typed(file, "", v)?;
        let algorithm = raw.algorithm.unwrap_or(Algorithm::None);
        let formats = match raw.quantization_formats {
            None => DEFAULT_FORMATS.iter().map(|s| s.to_string()).collect(),
            Some(list) => {
                let mut out: Vec<String> = Vec::new();
                for (i, name) in list.into_iter().enumerate() {
                    check_format(&name)
                        .map_err(|m| field_err(file, &format!("quantization_formats[{i}]"), m))?;
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
                if out.is_empty() {
                    return Err(field_err(file, "quantization_formats", "the list is empty"));
                }
                out
            }
        };
        let params = raw.params.unwrap_or_default();
        let params_seed: Option<u64> = match params.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(typed(file, "params.seed", v.clone())?),
        };
        let (seed, seed_source) = match (raw.seed, raw.random_seed.unwrap_or(false)) {
            (Some(SeedField::Random), _) | (Some(SeedField::Number(0)), _) => {
                (Some(random_seed()), "random")
            }
            (Some(SeedField::Number(n)), _) => (Some(n), "config"),
            (None, true) => (Some(random_seed()), "random"),
            (None, false) => match params_seed {
                None => match algorithm {
                    Algorithm::MixedGreedy => (Some(random_seed()), "random"),
                    Algorithm::MixedRandom => (Some(0), "default"),
                    _ => (None, "none"),
                },
                Some(0) => (Some(random_seed()), "random"),
                Some(n) => (Some(n), "params"),
            },
        };
        // The params of the algorithm's family, typed (a budget given to a mixed-tile algorithm
        // that has none is an error, not a silent no-op); the rest ignored with a warning.
        let family: &[&str] = if algorithm.is_mixed() {
            MIXED_PARAMS
        } else {
            algorithm.known_params()
        };
        let typed_params: Map<String, Value> = params
            .iter()
            .filter(|(k, v)| family.contains(&k.as_str()) && !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let ignored: Vec<&String> = params
            .keys()
            .filter(|k| k.as_str() != "seed" && !algorithm.known_params().contains(&k.as_str()))
            .collect();
        let mut warnings = Vec::new();
        if !ignored.is_empty() {
            warnings.push(format!(
                "{}algorithm '{}' ignores params {}",
                named(file),
                algorithm.name(),
                ignored
                    .iter()
                    .map(|k| format!("'{k}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let (mixed, prune) = if algorithm.is_mixed() {
            let p: MixedParams = typed(file, "params", Value::Object(typed_params))?;
            let spec = mixed_spec(file, algorithm, p, &formats, seed.unwrap_or(0))?;
            (Some(spec), None)
        } else {
            let p: PlainParams = typed(file, "params", Value::Object(typed_params))?;
            let prune = p
                .prune
                .map(|r| {
                    crate::prune::Prune::parse(&r)
                        .map_err(|e| field_err(file, "params.prune", e.message))
                })
                .transpose()?;
            (None, prune)
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

/// Check a mixed-tile algorithm's params (formats-spec/mixed.md §3) and resolve their defaults.
fn mixed_spec(
    file: &str,
    algorithm: Algorithm,
    p: MixedParams,
    quantization_formats: &[String],
    seed: u64,
) -> Result<MixedSpec> {
    use crate::assign::Metric;
    use crate::codec::mixed::{TileFormat, MAX_FORMATS, TILE_FORMAT_NAMES};
    let perr = |k: &str, m: String| field_err(file, &format!("params.{k}"), m);
    let finite = |k: &str, x: Option<f64>| match x {
        Some(v) if !v.is_finite() => Err(perr(k, format!("expected a number, got {v}"))),
        _ => Ok(x),
    };
    let metric = p.metric.unwrap_or(Metric::Pcc);
    let threshold = finite("threshold", p.threshold)?.unwrap_or(0.999);
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
    let (key, given) = match (p.formats, p.tile_formats) {
        (Some(f), _) => (Some("formats"), Some(f)),
        (None, Some(f)) => (Some("tile_formats"), Some(f)),
        (None, None) => (None, None),
    };
    let formats: Vec<String> = match (key, given) {
        (Some(k), Some(list)) => {
            let mut out: Vec<String> = Vec::new();
            for n in list.names() {
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
        _ => quantization_formats
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
    let iters = match p.iters {
        None => 50,
        Some(n) if (1..=1_000_000).contains(&n) => n as usize,
        Some(n) => {
            return Err(perr(
                "iters",
                format!("expected an integer from 1 to 1000000, got {n}"),
            ))
        }
    };
    let budget = match (finite("target_bpw", p.target_bpw)?, p.target_bytes) {
        (Some(_), Some(_)) => {
            return Err(perr(
                "target_bytes",
                "give target_bpw or target_bytes, not both".into(),
            ))
        }
        (Some(b), None) if b > 0.0 => Some(Budget::Bpw(b)),
        (Some(b), None) => {
            return Err(perr(
                "target_bpw",
                format!("expected a positive number, got {b}"),
            ))
        }
        (None, Some(n)) if n > 0 => Some(Budget::Bytes(n)),
        (None, Some(n)) => {
            return Err(perr(
                "target_bytes",
                format!("expected a positive integer, got {n}"),
            ))
        }
        (None, None) => None,
    };
    if budget.is_some() && algorithm != Algorithm::MixedOptimal {
        return Err(perr(
            "target_bpw",
            "budgets are for mixed-tile-optimal".into(),
        ));
    }
    Ok(MixedSpec {
        algorithm,
        metric,
        threshold,
        formats,
        iters,
        seed,
        budget,
        scope: p.scope.unwrap_or(Scope::Tensor),
        alphas: None,
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
        assert!(e(r#"{"params": {"prune": 3}}"#).contains("'params.prune'"));
        assert!(
            e(r#"{"algorithm": "mixed-tile-optimal", "params": {"scope": "x"}}"#)
                .contains("'params.scope'")
        );
        assert!(
            e(r#"{"algorithm": "mixed-tile", "params": {"formats": 3}}"#)
                .contains("'params.formats'")
        );
        assert!(e(r#"{"quantization_formats": ["bfp8", 3]}"#).contains("quantization_formats[1]"));
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
