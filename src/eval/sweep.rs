//! The size–quality frontier: compress a model with each codec or config into a real `.tpk`,
//! evaluate each against the uncompressed model, write `frontier.csv`, `frontier.json` and
//! `frontier.png`.

use super::ppl::{self, PplOptions, RefSource};
use crate::compress::{compress, CompressOptions};
use crate::config::{Algorithm, Config};
use crate::error::{Error, Result};
use crate::progress::NoProgress;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One variant to compress and evaluate.
#[derive(Debug, Clone)]
pub enum Variant {
    /// A codec pipeline spec (`bfp8`, `int4_g32`, ...).
    Codec(String),
    /// A compression config file.
    Config(PathBuf),
}

impl Variant {
    /// The name a row and a file get.
    pub fn label(&self) -> String {
        match self {
            Variant::Codec(c) => c.clone(),
            Variant::Config(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().trim_start_matches("compression_config.").to_string())
                .unwrap_or_default(),
        }
    }

    fn options(&self) -> Result<CompressOptions> {
        let mut o = CompressOptions {
            force: true,
            ..Default::default()
        };
        match self {
            Variant::Codec(c) => o.codec = c.clone(),
            Variant::Config(p) => {
                let c = Config::load(p)?;
                // A mixed-tile config plans its own formats; any other config compresses with
                // its first quantization format (transposed where it says so).
                if c.mixed.is_none() {
                    o.codec = c.formats.first().cloned().ok_or_else(|| {
                        Error::config("the config lists no quantization format").with_file(p)
                    })?;
                }
                o.transpose = c.algorithm == Algorithm::Transpose;
                o.prune = c.prune;
                o.mixed = c.mixed.clone();
                o.config = Some(c.used_json());
            }
        }
        Ok(o)
    }
}

/// One row of the frontier.
#[derive(Debug, Clone, Serialize)]
pub struct FrontierRow {
    /// Codec spec or config name.
    pub label: String,
    /// `codec`, `config` or `reference`.
    pub kind: &'static str,
    /// Bytes of the written `.tpk` (of the model file for the reference).
    pub file_bytes: u64,
    /// file_bytes * 8 / parameters.
    pub bits_per_weight: f64,
    /// Parameters * 4 / file_bytes.
    pub ratio_vs_fp32: f64,
    /// Perplexity, all positions.
    pub ppl: f64,
    /// Perplexity, second half of each window.
    pub ppl_second_half: f64,
    /// ΔPPL against the reference, percent.
    pub delta_ppl_pct: f64,
    /// Its paired standard error, percent.
    pub delta_ppl_se_pct: f64,
    /// Mean KL(P_ref || P_model).
    pub kld: f64,
    /// Top-1 agreement, percent.
    pub top1_agree_pct: f64,
    /// Share of tensors stored on a quantization grid in the source (GGUF Q4_1 and the like)
    /// that this codec reconstructs exactly: such a point measures the test model, not the codec.
    pub source_grid_exact: f64,
    /// Seconds to compress.
    pub compress_seconds: f64,
}

/// A point from another tool (`--reference-points`).
#[derive(Debug, Clone, Serialize)]
pub struct OtherPoint {
    /// Label.
    pub label: String,
    /// Bits per weight.
    pub bits_per_weight: f64,
    /// KLD against the same reference.
    pub kld: f64,
    /// ΔPPL, percent.
    pub delta_ppl_pct: f64,
}

/// What the sweep measured.
#[derive(Debug, Clone, Serialize)]
pub struct Frontier {
    /// The model.
    pub model: String,
    /// Parameters (elements of every tensor).
    pub parameters: u64,
    /// Windows evaluated and KLD windows.
    pub windows: usize,
    /// Windows KLD covers.
    pub kld_windows: usize,
    /// Rows: the reference first, then each variant in the order given.
    pub rows: Vec<FrontierRow>,
    /// Other tools' points.
    pub other_points: Vec<OtherPoint>,
    /// Where the files are.
    pub out_dir: PathBuf,
}

/// Read `label,bits_per_weight,kld[,delta_ppl_pct]` rows (a header line is skipped).
pub fn read_points(path: &Path) -> Result<Vec<OtherPoint>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", e).with_file(path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let num = |j: usize| f.get(j).and_then(|s| s.parse::<f64>().ok());
        match (num(1), num(2)) {
            (Some(b), Some(k)) => out.push(OtherPoint {
                label: f[0].to_string(),
                bits_per_weight: b,
                kld: k,
                delta_ppl_pct: num(3).unwrap_or(f64::NAN),
            }),
            _ if i == 0 => {} // header
            _ => {
                return Err(Error::input(format!(
                    "line {}: want label,bits_per_weight,kld[,delta_ppl_pct]",
                    i + 1
                ))
                .with_file(path))
            }
        }
    }
    Ok(out)
}

/// Progress of a sweep: (variant label or "reference", windows done, windows in all).
pub type OnStep<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// Compress `model` with every variant, evaluate each against `model`, write the frontier.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    model: &Path,
    variants: &[Variant],
    corpus: &Path,
    opts: &PplOptions,
    out_dir: &Path,
    other_points: Vec<OtherPoint>,
    keep_tpk: bool,
    on_step: OnStep,
) -> Result<Frontier> {
    if variants.is_empty() {
        return Err(Error::config("nothing to sweep: give --codecs or --configs"));
    }
    let options: Vec<(String, CompressOptions, &'static str)> = variants
        .iter()
        .map(|v| {
            Ok((
                v.label(),
                v.options()?,
                match v {
                    Variant::Codec(_) => "codec",
                    Variant::Config(_) => "config",
                },
            ))
        })
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::io("create the output folder", e).with_file(out_dir))?;
    let tpk_dir = out_dir.join("tpk");
    std::fs::create_dir_all(&tpk_dir)
        .map_err(|e| Error::io("create the output folder", e).with_file(&tpk_dir))?;

    let (desc, reference, tok) = super::load_llama(model, None)?;
    let (_, _, windows) = super::corpus_windows(&tok, corpus, reference.cfg.bos, opts)?;
    let n = windows.len();
    let run = ppl::reference_run(&reference, &windows, opts, &mut |w, _| on_step("reference", w, n))?;
    let ref_ppl = ppl::evaluate_cached_self(&run);
    let parameters = crate::input::open(model)?
        .tensors()
        .iter()
        .map(|t| t.numel())
        .sum::<u64>();
    let model_bytes = std::fs::metadata(model).map(|m| m.len()).unwrap_or(0);
    let bpw = |bytes: u64| bytes as f64 * 8.0 / parameters as f64;
    let mut rows = vec![FrontierRow {
        label: "reference".into(),
        kind: "reference",
        file_bytes: model_bytes,
        bits_per_weight: bpw(model_bytes),
        ratio_vs_fp32: parameters as f64 * 4.0 / model_bytes as f64,
        ppl: ref_ppl.ppl,
        ppl_second_half: ref_ppl.ppl_second_half,
        delta_ppl_pct: 0.0,
        delta_ppl_se_pct: 0.0,
        kld: 0.0,
        top1_agree_pct: 100.0,
        source_grid_exact: 0.0,
        compress_seconds: 0.0,
    }];
    drop(reference);
    for (label, o, kind) in &options {
        let file = tpk_dir.join(format!("{}.tpk", sanitize(label)));
        let t0 = std::time::Instant::now();
        let report = compress(model, &file, o, &NoProgress).map_err(|e| {
            Error::new(e.kind, format!("variant '{label}': {e}"))
        })?;
        let compress_seconds = t0.elapsed().as_secs_f64();
        let on_grid: Vec<_> = report
            .tensors
            .iter()
            .filter(|t| t.source_dtype.starts_with('Q') || t.source_dtype.starts_with("IQ"))
            .collect();
        let exact = on_grid.iter().filter(|t| t.metrics.max_abs == 0.0).count();
        let (_, m, _) = super::load_llama(&file, None)?;
        let r = ppl::evaluate(&m, Some(RefSource::Cached(&run)), &windows, opts, &mut |w, _| {
            on_step(label, w, n)
        })?;
        drop(m);
        let c = r.comparison.expect("a reference was given");
        rows.push(FrontierRow {
            label: label.clone(),
            kind,
            file_bytes: report.file_bytes,
            bits_per_weight: bpw(report.file_bytes),
            ratio_vs_fp32: parameters as f64 * 4.0 / report.file_bytes as f64,
            ppl: r.perplexity.ppl,
            ppl_second_half: r.perplexity.ppl_second_half,
            delta_ppl_pct: c.delta_ppl_pct,
            delta_ppl_se_pct: c.delta_ppl_se_pct,
            kld: c.kld,
            top1_agree_pct: c.top1_agree_pct,
            source_grid_exact: if on_grid.is_empty() {
                0.0
            } else {
                exact as f64 / on_grid.len() as f64
            },
            compress_seconds,
        });
        if !keep_tpk {
            let _ = std::fs::remove_file(&file);
        }
    }
    if !keep_tpk {
        let _ = std::fs::remove_dir(&tpk_dir);
    }
    let f = Frontier {
        model: desc,
        parameters,
        windows: n,
        kld_windows: opts.kld_windows.min(n),
        rows,
        other_points,
        out_dir: out_dir.to_path_buf(),
    };
    write_outputs(&f)?;
    Ok(f)
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .collect()
}

fn write_outputs(f: &Frontier) -> Result<()> {
    let mut csv = String::from(
        "label,kind,file_bytes,bits_per_weight,ratio_vs_fp32,ppl,ppl_second_half,delta_ppl_pct,delta_ppl_se_pct,kld,top1_agree_pct,source_grid_exact,compress_seconds\n",
    );
    for r in &f.rows {
        csv.push_str(&format!(
            "{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.6},{:.3},{:.3},{:.2}\n",
            r.label,
            r.kind,
            r.file_bytes,
            r.bits_per_weight,
            r.ratio_vs_fp32,
            r.ppl,
            r.ppl_second_half,
            r.delta_ppl_pct,
            r.delta_ppl_se_pct,
            r.kld,
            r.top1_agree_pct,
            r.source_grid_exact,
            r.compress_seconds
        ));
    }
    crate::atomic::write(&f.out_dir.join("frontier.csv"), csv.as_bytes())?;
    let js = serde_json::to_string_pretty(f).expect("json") + "\n";
    crate::atomic::write(&f.out_dir.join("frontier.json"), js.as_bytes())?;
    let ours: Vec<(String, f64, f64)> = f
        .rows
        .iter()
        .filter(|r| r.kind != "reference")
        .map(|r| {
            let mark = if r.source_grid_exact >= 0.5 { " (Q4_1 grid)" } else { "" };
            (format!("{}{mark}", r.label), r.bits_per_weight, r.kld)
        })
        .collect();
    let others: Vec<(String, f64, f64)> = f
        .other_points
        .iter()
        .map(|p| (p.label.clone(), p.bits_per_weight, p.kld))
        .collect();
    crate::plot::frontier(
        &f.out_dir.join("frontier.png"),
        &format!("{}: size vs quality ({} windows, KLD over {})", f.model, f.windows, f.kld_windows),
        "KLD vs the uncompressed model (log scale)",
        &ours,
        &others,
    )
}
