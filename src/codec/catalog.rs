//! The names users type: every registry codec and every preset short name (`int4_g32`, `nf4`,
//! `pocketllm`, ...), each with its bits per weight and one line, for `tenpak codecs` (after
//! llama-quantize's type list) and for the "did you mean" of an unknown name, llama.cpp's type
//! names (`q4_k`, `q8_0`, ...) included.
//!
//! Bits per weight are not written down here: they come from the plan's own size prediction for
//! a reference matrix ([`REFERENCE_SHAPE`], f32), so they cannot drift from what `compress`
//! writes. Exact for fixed-size codecs; an upper bound where a byte stage or the data decide.

use super::{Pipeline, REGISTRY};
use crate::compress::CompressOptions;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::input::{TensorInfo, TensorSource};
use crate::plan::Plan;
use serde::Serialize;
use std::borrow::Cow;

/// The matrix bits per weight are predicted for: a 4096 x 4096 f32 weight (a 7B model's
/// attention projection). Per-tensor overheads (scales of `group=row`, low-rank factors,
/// codebooks) weigh more on smaller matrices.
pub const REFERENCE_SHAPE: [u64; 2] = [4096, 4096];

/// What a name is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Use {
    /// `compress --codec NAME`.
    Weights,
    /// Made by an option, not typed as `--codec` (`mixed`, `sparse`, `delta`).
    Made,
    /// `tenpak kv` (KV caches).
    Kv,
}

/// One name of the catalogue.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The name as typed.
    pub name: String,
    /// The registry codec it is (`int` for `int4_g32`).
    pub codec: &'static str,
    /// Family, for grouping: `lossless`, `float`, `block-float`, `integer`, `grid`, `vector`,
    /// `low-rank`, `wrapper`, `kv`.
    pub family: &'static str,
    /// Whether it gives back the source bytes exactly.
    pub lossless: bool,
    /// Bits per weight on [`REFERENCE_SHAPE`]; `None` where the data decide alone (lossless
    /// codecs) or the name is not a `--codec`.
    pub bpw: Option<f64>,
    /// Whether `bpw` is exact (else an upper bound).
    pub bpw_exact: bool,
    /// What it is for.
    #[serde(rename = "use")]
    pub use_for: Use,
    /// One line.
    pub about: String,
}

/// Names that are not registry names: (name, family, one line).
const PRESETS: &[(&str, &str, &str)] = &[
    (
        "int8",
        "integer",
        "8-bit symmetric, groups of 32, f16 scale (llama.cpp Q8_0's grid)",
    ),
    (
        "int8_row",
        "integer",
        "8-bit symmetric, one f16 scale per row (output channel)",
    ),
    (
        "int8_tensor",
        "integer",
        "8-bit symmetric, one scale for the whole tensor",
    ),
    (
        "int6_g32",
        "integer",
        "6-bit symmetric, groups of 32, f16 scale",
    ),
    (
        "int5_g32",
        "integer",
        "5-bit symmetric, groups of 32, f16 scale (near Q5_0)",
    ),
    (
        "int5_g32_asym",
        "integer",
        "5-bit asymmetric, groups of 32, f16 scale and offset (near Q5_1)",
    ),
    (
        "int5_g64_asym",
        "integer",
        "5-bit asymmetric, groups of 64 (the size of Q5_K)",
    ),
    (
        "int4_g32",
        "integer",
        "4-bit symmetric, groups of 32, f16 scale (near Q4_0)",
    ),
    (
        "int4_g32_asym",
        "integer",
        "4-bit asymmetric, groups of 32, f16 scale and offset (Q4_1's grid)",
    ),
    (
        "int4_g64_asym",
        "integer",
        "4-bit asymmetric, groups of 64 (the size of Q4_K)",
    ),
    (
        "int4_g128",
        "integer",
        "4-bit symmetric, groups of 128 (GPTQ/AWQ's usual grouping)",
    ),
    ("int4_row", "integer", "4-bit symmetric, one scale per row"),
    (
        "int4_opt",
        "integer",
        "4-bit asymmetric, groups of 8, scale and offset fitted by least squares",
    ),
    ("int3_g32", "integer", "3-bit symmetric, groups of 32"),
    (
        "int2_g64_asym",
        "integer",
        "2-bit asymmetric, groups of 64 (the size of Q2_K)",
    ),
    (
        "nf4",
        "grid",
        "bitsandbytes NF4: 16 normal-quantile levels, groups of 64, f16 scale",
    ),
    (
        "nf4_g32",
        "grid",
        "NF4 levels, groups of 32 (the size of llama.cpp IQ4_NL)",
    ),
    (
        "pocketllm",
        "vector",
        "tenpakx without the low-rank part: codebook of 4-vectors, groups of 16",
    ),
    (
        "rot+int4_g32",
        "wrapper",
        "int4_g32 after a seeded block-Hadamard rotation (spreads outliers)",
    ),
    (
        "rot+nvfp4",
        "wrapper",
        "nvfp4 after a seeded block-Hadamard rotation",
    ),
];

/// Registry codecs' families.
fn family(codec: &str) -> &'static str {
    match codec {
        "raw" | "byteplane" | "zstd" => "lossless",
        "f32" | "f16" | "bf16" => "float",
        "bfp8" | "bfp4" | "bfp2" | "fp0" | "mxfp4" | "nvfp4" | "mixed" => "block-float",
        "int" | "int4_residual" => "integer",
        "grid" => "grid",
        "vq" | "tenpakx" => "vector",
        "lowrank" => "low-rank",
        "gear" | "kvq" => "kv",
        _ => "wrapper",
    }
}

/// A source of one reference matrix: the plan reads shapes only, never data.
struct Shapes(Vec<TensorInfo>);

impl TensorSource for Shapes {
    fn describe(&self) -> String {
        "reference matrix".into()
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.0
    }
    fn data(&self, _i: usize) -> Result<Cow<'_, [u8]>> {
        Err(Error::input("the reference matrix has no data"))
    }
}

/// Predicted bits per weight of `spec` on [`REFERENCE_SHAPE`] and whether exact, or `None`
/// where the plan refuses it (not a weight codec).
pub fn reference_bpw(spec: &str) -> Option<(f64, bool)> {
    let n: u64 = REFERENCE_SHAPE.iter().product();
    let src = Shapes(vec![TensorInfo {
        name: "weight".into(),
        dims: REFERENCE_SHAPE.to_vec(),
        dtype: DType::F32,
        source_dtype: "F32".into(),
        source_bytes: n * 4,
    }]);
    let opts = CompressOptions {
        codec: spec.to_string(),
        ..CompressOptions::default()
    };
    let plan = Plan::new(&src, std::path::Path::new("reference"), &opts).ok()?;
    let r = plan.report();
    Some((r.predicted_payload_bytes as f64 * 8.0 / n as f64, r.exact))
}

/// Every name, registry codecs first (in id order), then the presets.
pub fn catalog() -> Vec<Entry> {
    let made = ["mixed", "sparse", "delta"];
    let kv = ["gear", "kvq"];
    let mut out = Vec::new();
    for e in REGISTRY {
        let use_for = if made.contains(&e.name) {
            Use::Made
        } else if kv.contains(&e.name) {
            Use::Kv
        } else {
            Use::Weights
        };
        let lossless = Pipeline::parse(e.name).is_ok_and(|p| p.lossless())
            || matches!(e.name, "gear" | "delta");
        out.push(entry(
            e.name,
            e.name,
            family(e.name),
            lossless,
            use_for,
            e.summary,
        ));
    }
    for &(name, fam, about) in PRESETS {
        let codec = Pipeline::parse(name)
            .map(|p| p.tensor_codec().props().name)
            .unwrap_or("?");
        out.push(entry(name, codec, fam, false, Use::Weights, about));
    }
    out
}

fn entry(
    name: &str,
    codec: &'static str,
    family: &'static str,
    lossless: bool,
    use_for: Use,
    about: &str,
) -> Entry {
    // Lossless sizes are the data's; a bound (the source's own size) would only mislead.
    let bpw = (use_for == Use::Weights && !lossless)
        .then(|| reference_bpw(name))
        .flatten();
    Entry {
        name: name.to_string(),
        codec,
        family,
        lossless,
        bpw: bpw.map(|b| b.0),
        bpw_exact: bpw.is_some_and(|b| b.1),
        use_for,
        about: about.to_string(),
    }
}

/// llama.cpp type and `llama-quantize` ftype names, each with the nearest tenpak name and whether
/// its grid is the same (not only near).
const LLAMA: &[(&str, &str, bool)] = &[
    ("q8_0", "int8", true),
    ("q4_1", "int4_g32_asym", true),
    ("q4_0", "int4_g32", false),
    ("q5_0", "int5_g32", false),
    ("q5_1", "int5_g32_asym", false),
    ("q2_k", "int2_g64_asym", false),
    ("q3_k", "int3_g32", false),
    ("q4_k", "int4_g64_asym", false),
    ("q5_k", "int5_g64_asym", false),
    ("q6_k", "int6_g32", false),
    ("q8_k", "int8", false),
    ("iq4_nl", "nf4_g32", false),
    ("iq4_xs", "nf4", false),
    ("mxfp4", "mxfp4", true),
    ("f16", "f16", true),
    ("bf16", "bf16", true),
    ("f32", "f32", true),
];

/// The nearest tenpak name to a llama.cpp type name (`Q4_K_M` is `q4_k`), and whether it is the
/// same grid.
pub fn llama_equivalent(name: &str) -> Option<(&'static str, bool)> {
    let n = name.to_ascii_lowercase();
    // llama-quantize's mixes: Q4_K_M, Q3_K_L, IQ4_XS ... name their main type first.
    let base = ["_s", "_m", "_l", "_xl"]
        .iter()
        .find_map(|s| n.strip_suffix(s).filter(|b| b.contains("_k")))
        .unwrap_or(&n);
    LLAMA
        .iter()
        .find(|(l, _, _)| *l == base)
        .map(|&(_, t, same)| (t, same))
}

/// Names close to `name` (edit distance, then prefix), best first, at most three.
pub fn similar(name: &str) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let mut names: Vec<&str> = REGISTRY.iter().map(|e| e.name).collect();
    names.extend(PRESETS.iter().map(|p| p.0));
    let mut scored: Vec<(usize, &str)> = names
        .into_iter()
        .filter_map(|c| {
            let d = strsim::damerau_levenshtein(&lower, c);
            let close = d <= (c.len().max(lower.len()) / 3).max(1);
            let prefix = lower.len() >= 3 && c.starts_with(&lower[..3]);
            (close || prefix).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|s| s.1.to_string())
        .collect()
}

/// The error for an unknown codec name: the nearest llama.cpp equivalent or similar names, and
/// where the full list is.
pub fn unknown(name: &str) -> Error {
    let hint = match llama_equivalent(name) {
        Some((t, same)) => {
            let bpw = reference_bpw(t).map_or(String::new(), |(b, _)| format!(", {b:.2} bpw"));
            if same {
                format!(", a llama.cpp type: tenpak's {t} has the same grid{bpw}")
            } else {
                format!(", a llama.cpp type: the nearest tenpak codec is {t}{bpw}")
            }
        }
        None => match similar(name).as_slice() {
            [] => String::new(),
            s => format!(": did you mean {}?", s.join(", ")),
        },
    };
    Error::config(format!(
        "unknown codec '{name}'{hint}; `tenpak codecs` lists every name"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_and_has_its_size() {
        let cat = catalog();
        for e in &cat {
            if e.use_for == Use::Weights && e.name != "rot" {
                Pipeline::parse(&e.name).unwrap();
                assert!(e.lossless || e.bpw.is_some(), "{}", e.name);
            }
        }
        let bpw = |n: &str| cat.iter().find(|e| e.name == n).unwrap().bpw.unwrap();
        assert_eq!(bpw("int4_g32"), 4.5);
        assert_eq!(bpw("int4_g32_asym"), 5.0);
        assert_eq!(bpw("int8"), 8.5);
        assert_eq!(bpw("bfp8"), 8.5);
        assert_eq!(bpw("mxfp4"), 4.25);
        assert_eq!(bpw("nf4"), 4.25);
        // Every llama.cpp answer is a name of the catalogue.
        for (l, t, _) in LLAMA {
            assert!(cat.iter().any(|e| e.name == *t), "{l} -> {t}");
        }
    }

    #[test]
    fn unknown_names_get_suggestions() {
        let m = |n: &str| unknown(n).to_string();
        assert!(m("bfp5").contains("did you mean bfp"), "{}", m("bfp5"));
        assert!(m("int4g32").contains("int4_g32"), "{}", m("int4g32"));
        assert!(m("Q4_K_M").contains("nearest tenpak codec is int4_g64_asym, 4.50 bpw"));
        assert!(m("q8_0").contains("int8 has the same grid"));
        assert!(m("q4_1").contains("int4_g32_asym has the same grid"));
        assert!(!m("zzzzzz").contains("did you mean"));
        assert!(m("zzzzzz").contains("tenpak codecs"));
    }
}
