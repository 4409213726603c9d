//! The size–quality frontier: compress a model with each codec or config into a real `.tpk`,
//! evaluate each against the uncompressed model, write `frontier.csv`, `frontier.json` and
//! `frontier.png`.

use crate::ppl::{self, PplOptions, RefSource};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tenpak::compress::{compress, CompressOptions};
use tenpak::config::{Algorithm, Config};
use tenpak::error::{Error, Result};
use tenpak::figure::Figure;
use tenpak::Context;

/// One variant to compress and evaluate.
#[derive(Debug, Clone)]
pub enum Variant {
    /// A codec pipeline spec (`bfp8`, `int4_g32`, ...), optionally followed by per-tensor
    /// overrides `;FILTER=SPEC` (`int4_g32_asym;token_embd.weight=int8`).
    Codec(String),
    /// A compression config file.
    Config(PathBuf),
    /// A KV-cache policy (a method spec, `kivi:bits=4`, or a policy file, `*.json`): the
    /// uncompressed model with its cache read through it (`eval ppl --kv`); the row's
    /// `bits_per_weight` is then bits per cached value.
    Kv(String),
}

impl Variant {
    /// The KV policy of a `Kv` variant.
    pub fn kv_policy(&self) -> Result<Option<tenpak::kv::method::Policy>> {
        let Variant::Kv(k) = self else {
            return Ok(None);
        };
        let base = |lossy: Option<&str>| tenpak::kv::method::Policy::new("raw", 0, lossy);
        if k.ends_with(".json") {
            let p = Path::new(k);
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::io("read the KV policy", e).with_file(p))?;
            Ok(Some(
                tenpak::kv::method::Policy::from_json(&text, base(None)?)
                    .map_err(|e| e.with_file(p))?,
            ))
        } else {
            Ok(Some(base(Some(k))?))
        }
    }

    /// The name a row and a file get.
    pub fn label(&self) -> String {
        match self {
            Variant::Codec(c) => c.clone(),
            Variant::Kv(k) => format!("kv:{k}"),
            Variant::Config(p) => p
                .file_stem()
                .map(|s| {
                    s.to_string_lossy()
                        .trim_start_matches("compression_config.")
                        .to_string()
                })
                .unwrap_or_default(),
        }
    }

    fn options(&self) -> Result<CompressOptions> {
        let mut o = CompressOptions {
            force: true,
            ..Default::default()
        };
        match self {
            Variant::Kv(_) => {}
            Variant::Codec(c) => {
                let mut parts = c.split(';');
                o.codec = parts.next().unwrap_or_default().to_string();
                o.overrides = parts
                    .map(tenpak::plan::parse_override)
                    .collect::<Result<_>>()?;
            }
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

/// Language-model figures of a row.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LmFigures {
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
}

/// One row of the frontier.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FrontierRow {
    /// Codec spec or config name.
    pub label: String,
    /// `codec`, `config` or `reference`.
    pub kind: String,
    /// Bytes of the written `.tpk` (of the model file for the reference).
    pub file_bytes: u64,
    /// file_bytes * 8 / parameters.
    pub bits_per_weight: f64,
    /// Parameters * 4 / file_bytes.
    pub ratio_vs_fp32: f64,
    /// Causal LMs: perplexity, KLD, top-1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lm: Option<LmFigures>,
    /// Encoders: embedding drift.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed: Option<crate::embed::EmbedFigures>,
    /// Share of tensors stored on a quantization grid in the source (GGUF Q4_1 and the like)
    /// that this codec reconstructs exactly: such a point measures the test model, not the codec.
    pub source_grid_exact: f64,
    /// Seconds to compress.
    pub compress_seconds: f64,
}

/// A point from another tool (`--reference-points`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Frontier {
    /// The model.
    pub model: String,
    /// `llama` (perplexity figures) or `bert` (embedding figures).
    pub family: String,
    /// Parameters (elements of every tensor).
    pub parameters: u64,
    /// Windows evaluated (causal LMs).
    pub windows: usize,
    /// Windows KLD covers (causal LMs).
    pub kld_windows: usize,
    /// Sentences embedded (encoders).
    pub sentences: usize,
    /// Rows: the reference first, then each variant in the order given.
    pub rows: Vec<FrontierRow>,
    /// Other tools' points.
    pub other_points: Vec<OtherPoint>,
    /// Other tools' KV-cache points.
    pub kv_points: Vec<OtherPoint>,
    /// Where the files are.
    pub out_dir: PathBuf,
    /// A part of a sharded sweep (`--shard K/N`): which, and each variant row's place among all
    /// the variants, for [`merge`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<SweepPart>,
}

/// Which part of a sharded sweep a frontier is.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SweepPart {
    /// Its number, 1-based.
    pub part: usize,
    /// Parts in all.
    pub parts: usize,
    /// Variants of the whole sweep.
    pub variants: usize,
    /// The place among them of each variant row (the rows after the reference), in order.
    pub places: Vec<usize>,
}

/// How the variants are evaluated.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Corpus text.
    pub corpus: PathBuf,
    /// Windows (causal LMs).
    pub ppl: PplOptions,
    /// Sentences (encoders).
    pub lines: usize,
    /// Output folder.
    pub out_dir: PathBuf,
    /// Keep the `.tpk` files.
    pub keep_tpk: bool,
    /// Other tools' KV-cache points for `kv_frontier.png` (bits per cached value, KLD).
    pub kv_points: Vec<OtherPoint>,
    /// Run only part K of N (1-based) of the variants: every N-th from the K-th, in order.
    pub shard: Option<(usize, usize)>,
}

/// Read `label,bits_per_weight,kld[,delta_ppl_pct]` rows (a header line is skipped).
pub fn read_points(path: &Path) -> Result<Vec<OtherPoint>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", e).with_file(path))?;
    let mut out = Vec::new();
    let mut header_seen = false;
    // Real CSV (the csv crate): a label such as "grid:n=16,group=32" is one quoted field.
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    for rec in rd.records() {
        let rec = rec.map_err(|e| Error::input(format!("not CSV: {e}")).with_file(path))?;
        let line = rec.position().map_or(0, |p| p.line());
        let f: Vec<&str> = rec.iter().collect();
        if f.iter().all(|s| s.is_empty()) {
            continue;
        }
        let first = !header_seen;
        header_seen = true;
        let num = |j: usize| f.get(j).and_then(|s| s.parse::<f64>().ok());
        match (num(1), num(2)) {
            (Some(b), Some(k)) => out.push(OtherPoint {
                label: f[0].to_string(),
                bits_per_weight: b,
                kld: k,
                delta_ppl_pct: num(3).unwrap_or(f64::NAN),
            }),
            _ if first => {} // the header
            _ => {
                return Err(Error::input(format!(
                    "line {line}: want label,bits_per_weight,kld[,delta_ppl_pct]"
                ))
                .with_file(path))
            }
        }
    }
    Ok(out)
}

/// Progress of a sweep: (variant label or "reference", steps done, steps in all).
pub type OnStep<'a> = &'a (dyn Fn(&str, usize, usize) + Sync);

/// The reference's evaluation, kept for every variant.
enum Reference {
    Lm {
        run: ppl::ReferenceRun,
        windows: Vec<Vec<u32>>,
    },
    Embed {
        texts: Vec<String>,
        embeddings: Vec<Vec<f32>>,
    },
}

/// Compress `model` with every variant, evaluate each against `model`, write the frontier
/// (`frontier.csv`, `frontier.json`, `frontier.png`, rewritten after every variant so a long
/// sweep keeps what it has measured).
pub fn sweep(
    model: &Path,
    variants: &[Variant],
    opts: &SweepOptions,
    other_points: Vec<OtherPoint>,
    on_step: OnStep,
    cx: &Context<'_>,
) -> Result<Frontier> {
    cx.install(|| sweep_on_threads(model, variants, opts, other_points, on_step, cx))
}

fn sweep_on_threads(
    model: &Path,
    variants: &[Variant],
    opts: &SweepOptions,
    other_points: Vec<OtherPoint>,
    on_step: OnStep,
    cx: &Context<'_>,
) -> Result<Frontier> {
    if variants.is_empty() {
        return Err(Error::config(
            "nothing to sweep: give --codecs, --configs or --kv-policies",
        ));
    }
    type Planned = (
        String,
        CompressOptions,
        &'static str,
        Option<tenpak::kv::method::Policy>,
    );
    let options: Vec<Planned> = variants
        .iter()
        .map(|v| {
            Ok((
                v.label(),
                v.options()?,
                match v {
                    Variant::Codec(_) => "codec",
                    Variant::Config(_) => "config",
                    Variant::Kv(_) => "kv",
                },
                v.kv_policy()?,
            ))
        })
        .collect::<Result<_>>()?;
    // Every spec is checked before the long reference run.
    for (label, o, kind, _) in &options {
        if *kind == "kv" {
            continue;
        }
        for spec in std::iter::once(&o.codec).chain(o.overrides.iter().map(|(_, c)| c)) {
            tenpak::codec::Pipeline::parse(spec)
                .map_err(|e| Error::new(e.kind, format!("variant '{label}': {e}")))?;
        }
    }
    // A part runs every N-th variant (all were checked above, so every part refuses alike).
    let total_variants = options.len();
    let (options, shard) = match opts.shard {
        Some((k, n)) => {
            if k == 0 || k > n {
                return Err(Error::config(format!(
                    "--shard {k}/{n}: expected K/N with 1 <= K <= N"
                )));
            }
            let (places, kept): (Vec<usize>, Vec<Planned>) = options
                .into_iter()
                .enumerate()
                .filter(|(i, _)| i % n == k - 1)
                .unzip();
            let part = SweepPart {
                part: k,
                parts: n,
                variants: total_variants,
                places,
            };
            (kept, Some(part))
        }
        None => (options, None),
    };
    let out_dir = &opts.out_dir;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::io("create the output folder", e).with_file(out_dir))?;
    let tpk_dir = out_dir.join("tpk");
    std::fs::create_dir_all(&tpk_dir)
        .map_err(|e| Error::io("create the output folder", e).with_file(&tpk_dir))?;

    let file = crate::model::ModelFile::open(model, None)?;
    crate::model::precheck(&file.meta, "eval sweep").map_err(|e| e.with_file(model))?;
    let loaded = file.load()?;
    let family = loaded.meta.architecture()?;
    let desc = loaded.description.clone();
    if family != "llama" && options.iter().any(|o| o.3.is_some()) {
        return Err(Error::config(
            "--kv-policies needs a causal LM (llama): an encoder keeps no KV cache",
        )
        .with_file(model));
    }
    let (reference, first) = match family.as_str() {
        "llama" => {
            let tok = crate::tokenizer::TextTokenizer::from_meta(&loaded.meta)?;
            let m = crate::llama::Llama::new(loaded)?;
            let (_, _, windows) = crate::corpus_windows(&tok, &opts.corpus, m.cfg.bos, &opts.ppl)?;
            let n = windows.len();
            let run = ppl::reference_run(
                &m,
                &windows,
                &opts.ppl,
                &mut |w, _| on_step("reference", w, n),
                cx,
            )?;
            let p = ppl::evaluate_cached_self(&run);
            let lm = LmFigures {
                ppl: p.ppl,
                ppl_second_half: p.ppl_second_half,
                delta_ppl_pct: 0.0,
                delta_ppl_se_pct: 0.0,
                kld: 0.0,
                top1_agree_pct: 100.0,
            };
            (Reference::Lm { run, windows }, (Some(lm), None))
        }
        "bert" => {
            let texts = crate::embed::corpus_sentences(&opts.corpus, opts.lines)?;
            let m = crate::bert::Bert::new(loaded, 256)?;
            let n = texts.len();
            let embeddings =
                crate::embed::embed_all(&m, &texts, &|d| on_step("reference", d, n), cx)?;
            let f = crate::embed::compare(&embeddings, &embeddings);
            (Reference::Embed { texts, embeddings }, (None, Some(f)))
        }
        other => {
            return Err(Error::new(
                tenpak::ErrorKind::Unsupported,
                format!("architecture '{other}': eval sweep runs llama and bert models"),
            )
            .with_file(model))
        }
    };
    let parameters = tenpak::input::open(model)?
        .tensors()
        .iter()
        .map(|t| t.numel())
        .sum::<u64>();
    let model_bytes = tenpak::input::model_file_bytes(model);
    let bpw = |bytes: u64| bytes as f64 * 8.0 / parameters as f64;
    let mut f = Frontier {
        model: desc,
        family,
        parameters,
        windows: match &reference {
            Reference::Lm { windows, .. } => windows.len(),
            _ => 0,
        },
        kld_windows: match &reference {
            Reference::Lm { windows, .. } => opts.ppl.kld_windows.min(windows.len()),
            _ => 0,
        },
        sentences: match &reference {
            Reference::Embed { texts, .. } => texts.len(),
            _ => 0,
        },
        rows: vec![FrontierRow {
            label: "reference".into(),
            kind: "reference".into(),
            file_bytes: model_bytes,
            bits_per_weight: bpw(model_bytes),
            ratio_vs_fp32: parameters as f64 * 4.0 / model_bytes.max(1) as f64,
            lm: first.0,
            embed: first.1,
            source_grid_exact: 0.0,
            compress_seconds: 0.0,
        }],
        other_points,
        kv_points: opts.kv_points.clone(),
        out_dir: out_dir.to_path_buf(),
        shard,
    };
    let mut exact: Option<crate::llama::Llama> = None;
    for (label, o, kind, kv) in &options {
        if let (Some(policy), Reference::Lm { run, windows }) = (kv, &reference) {
            if exact.is_none() {
                exact = Some(crate::load_llama(model, None)?.1);
            }
            let m = exact.as_ref().expect("loaded");
            let sim = crate::kvsim::KvSim::new(policy.clone(), m.cfg.n_kv_head, m.cfg.head_dim());
            let with = m.with_kv_filter(sim.filter());
            let lm = lm_figures(&with, run, windows, opts, label, on_step, cx)?;
            let bits = sim.bits_per_value();
            f.rows.push(FrontierRow {
                label: label.clone(),
                kind: kind.to_string(),
                file_bytes: 0,
                bits_per_weight: bits,
                ratio_vs_fp32: if bits > 0.0 { 32.0 / bits } else { 0.0 },
                lm: Some(lm),
                embed: None,
                source_grid_exact: 0.0,
                compress_seconds: 0.0,
            });
            write_outputs(&f, cx)?;
            continue;
        }
        let file = tpk_dir.join(format!("{}.tpk", sanitize(label)));
        let t0 = std::time::Instant::now();
        let report = compress(model, &file, o, &cx.quiet())
            .map_err(|e| Error::new(e.kind, format!("variant '{label}': {e}")))?;
        let compress_seconds = t0.elapsed().as_secs_f64();
        let on_grid: Vec<_> = report
            .tensors
            .iter()
            .filter(|t| t.source_dtype.starts_with('Q') || t.source_dtype.starts_with("IQ"))
            .collect();
        let exact = on_grid.iter().filter(|t| t.metrics.max_abs == 0.0).count();
        let (lm, embed) = match &reference {
            Reference::Lm { run, windows } => {
                let (_, m, _) = crate::load_llama(&file, None)?;
                (
                    Some(lm_figures(&m, run, windows, opts, label, on_step, cx)?),
                    None,
                )
            }
            Reference::Embed { texts, embeddings } => {
                let (_, m) = crate::embed::load_bert(&file, None, 256)?;
                let n = texts.len();
                let e = crate::embed::embed_all(&m, texts, &|d| on_step(label, d, n), cx)?;
                (None, Some(crate::embed::compare(&e, embeddings)))
            }
        };
        f.rows.push(FrontierRow {
            label: label.clone(),
            kind: kind.to_string(),
            file_bytes: report.file_bytes,
            bits_per_weight: bpw(report.file_bytes),
            ratio_vs_fp32: parameters as f64 * 4.0 / report.file_bytes as f64,
            lm,
            embed,
            source_grid_exact: if on_grid.is_empty() {
                0.0
            } else {
                exact as f64 / on_grid.len() as f64
            },
            compress_seconds,
        });
        if !opts.keep_tpk {
            let _ = std::fs::remove_file(&file);
        }
        write_outputs(&f, cx)?;
    }
    if !opts.keep_tpk {
        let _ = std::fs::remove_dir(&tpk_dir);
    }
    Ok(f)
}

/// Join the `frontier.json` of each part folder of a sharded sweep (`--shard K/N`) into one
/// frontier in `out_dir`, the variants in their order, and write its CSV, JSON and figures. The
/// parts must be of one sweep (same model, windows, reference figures) and all there, once.
pub fn merge(parts: &[PathBuf], out_dir: &Path, cx: &Context<'_>) -> Result<Frontier> {
    let mut read = Vec::new();
    for dir in parts {
        let path = dir.join("frontier.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::io("read", e).with_file(&path))?;
        let f: Frontier = serde_json::from_str(&text).map_err(|e| {
            Error::input(format!("not a sweep's frontier.json: {e}")).with_file(&path)
        })?;
        let Some(part) = f.shard.clone() else {
            return Err(
                Error::input("not a part of a sharded sweep (eval sweep --shard K/N)")
                    .with_file(&path),
            );
        };
        if part.places.len() + 1 != f.rows.len() {
            return Err(Error::input(format!(
                "{} variant rows for {} places: an unfinished part",
                f.rows.len().saturating_sub(1),
                part.places.len()
            ))
            .with_file(&path));
        }
        read.push((path, f, part));
    }
    let Some((_, first, p0)) = read.first() else {
        return Err(Error::config("no part folders to merge"));
    };
    let (n, total) = (p0.parts, p0.variants);
    let same = |a: &Frontier, b: &Frontier| {
        a.model == b.model
            && a.family == b.family
            && a.parameters == b.parameters
            && a.windows == b.windows
            && a.kld_windows == b.kld_windows
            && a.sentences == b.sentences
            && serde_json::to_value(&a.rows[0]).ok() == serde_json::to_value(&b.rows[0]).ok()
    };
    let mut seen = vec![false; n];
    let mut slots: Vec<Option<FrontierRow>> = vec![None; total];
    for (path, f, part) in &read {
        if part.parts != n || part.variants != total || !same(first, f) {
            return Err(Error::input(
                "a part of another sweep (model, windows, reference or part count differ)",
            )
            .with_file(path));
        }
        if part.part == 0 || part.part > n || std::mem::replace(&mut seen[part.part - 1], true) {
            return Err(Error::input(format!(
                "part {} of {n} given twice or out of range",
                part.part
            ))
            .with_file(path));
        }
        for (row, &place) in f.rows[1..].iter().zip(&part.places) {
            match slots.get_mut(place) {
                Some(slot @ None) => *slot = Some(row.clone()),
                _ => {
                    return Err(Error::input(format!(
                        "variant place {place} taken twice or past {total}"
                    ))
                    .with_file(path))
                }
            }
        }
    }
    let missing: Vec<String> = (1..=n)
        .filter(|k| !seen[k - 1])
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() || slots.iter().any(Option::is_none) {
        return Err(Error::input(format!(
            "part(s) {} of {n} missing",
            missing.join(", ")
        )));
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::io("create the output folder", e).with_file(out_dir))?;
    let mut f = first.clone();
    f.rows.truncate(1);
    f.rows.extend(slots.into_iter().flatten());
    f.out_dir = out_dir.to_path_buf();
    f.shard = None;
    write_outputs(&f, cx)?;
    Ok(f)
}

/// Evaluate `m` against a cached reference run and keep the row's figures.
fn lm_figures(
    m: &crate::llama::Llama,
    run: &ppl::ReferenceRun,
    windows: &[Vec<u32>],
    opts: &SweepOptions,
    label: &str,
    on_step: OnStep,
    cx: &Context<'_>,
) -> Result<LmFigures> {
    let n = windows.len();
    let r = ppl::evaluate(
        m,
        Some(RefSource::Cached(run)),
        windows,
        &opts.ppl,
        &mut |w, _| on_step(label, w, n),
        cx,
    )?;
    let c = r.comparison.expect("a reference was given");
    Ok(LmFigures {
        ppl: r.perplexity.ppl,
        ppl_second_half: r.perplexity.ppl_second_half,
        delta_ppl_pct: c.delta_ppl_pct,
        delta_ppl_se_pct: c.delta_ppl_se_pct,
        kld: c.kld,
        top1_agree_pct: c.top1_agree_pct,
    })
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_outputs(f: &Frontier, cx: &Context<'_>) -> Result<()> {
    let lm = f.family == "llama";
    let mut csv = String::from("label,kind,file_bytes,bits_per_weight,ratio_vs_fp32,");
    csv.push_str(if lm {
        "ppl,ppl_second_half,delta_ppl_pct,delta_ppl_se_pct,kld,top1_agree_pct"
    } else {
        "sentences,mean_cos,p1_cos,min_cos,nn_agree_pct"
    });
    csv.push_str(",source_grid_exact,compress_seconds\n");
    for r in &f.rows {
        csv.push_str(&format!(
            "{},{},{},{:.4},{:.4},",
            tenpak::analyze::csv_field(&r.label),
            r.kind,
            r.file_bytes,
            r.bits_per_weight,
            r.ratio_vs_fp32
        ));
        if let Some(l) = &r.lm {
            csv.push_str(&format!(
                "{:.4},{:.4},{:.4},{:.4},{:.6},{:.3}",
                l.ppl,
                l.ppl_second_half,
                l.delta_ppl_pct,
                l.delta_ppl_se_pct,
                l.kld,
                l.top1_agree_pct
            ));
        }
        if let Some(e) = &r.embed {
            csv.push_str(&format!(
                "{},{:.6},{:.6},{:.6},{:.2}",
                e.sentences, e.mean_cos, e.p1_cos, e.min_cos, e.nn_agree_pct
            ));
        }
        csv.push_str(&format!(
            ",{:.3},{:.2}\n",
            r.source_grid_exact, r.compress_seconds
        ));
    }
    tenpak::atomic::write(&f.out_dir.join("frontier.csv"), csv.as_bytes())?;
    let js = serde_json::to_string_pretty(f).expect("json") + "\n";
    tenpak::atomic::write(&f.out_dir.join("frontier.json"), js.as_bytes())?;
    // y: KLD for causal LMs, 1 - mean cosine for encoders; both on a log axis.
    let y = |r: &FrontierRow| match (&r.lm, &r.embed) {
        (Some(l), _) => l.kld,
        (_, Some(e)) => 1.0 - e.mean_cos,
        _ => f64::NAN,
    };
    let ours: Vec<(String, f64, f64)> = f
        .rows
        .iter()
        .filter(|r| r.kind != "reference" && r.kind != "kv")
        .map(|r| {
            let mark = if r.source_grid_exact >= 0.5 {
                " (source grid)"
            } else {
                ""
            };
            (format!("{}{mark}", r.label), r.bits_per_weight, y(r))
        })
        .collect();
    let others: Vec<(String, f64, f64)> = f
        .other_points
        .iter()
        .map(|p| (p.label.clone(), p.bits_per_weight, p.kld))
        .collect();
    let (title, ylab) = if lm {
        (
            format!(
                "{}: size vs quality ({} windows, KLD over {})",
                f.model, f.windows, f.kld_windows
            ),
            "KLD vs the uncompressed model (log scale)",
        )
    } else {
        (
            format!(
                "{}: size vs embedding drift ({} sentences)",
                f.model, f.sentences
            ),
            "1 - mean cosine vs the uncompressed model (log scale)",
        )
    };
    if f.rows.iter().any(|r| r.kind == "kv") {
        let kv: Vec<(String, f64, f64)> = f
            .rows
            .iter()
            .filter(|r| r.kind == "kv")
            .map(|r| (r.label.clone(), r.bits_per_weight, y(r)))
            .collect();
        let kv_others: Vec<(String, f64, f64)> = f
            .kv_points
            .iter()
            .map(|p| (p.label.clone(), p.bits_per_weight, p.kld))
            .collect();
        cx.figures().draw(
            &f.out_dir.join("kv_frontier.png"),
            &Figure::Frontier {
                title: &format!(
                    "{}: KV cache bits per value vs quality ({} windows, KLD over {})",
                    f.model, f.windows, f.kld_windows
                ),
                x_desc: "bits per cached value (scales, outliers and kept tokens included)",
                y_desc: "KLD vs the same model with an exact cache (log scale)",
                ours: &kv,
                others: &kv_others,
            },
        )?;
    }
    if ours.is_empty() {
        return Ok(());
    }
    cx.figures().draw(
        &f.out_dir.join("frontier.png"),
        &Figure::Frontier {
            title: &title,
            x_desc: "bits per weight (file size)",
            y_desc: ylab,
            ours: &ours,
            others: &others,
        },
    )
}
