//! `tenpak eval ...`: model-quality evaluation.

use super::json;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use tenpak::{Context, Error};
use tenpak_eval::ppl::PplOptions;

#[derive(Subcommand)]
pub(super) enum EvalCommand {
    /// Perplexity of a causal LM (llama) on the evaluation corpus; with --reference also the
    /// paired ΔPPL and its standard error, KL divergence and top-1 agreement.
    #[command(
        after_help = "Examples:\n  tenpak eval ppl model.gguf\n  tenpak eval ppl m.tpk --reference model.gguf --json\n  tenpak eval ppl model.gguf --kv kivi:bits=4 --kv-lossless-first-n 2"
    )]
    Ppl(PplArgs),
    /// The size–quality frontier: compress MODEL with each codec or config into real .tpk
    /// files, evaluate each against MODEL; writes frontier.csv, frontier.json, frontier.png.
    #[command(
        after_help = "Examples:\n  tenpak eval sweep model.gguf --codecs bfp8,int4_g32,nvfp4 -o sweep/\n  tenpak eval sweep model.gguf --configs compression_configs/ --keep-tpk"
    )]
    Sweep(SweepArgs),
    /// Join the part folders of `eval sweep --shard K/N` into one frontier (CSV, JSON, figures),
    /// the variants in the order the sweep was given them.
    #[command(
        after_help = "Examples:\n  tenpak eval sweep-merge part1 part2 part3 part4 -o sweep/\n  for k in 1 2 3 4; do tenpak eval sweep model.gguf --codecs bfp8,int4_g32,nvfp4,nf4 --shard $k/4 -o part$k & done; wait"
    )]
    SweepMerge(SweepMergeArgs),
    /// Sentence-embedding drift of a BERT-family encoder against its reference: cosine of each
    /// sentence's two embeddings (mean, 1st percentile, minimum) and nearest-neighbour agreement.
    #[command(
        after_help = "Examples:\n  tenpak eval embed m.tpk --reference models/minilm\n  tenpak eval embed m.tpk --reference models/minilm --lines 500 --json"
    )]
    Embed(EmbedArgs),
}

#[derive(Args)]
pub(super) struct EmbedArgs {
    /// The model: a Hugging Face folder or safetensors file, or a .tpk made from one.
    model: PathBuf,
    /// The model to compare against.
    #[arg(long, value_name = "REF")]
    reference: PathBuf,
    /// Base model of a delta .tpk.
    #[arg(long, value_name = "BASE")]
    base: Option<PathBuf>,
    /// Corpus text (built by scripts/fetch-corpus.sh; under $TENPAK_MODELS when that is set).
    #[arg(long, value_name = "FILE", default_value_os_t = tenpak_eval::default_corpus())]
    corpus: PathBuf,
    /// Sentences to embed: the first N of the corpus (split after . ! ? + space, >= 5 words).
    #[arg(long, default_value_t = 2000)]
    lines: usize,
    /// Truncation in word pieces ([CLS] and [SEP] included).
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct SweepArgs {
    /// The uncompressed model (GGUF or Hugging Face folder); also the reference.
    model: PathBuf,
    /// Codec specs, comma-separated (bf16,bfp8,int:bits=4,group=64,int4_g32): a piece of the
    /// form key=value continues the spec before it. A spec may end in per-tensor overrides,
    /// `;FILTER=SPEC` (int4_g32_asym;token_embd.weight=int8). Repeatable.
    #[arg(long, value_name = "LIST")]
    codecs: Vec<String>,
    /// KV-cache policies, ';'-separated (kivi:bits=4,group=64;quant:bits=8) or policy files
    /// (*.json): the uncompressed model with its cache read through each (as eval ppl --kv);
    /// their rows' bits_per_weight is bits per cached value, plotted in kv_frontier.png.
    /// Repeatable.
    #[arg(long, value_name = "LIST")]
    kv_policies: Vec<String>,
    /// Other tools' KV-cache points for kv_frontier.png: CSV label,bits_per_value,kld[,delta_ppl_pct].
    #[arg(long, value_name = "CSV")]
    kv_reference_points: Option<PathBuf>,
    /// A folder of compression configs (every *.json in it, in name order), or one config.
    #[arg(long, value_name = "DIR")]
    configs: Option<PathBuf>,
    /// Output folder.
    #[arg(long, short, value_name = "DIR", default_value = "sweep")]
    out: PathBuf,
    /// Other tools' points for the plot: CSV label,bits_per_weight,kld[,delta_ppl_pct].
    #[arg(long, value_name = "CSV")]
    reference_points: Option<PathBuf>,
    #[command(flatten)]
    w: WindowArgs,
    /// Sentences to embed, for encoders (as eval embed --lines).
    #[arg(long, default_value_t = 2000)]
    lines: usize,
    /// Keep the .tpk files (under OUT/tpk).
    #[arg(long)]
    keep_tpk: bool,
    /// Run only part K of N of the variants (every N-th from the K-th; each part evaluates the
    /// reference itself); `tenpak eval sweep-merge` joins the parts' folders.
    #[arg(long, value_name = "K/N", value_parser = super::parse_shard)]
    shard: Option<(usize, usize)>,
    /// Print the frontier as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct SweepMergeArgs {
    /// The part folders of `eval sweep --shard K/N` (each with its frontier.json), any order.
    #[arg(required = true)]
    parts: Vec<PathBuf>,
    /// Output folder for the joined frontier.csv, frontier.json and figures.
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// Print the frontier as JSON.
    #[arg(long)]
    json: bool,
}

/// The evaluation windows, shared by `eval ppl` and `eval sweep`.
#[derive(Args)]
pub(super) struct WindowArgs {
    /// Corpus text (built by scripts/fetch-corpus.sh; under $TENPAK_MODELS when that is set).
    #[arg(long, value_name = "FILE", default_value_os_t = tenpak_eval::default_corpus())]
    corpus: PathBuf,
    /// Window length, BOS included.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Windows, from the start of the corpus.
    #[arg(long, default_value_t = 64)]
    windows: usize,
    /// Windows (from the first) that KLD and top-1 agreement cover.
    #[arg(long, default_value_t = 32)]
    kld_windows: usize,
}

impl WindowArgs {
    fn opts(&self) -> PplOptions {
        PplOptions {
            ctx: self.ctx,
            windows: self.windows,
            kld_windows: self.kld_windows.min(self.windows),
        }
    }
}

#[derive(Subcommand)]
pub(super) enum KvCommand {
    /// Run a causal LM over the evaluation windows and write every layer's keys (after RoPE)
    /// and values in the reference dump layout: <OUT>/<run_id>/layer_<i>/{k,v}_t<s>_<e>.bin and
    /// meta_t<s>_<e>.json, [seq_len, kv_heads, head_dim]. One run per window.
    #[command(
        after_help = "Examples:\n  tenpak kv capture model.gguf -o dumps/ --windows 2 --ctx 256"
    )]
    Capture(CaptureArgs),
    /// Compress a dump folder into one .tpk: layers < N lossless (--lossless, default
    /// gear-auto), the others with --lossy; chunked by (layer, K/V, token range).
    #[command(
        after_help = "Examples:\n  tenpak kv compress dumps/ -o kv.tpk\n  tenpak kv compress dumps/ -o kv.tpk --lossless-first-n 2 --lossy kivi --bits 4"
    )]
    Compress(super::kv::CompressArgs),
    /// Restore the dump folder from a .tpk of `kv compress`: meta files and lossless layers
    /// bit-exact, lossy layers decoded to the dump's dtype.
    #[command(after_help = "Examples:\n  tenpak kv decompress kv.tpk -o restored/")]
    Decompress(super::kv::DecompressArgs),
    /// The KV reference's reports from a real .tpk: mixed_layer_metrics.csv,
    /// lossy_error_metrics.csv, mixed_summary.md (+ blocknorm_metrics.csv), summary.json.
    #[command(after_help = "Examples:\n  tenpak kv analyze dumps/ -o kv-report/")]
    Analyze(super::kv::AnalyzeArgs),
    /// The reference's block-norm grid plus quant, truncate and KIVI with real codes:
    /// kv_sweep.csv, blocknorm_sweep.csv, blocknorm_best.md, kv_best.md, pareto.csv/.png.
    #[command(after_help = "Examples:\n  tenpak kv sweep dumps/ -o kv-sweep/")]
    Sweep(super::kv::SweepArgs),
}

#[derive(Args)]
pub(super) struct CaptureArgs {
    /// The model: a GGUF file, a Hugging Face folder, or a .tpk made from either.
    model: PathBuf,
    /// Dump root folder (created if missing).
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
    /// Base model of a delta .tpk.
    #[arg(long, value_name = "BASE")]
    base: Option<PathBuf>,
    /// Corpus text (built by scripts/fetch-corpus.sh; under $TENPAK_MODELS when that is set).
    #[arg(long, value_name = "FILE", default_value_os_t = tenpak_eval::default_corpus())]
    corpus: PathBuf,
    /// Window length, BOS included (the prefill dump's seq_len).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Windows to capture, from the start of the corpus.
    #[arg(long, default_value_t = 4)]
    windows: usize,
    /// One-token decode-stage dumps after each prefill (greedy decoding).
    #[arg(long, default_value_t = 0)]
    decode_steps: usize,
    /// Element type of the dump files: fp32 or fp16.
    #[arg(long, default_value = "fp32")]
    dtype: String,
    /// Run ids are <PREFIX>w<NNN>.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    run_prefix: String,
    /// Replace runs that exist.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct CalibrateArgs {
    /// The model: a GGUF file, a Hugging Face folder, or a .tpk made from either.
    model: PathBuf,
    /// Output statistics file (safetensors).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Corpus text (under $TENPAK_MODELS when that is set); calibration reads the tokens after
    /// the evaluation slice's 64 x 511.
    #[arg(long, value_name = "FILE", default_value_os_t = tenpak_eval::default_corpus())]
    corpus: PathBuf,
    /// Calibration windows (encoders: sentences, after the 2000 `eval embed` reads).
    #[arg(long, default_value_t = 64)]
    windows: usize,
    /// Window length, BOS included.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Keep only the per-channel mean squares, not the second moments (a far smaller file;
    /// GPTQ needs the second moments).
    #[arg(long)]
    no_hessian: bool,
    /// Replace the output if it exists.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn calibrate(
    a: &CalibrateArgs,
    quiet: bool,
    cx: &Context<'_>,
    out: &mut Vec<u8>,
) -> Result<i32, Error> {
    let req = tenpak_eval::calibrate::CalibrateRequest {
        model: a.model.clone(),
        corpus: a.corpus.clone(),
        windows: a.windows,
        ctx: a.ctx,
        hessian: !a.no_hessian,
        output: a.output.clone(),
        force: a.force,
    };
    let bar = window_bar(quiet, a.windows);
    let mut on_window = |done: usize| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    };
    let r = tenpak_eval::calibrate::calibrate(&req, &mut on_window, cx)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if a.json {
        json(out, &r);
    } else {
        let s = &r.info.slice;
        let _ = writeln!(
            out,
            "{}: {} inputs ({} weights) from {} {} (corpus {} {}.., disjoint from {}), {}; {} bytes in {} ({:.1} s)",
            r.info.model,
            r.inputs,
            r.info.inputs.len(),
            s.windows,
            if s.unit == "tokens" {
                format!("windows of {} tokens", s.ctx)
            } else {
                "sentences".to_string()
            },
            s.unit,
            s.first_token,
            s.disjoint_from,
            if r.info.hessian { "E[x²] and E[x xᵀ]" } else { "E[x²] only" },
            r.file_bytes,
            r.output.display(),
            r.seconds
        );
    }
    Ok(0)
}

#[derive(Args)]
pub(super) struct SensitivityArgs {
    /// The model: a GGUF file or a Hugging Face folder.
    model: PathBuf,
    /// Output JSON file.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Corpus text; the windows are the tokens after the evaluation slice's 64 x 511.
    #[arg(long, value_name = "FILE", default_value_os_t = tenpak_eval::default_corpus())]
    corpus: PathBuf,
    /// Calibration windows (encoders: sentences).
    #[arg(long, default_value_t = 4)]
    windows: usize,
    /// Window length, BOS included.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Relative squared error of the injected noise.
    #[arg(long, default_value_t = tenpak_eval::sensitivity::DEFAULT_NOISE)]
    noise: f64,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only matrices matching (a query with a dot is a module prefix, otherwise a substring).
    #[arg(long)]
    filter: Option<String>,
    /// Also inject these codecs' real errors, one tensor at a time (comma-separated; key=value
    /// pieces continue the spec before them). Repeatable.
    #[arg(long, value_name = "LIST")]
    codecs: Vec<String>,
    /// Replace the output if it exists.
    #[arg(long)]
    force: bool,
    /// Print the result as JSON (it is written to --output either way).
    #[arg(long)]
    json: bool,
}

pub(super) fn sensitivity(
    a: &SensitivityArgs,
    quiet: bool,
    cx: &Context<'_>,
    out: &mut Vec<u8>,
) -> Result<i32, Error> {
    if a.output.exists() && !a.force {
        return Err(
            Error::config("the output exists (use --force to replace it)").with_file(&a.output),
        );
    }
    let req = tenpak_eval::sensitivity::SensitivityRequest {
        model: a.model.clone(),
        corpus: a.corpus.clone(),
        windows: a.windows,
        ctx: a.ctx,
        noise: a.noise,
        seed: a.seed,
        filter: a.filter.clone(),
        codecs: a.codecs.iter().flat_map(|l| split_specs(l)).collect(),
    };
    let bar = window_bar(quiet, 0).inspect(|b| {
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} tensors, eta {eta} {wide_msg}")
                .unwrap(),
        )
    });
    let mut on_tensor = |done: usize, total: usize, name: &str| {
        if let Some(b) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
            b.set_message(name.to_string());
        }
    };
    let r = tenpak_eval::sensitivity::sensitivity(&req, &mut on_tensor, cx)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    tenpak::atomic::write(
        &a.output,
        (serde_json::to_string_pretty(&r).expect("plain data") + "\n").as_bytes(),
    )?;
    if a.json {
        json(out, &r);
    } else {
        let mut by: Vec<&tenpak::allocate::TensorSensitivity> = r.tensors.iter().collect();
        by.sort_by(|x, y| y.alpha.total_cmp(&x.alpha));
        let w = by.iter().map(|t| t.name.len()).max().unwrap_or(4).max(6);
        let nll = |d: Option<f64>| d.map_or("-".to_string(), |v| format!("{v:.3e}"));
        let measure = if r.measure == "kld" { "KLD" } else { "1-cos" };
        let _ = writeln!(
            out,
            "{:<w$} {:>10} {:>10} {:>10} {:>10}",
            "tensor", "alpha", "rel err²", measure, "ΔNLL"
        );
        for t in &by {
            let _ = writeln!(
                out,
                "{:<w$} {:>10.4e} {:>10.3e} {:>10.3e} {:>10}",
                t.name,
                t.alpha,
                t.rel_sq,
                t.kld,
                nll(t.delta_nll)
            );
            for c in &t.codecs {
                let _ = writeln!(
                    out,
                    "  {:<w$} {:>10} {:>10.3e} {:>10.3e} {:>10}",
                    c.codec,
                    "",
                    c.rel_sq,
                    c.kld,
                    nll(c.delta_nll)
                );
            }
        }
        let s = &r.slice;
        let _ = writeln!(
            out,
            "{} matrices of {} in {:.1} s; {} {} from corpus {} {} (disjoint from {}); wrote {}",
            r.tensors.len(),
            r.model,
            r.seconds,
            s.windows,
            if s.unit == "tokens" {
                format!("windows of {} tokens", s.ctx)
            } else {
                "sentences".to_string()
            },
            s.unit,
            s.first_token,
            s.disjoint_from,
            a.output.display()
        );
    }
    Ok(0)
}

#[derive(Args)]
pub(super) struct PplArgs {
    /// The model: a GGUF file, a Hugging Face folder, or a .tpk made from either.
    model: PathBuf,
    /// The model to compare against (same tokenizer).
    #[arg(long, value_name = "REF")]
    reference: Option<PathBuf>,
    /// Base model of a delta .tpk.
    #[arg(long, value_name = "BASE")]
    base: Option<PathBuf>,
    #[command(flatten)]
    w: WindowArgs,
    /// Read every layer's KV cache through this KV method (as `kv compress --lossy`, e.g.
    /// kivi:bits=4, quant:bits=8): keys after RoPE and values are stored as f16, encoded,
    /// decoded, then attended to. Compared against the same model with an exact cache.
    #[arg(long, value_name = "METHOD")]
    kv: Option<String>,
    /// With --kv: layers < N keep an exact f16 cache.
    #[arg(long, default_value_t = 0, value_name = "N")]
    kv_lossless_first_n: u32,
    /// With --kv: a KV policy file (as `kv compress --policy`).
    #[arg(long, value_name = "FILE")]
    kv_policy: Option<PathBuf>,
    /// With --kv: the first N tokens of each window keep an exact cache (attention sinks).
    #[arg(long, default_value_t = 0, value_name = "N")]
    kv_sink_tokens: u64,
    /// With --kv: the last N tokens of each window keep an exact cache.
    #[arg(long, default_value_t = 0, value_name = "N")]
    kv_recent_tokens: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write ppl.json and per_window.csv into this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn window_bar(quiet: bool, windows: usize) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(windows as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} windows, eta {eta} {wide_msg}").unwrap(),
    );
    Some(pb)
}

pub(super) fn run_kv(
    cmd: &KvCommand,
    quiet: bool,
    cx: &Context<'_>,
    out: &mut Vec<u8>,
) -> Result<i32, Error> {
    match cmd {
        KvCommand::Compress(a) => super::kv::compress(a, cx, out),
        KvCommand::Decompress(a) => super::kv::decompress(a, cx, out),
        KvCommand::Analyze(a) => super::kv::analyze(a, cx, out),
        KvCommand::Sweep(a) => super::kv::sweep(a, cx, out),
        KvCommand::Capture(a) => {
            let dtype = match a.dtype.as_str() {
                "fp32" | "f32" => tenpak_eval::capture::DumpDType::Fp32,
                "fp16" | "f16" => tenpak_eval::capture::DumpDType::Fp16,
                d => return Err(Error::config(format!("--dtype '{d}': fp32 or fp16"))),
            };
            let opts = tenpak_eval::capture::CaptureOptions {
                root: a.out.clone(),
                run_prefix: a.run_prefix.clone(),
                windows: PplOptions {
                    ctx: a.ctx,
                    windows: a.windows,
                    kld_windows: 0,
                },
                decode_steps: a.decode_steps,
                dtype,
                force: a.force,
            };
            let bar = window_bar(quiet, a.windows);
            let start = std::time::Instant::now();
            let mut on_window = progress_fn(&bar, start);
            let r = tenpak_eval::capture::capture(
                &a.model,
                a.base.as_deref(),
                &a.corpus,
                &opts,
                &mut on_window,
                cx,
            )?;
            drop(on_window);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if a.json {
                json(out, &r);
            } else {
                let _ = writeln!(
                    out,
                    "{}: {} runs x {} layers ({} kv heads x {}), {} dumps, {} bytes of {} in {}",
                    r.model,
                    r.runs.len(),
                    r.layers,
                    r.kv_heads,
                    r.head_dim,
                    r.dumps,
                    r.bytes,
                    a.dtype,
                    r.root.display()
                );
            }
            Ok(0)
        }
    }
}

/// The per-window callback: the bar's position and tokens/s. (Ctrl-C is the context's: the
/// evaluation stops at the next window and returns `Interrupted`.)
fn progress_fn(
    bar: &Option<ProgressBar>,
    start: std::time::Instant,
) -> impl FnMut(usize, usize) + Send + '_ {
    move |done: usize, tokens: usize| {
        if let Some(b) = bar {
            b.set_position(done as u64);
            b.set_message(format!(
                "{:.0} tokens/s",
                tokens as f64 / start.elapsed().as_secs_f64().max(1e-9)
            ));
        }
    }
}

pub(super) fn run(
    cmd: &EvalCommand,
    quiet: bool,
    cx: &Context<'_>,
    out: &mut Vec<u8>,
) -> Result<i32, Error> {
    match cmd {
        EvalCommand::Embed(a) => {
            let req = tenpak_eval::embed::EmbedRequest {
                model: a.model.clone(),
                reference: a.reference.clone(),
                base: a.base.clone(),
                corpus: a.corpus.clone(),
                lines: a.lines,
                max_tokens: a.max_tokens,
            };
            let bar = window_bar(quiet, 2 * a.lines).inspect(|b| {
                b.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} embeddings, eta {eta}")
                        .unwrap(),
                )
            });
            let on_done = |_: usize| {
                if let Some(b) = &bar {
                    b.inc(1);
                }
            };
            let r = tenpak_eval::embed::eval_embed(&req, &on_done, cx)?;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            if a.json {
                json(out, &r);
            } else {
                let f = &r.figures;
                let _ = writeln!(out, "model:      {}", r.model);
                let _ = writeln!(out, "reference:  {}", r.reference);
                let _ = writeln!(out, "sentences:  {}", f.sentences);
                let _ = writeln!(
                    out,
                    "cosine:     mean {:.6}, p1 {:.6}, min {:.6}",
                    f.mean_cos, f.p1_cos, f.min_cos
                );
                let _ = writeln!(out, "NN agree:   {:.2}%", f.nn_agree_pct);
                let _ = writeln!(
                    out,
                    "speed:      {:.0} sentences/s ({:.1} s)",
                    r.sentences_per_s, r.seconds
                );
            }
            Ok(0)
        }
        EvalCommand::Sweep(a) => {
            use tenpak_eval::sweep::Variant;
            let mut variants: Vec<Variant> = a
                .codecs
                .iter()
                .flat_map(|list| split_specs(list))
                .map(Variant::Codec)
                .collect();
            if let Some(dir) = &a.configs {
                if dir.is_dir() {
                    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                        .map_err(|e| Error::io("read the configs folder", e).with_file(dir))?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "json"))
                        .collect();
                    files.sort();
                    variants.extend(files.into_iter().map(Variant::Config));
                } else {
                    variants.push(Variant::Config(dir.clone()));
                }
            }
            variants.extend(
                a.kv_policies
                    .iter()
                    .flat_map(|l| l.split(';'))
                    .filter(|x| !x.trim().is_empty())
                    .map(|x| Variant::Kv(x.trim().to_string())),
            );
            let kv_points = match &a.kv_reference_points {
                Some(p) => tenpak_eval::sweep::read_points(p)?,
                None => Vec::new(),
            };
            let others = match &a.reference_points {
                Some(p) => tenpak_eval::sweep::read_points(p)?,
                None => Vec::new(),
            };
            let opts = a.w.opts();
            let bar = window_bar(quiet, a.w.windows).inspect(|b| {
                b.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}").unwrap(),
                )
            });
            let on_step = |label: &str, done: usize, n: usize| {
                if let Some(b) = &bar {
                    if b.length() != Some(n as u64) || done <= 1 {
                        b.set_length(n as u64);
                    }
                    b.set_position(done as u64);
                    b.set_message(label.to_string());
                }
            };
            let sopts = tenpak_eval::sweep::SweepOptions {
                corpus: a.w.corpus.clone(),
                ppl: opts,
                lines: a.lines,
                out_dir: a.out.clone(),
                keep_tpk: a.keep_tpk,
                kv_points,
                shard: a.shard,
            };
            let f = tenpak_eval::sweep::sweep(&a.model, &variants, &sopts, others, &on_step, cx)?;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            print_frontier(out, &f, a.json);
            Ok(0)
        }
        EvalCommand::SweepMerge(a) => {
            let f = tenpak_eval::sweep::merge(&a.parts, &a.out, cx)?;
            print_frontier(out, &f, a.json);
            Ok(0)
        }
        EvalCommand::Ppl(a) => {
            let opts = a.w.opts();
            let req = tenpak_eval::PplRequest {
                model: a.model.clone(),
                reference: a.reference.clone(),
                base: a.base.clone(),
                corpus: a.w.corpus.clone(),
                opts,
                kv: kv_policy(a)?,
            };
            let bar = window_bar(quiet, a.w.windows);
            let start = std::time::Instant::now();
            let mut on_window = progress_fn(&bar, start);
            let r = tenpak_eval::eval_ppl(&req, &mut on_window, cx)?;
            drop(on_window);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if let Some(dir) = &a.out {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io("create the output folder", e).with_file(dir))?;
                let js = serde_json::to_string_pretty(&r).expect("json") + "\n";
                tenpak::atomic::write(&dir.join("ppl.json"), js.as_bytes())?;
                let mut csv = String::from(
                    "window,tokens,mean_nll,tokens_second_half,mean_nll_second_half\n",
                );
                for (i, w) in r.report.per_window.iter().enumerate() {
                    csv.push_str(&format!(
                        "{i},{},{:.9},{},{:.9}\n",
                        w.n,
                        w.sum / w.n as f64,
                        w.n_second,
                        w.sum_second / w.n_second as f64
                    ));
                }
                tenpak::atomic::write(&dir.join("per_window.csv"), csv.as_bytes())?;
            }
            if a.json {
                json(out, &r);
            } else {
                ppl_table(out, &r);
            }
            Ok(0)
        }
    }
}

fn kv_policy(a: &PplArgs) -> Result<Option<tenpak::kv::method::Policy>, Error> {
    if a.kv.is_none() && a.kv_policy.is_none() {
        return Ok(None);
    }
    let mut p = tenpak::kv::method::Policy::new("raw", a.kv_lossless_first_n, a.kv.as_deref())?;
    p.sink_tokens = a.kv_sink_tokens;
    p.recent_tokens = a.kv_recent_tokens;
    if let Some(f) = &a.kv_policy {
        let text =
            std::fs::read_to_string(f).map_err(|e| Error::io("read the policy", e).with_file(f))?;
        p = tenpak::kv::method::Policy::from_json(&text, p).map_err(|e| e.with_file(f))?;
    }
    Ok(Some(p))
}

fn ppl_table(out: &mut Vec<u8>, r: &tenpak_eval::PplResult) {
    let p = &r.report;
    let _ = writeln!(out, "model:      {}", r.model);
    if let Some(rf) = &r.reference {
        let _ = writeln!(out, "reference:  {rf}");
    }
    if let Some(kv) = &r.kv {
        let _ = writeln!(
            out,
            "KV cache:   {} ({:.3} bits per cached value)",
            kv.policy, kv.bits_per_value
        );
    }
    let _ = writeln!(
        out,
        "corpus:     {} ({} tokens; {} windows x {} = {} scored, slice sha256 {}...)",
        r.corpus,
        r.corpus_tokens,
        p.windows,
        p.ctx,
        p.perplexity.tokens,
        &r.slice_sha256[..16]
    );
    let _ = writeln!(
        out,
        "PPL:        {:.4} (2nd half {:.4})",
        p.perplexity.ppl, p.perplexity.ppl_second_half
    );
    if let Some(c) = &p.comparison {
        let _ = writeln!(
            out,
            "reference:  PPL {:.4} (2nd half {:.4})",
            c.reference_perplexity.ppl, c.reference_perplexity.ppl_second_half
        );
        let _ = writeln!(
            out,
            "ΔPPL:       {:+.3}% ± {:.3}% (paired SE over {} windows)",
            c.delta_ppl_pct, c.delta_ppl_se_pct, p.windows
        );
        let _ = writeln!(
            out,
            "KLD:        {:.5} over {} tokens; top-1 agreement {:.2}%",
            c.kld, c.kld_tokens, c.top1_agree_pct
        );
    }
    let _ = writeln!(
        out,
        "speed:      {:.0} tokens/s ({:.1} s; load {:.1} s)",
        p.tokens_per_s, p.seconds, r.load_seconds
    );
}

/// A frontier as JSON, or its table and the files written.
fn print_frontier(out: &mut Vec<u8>, f: &tenpak_eval::sweep::Frontier, as_json: bool) {
    if as_json {
        json(out, f);
        return;
    }
    sweep_table(out, f);
    let wrote: Vec<&str> = [
        "frontier.csv",
        "frontier.json",
        "frontier.png",
        "kv_frontier.png",
    ]
    .into_iter()
    .filter(|n| f.out_dir.join(n).is_file())
    .collect();
    let _ = writeln!(out, "wrote {} in {}", wrote.join(", "), f.out_dir.display());
    if f.rows.iter().any(|r| r.kind == "kv") {
        let _ = writeln!(out, "(kv rows: bpw is bits per cached value)");
    }
    if let Some(p) = &f.shard {
        let _ = writeln!(
            out,
            "part {} of {}: {} of {} variants; join the parts with tenpak eval sweep-merge",
            p.part,
            p.parts,
            p.places.len(),
            p.variants
        );
    }
}

fn sweep_table(out: &mut Vec<u8>, f: &tenpak_eval::sweep::Frontier) {
    let lm = f.family == "llama";
    if lm {
        let _ = writeln!(
            out,
            "{}: {} parameters, {} windows (KLD over {})",
            f.model, f.parameters, f.windows, f.kld_windows
        );
        let _ = writeln!(
            out,
            "{:<40} {:>7} {:>8} {:>9} {:>18} {:>9} {:>7}",
            "variant", "bpw", "ratio", "PPL", "ΔPPL ± SE", "KLD", "top-1"
        );
    } else {
        let _ = writeln!(
            out,
            "{}: {} parameters, {} sentences",
            f.model, f.parameters, f.sentences
        );
        let _ = writeln!(
            out,
            "{:<40} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8}",
            "variant", "bpw", "ratio", "mean cos", "p1 cos", "min cos", "NN agree"
        );
    }
    for r in &f.rows {
        let grid = if r.source_grid_exact >= 0.5 {
            " [source grid]"
        } else {
            ""
        };
        let name = format!("{}{grid}", r.label);
        if let Some(l) = &r.lm {
            let _ = writeln!(
                out,
                "{:<40} {:>7.3} {:>7.2}x {:>9.4} {:>+8.3}% ± {:>6.3}% {:>9.5} {:>6.2}%",
                name,
                r.bits_per_weight,
                r.ratio_vs_fp32,
                l.ppl,
                l.delta_ppl_pct,
                l.delta_ppl_se_pct,
                l.kld,
                l.top1_agree_pct
            );
        }
        if let Some(e) = &r.embed {
            let _ = writeln!(
                out,
                "{:<40} {:>7.3} {:>7.2}x {:>9.6} {:>9.6} {:>9.6} {:>7.2}%",
                name,
                r.bits_per_weight,
                r.ratio_vs_fp32,
                e.mean_cos,
                e.p1_cos,
                e.min_cos,
                e.nn_agree_pct
            );
        }
    }
}

/// Split a comma-separated list of codec specs; `key=value` pieces (no `:` or `;`) are options
/// of the spec before them.
pub(super) fn split_specs(list: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // What comes before a `;` (the overrides) decides: `group=64;token_embd.weight=bfp8`
        // continues the spec before it.
        let head = piece.split(';').next().unwrap_or(piece);
        let option = head.contains('=') && !head.contains(':');
        match out.last_mut() {
            Some(prev) if option => {
                prev.push(',');
                prev.push_str(piece);
            }
            _ => out.push(piece.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn spec_lists() {
        assert_eq!(
            super::split_specs(
                "bf16, int:bits=4,group=64,zero=asym,int4_g32;token_embd.weight=int8"
            ),
            vec![
                "bf16",
                "int:bits=4,group=64,zero=asym",
                "int4_g32;token_embd.weight=int8"
            ]
        );
        assert_eq!(
            super::split_specs("tenpakx:rank=16,group=64;token_embd.weight=bfp8,rot+nvfp4"),
            vec![
                "tenpakx:rank=16,group=64;token_embd.weight=bfp8",
                "rot+nvfp4"
            ]
        );
    }
}
